// ExpenseTracker's own script: progressive enhancement only. Every page works without it.
// Loaded with `defer`, from this origin (the Content-Security-Policy allows nothing else).
"use strict";

(function () {
  const announcer = () => document.getElementById("announcer");

  function announce(message) {
    const region = announcer();
    if (!region) return;
    region.textContent = "";
    // A fresh text node in a second frame is read again even when it repeats.
    window.requestAnimationFrame(() => { region.textContent = message; });
  }

  // What had focus when the quick-add dialog opened (the link that opened it, or what the key
  // "n" was pressed on), and the part of the page it is in.
  let opened = null;

  // The quick-add dialog: the "Add expense" links open it (or the key "n" anywhere but in a
  // field); its form comes from the server, with its own Idempotency-Key each time.
  function openQuickAdd(event) {
    const dialog = document.getElementById("quick-add");
    if (!dialog || !window.htmx || typeof dialog.showModal !== "function") return;
    if (event) event.preventDefault();
    const focused = document.activeElement !== document.body && document.activeElement;
    const opener = (event && event.target.closest("[data-quick-add]")) || focused;
    opened = opener && { opener, part: opener.parentElement.closest("[id]") };
    // On the page that is the form already (/expenses/new): its first field, not a copy of it.
    const onPage = document.getElementById("expense-form");
    if (onPage && !dialog.contains(onPage)) {
      firstFocusable(onPage).focus();
      return;
    }
    window.htmx.ajax("GET", "/expenses/new", { target: "#quick-add-body", swap: "innerHTML" })
      .then(() => {
        const first = firstFocusable(document.getElementById("quick-add-body"));
        if (first) first.focus();
      });
    dialog.showModal();
  }

  // With this script the "Add expense" links open a dialog where they led to a page: they are
  // buttons then, and a button opens with Space as well as Enter.
  document.querySelectorAll("a[data-quick-add]").forEach((link) => link.setAttribute("role", "button"));

  document.addEventListener("click", (event) => {
    const opener = event.target.closest("[data-quick-add]");
    if (opener) { openQuickAdd(event); return; }
    const closer = event.target.closest("[data-dialog-close]");
    if (closer) closer.closest("dialog").close();
  });

  // The closed dialog gives focus back to its opener, unless the add reloaded that away ("Add
  // the first one" on the dashboard, a link in its month): then to the part that took its
  // place, the same part if it stayed, or its reloaded copy (which has its id).
  document.addEventListener("close", (event) => {
    if (event.target.id !== "quick-add" || !opened || opened.opener.isConnected) return;
    const { part } = opened;
    opened = null;
    const now = part && (part.isConnected ? part : document.getElementById(part.id));
    ((now && firstFocusable(now)) || document.getElementById("main")).focus();
  }, true); // "close" does not bubble

  document.addEventListener("keydown", (event) => {
    if (event.key === " " && event.target.closest("a[data-quick-add]")) {
      openQuickAdd(event);
      return;
    }
    // Escape in an expense's inline edit: the row as it was, as its Cancel link gives it. In a
    // delete's question: the question closes, as a dialog would, and focus is back on its opener.
    if (event.key === "Escape") {
      const editing = event.target.closest("tr.editing");
      if (editing) editing.querySelector("[data-cancel]").click();
      const asking = event.target.closest("details.confirm[open]");
      if (asking && !editing) {
        asking.open = false;
        asking.querySelector("summary").focus();
      }
      return;
    }
    if (event.key !== "n" || event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    if (target.closest("input, textarea, select, [contenteditable], dialog[open]")) return;
    openQuickAdd(event);
  });

  // A partial update that replaces the focused element (an expense row edited, saved or
  // deleted, the "More expenses" row, the quick-add form) would leave focus on the page itself,
  // and keyboard users would start again from the top: focus moves to what took its place.
  const FOCUSABLE = "input:not([type=hidden]), select, textarea, button, a[href]";
  const firstFocusable = (element) =>
    element.matches(FOCUSABLE) ? element : element.querySelector(FOCUSABLE);

  let replaced = null; // the swap that is taking the focused element away, until it settles

  function moveFocus(swap) {
    if (!replaced || (swap && swap !== replaced)) return; // a later swap's to settle
    const active = document.activeElement;
    if (active && active !== document.body && active.isConnected) {
      if (swap) replaced = null; // its time is up; another swap's settling is no sign
      return;
    }
    const { target, parent, before, after } = replaced;
    replaced = null;
    // What now stands where the target stood (or the target itself, if only its content was
    // swapped), then its neighbours, then the list around it.
    const first = before ? before.nextElementSibling : parent && parent.firstElementChild;
    const heirs = [target, first, after, before, parent].filter((e) => e && e.isConnected);
    (heirs.map(firstFocusable).find(Boolean) || document.getElementById("main")).focus();
  }

  // A form's submit button is disabled while it is sent (hx-disabled-elt), and focus leaves it
  // for the page itself: whether focus was in what the answer replaces is noted when it is sent.
  document.addEventListener("htmx:beforeRequest", (event) => {
    const { target, requestConfig } = event.detail;
    if (requestConfig && target.contains(document.activeElement)) requestConfig.heldFocus = true;
  });

  document.addEventListener("htmx:beforeSwap", (event) => {
    const target = event.detail.target;
    const config = event.detail.requestConfig;
    const held = config && config.heldFocus && document.activeElement === document.body;
    if (!target.contains(document.activeElement) && !held) return;
    const parent = target.parentElement;
    const swap = { target, parent, before: target.previousElementSibling, after: target.nextElementSibling };
    replaced = swap;
    // A swap that leaves no new element (a deleted row) has no settling to wait for.
    window.setTimeout(() => moveFocus(swap), window.htmx.config.defaultSettleDelay + 100);
  });
  // After the settling, the new content's own hx- attributes work: a key pressed at once on
  // what gets the focus does what it says.
  document.addEventListener("htmx:afterSettle", () => moveFocus(null));
  // A form refused in place (the quick-add, an inline edit) comes back with its problems: focus
  // goes to the first field with one, where the person has to act, not to the form's first.
  document.addEventListener("htmx:afterSettle", (event) => {
    const config = event.detail.requestConfig;
    if (!config || config.verb !== "post" || !(event.target instanceof Element)) return;
    const invalid = event.target.querySelector("[aria-invalid=true]");
    if (!invalid) return;
    replaced = null;
    invalid.focus();
  });

  // Partial updates are announced to screen readers; failures are said, never swallowed.
  document.addEventListener("expense-added", () => announce("Expense added."));
  document.addEventListener("announce", (event) => announce(event.detail.value || ""));
  document.addEventListener("htmx:responseError", (event) => {
    const xhr = event.detail.xhr;
    const id = xhr.getResponseHeader("X-Request-ID");
    announce(`Something went wrong (HTTP ${xhr.status}${id ? `, request ${id}` : ""}). Try again.`);
    if (xhr.status >= 500 || xhr.status === 404) {
      const alert = document.createElement("p");
      alert.className = "alert";
      alert.setAttribute("role", "alert");
      alert.textContent = `Something went wrong on our side${id ? ` (request ${id})` : ""}. Reload the page to try again.`;
      document.getElementById("main").prepend(alert);
    }
  });
  document.addEventListener("htmx:sendError", () => announce("The server could not be reached."));
  // The list reloads to show an expense added in the dialog, unless that would throw away an
  // edit not saved yet.
  document.addEventListener("htmx:beforeRequest", (event) => {
    const list = event.detail.elt;
    if (list.id === "expense-rows" && list.querySelector("tr.editing")) event.preventDefault();
  });
  // A delete that took the list's last row (a "More expenses" row may be left): the list again,
  // from the server, which says it is empty as the page would ("No expenses."), or shows what
  // it holds that this page had not loaded.
  document.addEventListener("expense-deleted", () => {
    const list = document.getElementById("expense-rows");
    if (list && !list.querySelector("tr:not(.more)")) window.htmx.trigger(list, "list-emptied");
  });
  // htmx sends afterSwap from each new element of a swap, as its `elt`: the list is counted
  // once per answer, whatever came (the last page brings no "more" row of its own).
  const counted = new WeakSet();
  document.addEventListener("htmx:afterSwap", (event) => {
    const cause = event.detail.requestConfig && event.detail.requestConfig.triggeringEvent;
    // "Expense added." or "Expense deleted." is the news.
    if (cause && (cause.type === "expense-added" || cause.type === "list-emptied")) return;
    const target = event.detail.target;
    if (target.id !== "expense-rows" && !target.classList.contains("more")) return;
    if (counted.has(event.detail.xhr)) return;
    counted.add(event.detail.xhr);
    const rows = document.querySelectorAll("#expense-rows > tr:not(.more):not(.empty)").length;
    announce(`${rows} expenses shown.`);
  });

  // Charts: drawn by Chart.js from the table next to them, which holds the exact numbers.
  // One dataset per currency: amounts in different currencies are never added.
  const palette = ["#1f5fa8", "#b3541e", "#2f7d32", "#7b3fa0", "#a8324a", "#4a6670"];

  // Small multiples: one chart per currency, each on its own scale.
  function drawChart(figure) {
    if (!window.Chart || figure.dataset.drawn) return;
    const table = document.getElementById(figure.dataset.table);
    if (!table) return;
    const series = [...table.querySelectorAll("thead th[data-series]")].map((th) => th.dataset.series);
    const rows = [...table.querySelectorAll("tbody tr")];
    const sparse = figure.dataset.chart === "bar" && !table.querySelector("tbody th[data-month]");
    figure.dataset.drawn = "true";
    series.forEach((currency, index) => {
      const cells = rows.map((row) => [row, row.querySelectorAll("td[data-value]")[index]]);
      // Categories or tags without spending in this currency are left out of its chart.
      const shown = sparse ? cells.filter(([, cell]) => cell.dataset.value !== "0") : cells;
      if (!shown.length) return;
      const canvas = document.createElement("canvas");
      canvas.setAttribute("role", "img");
      canvas.setAttribute("aria-label", `${figure.querySelector("figcaption").textContent}, ${currency}; the table holds the same numbers.`);
      const holder = document.createElement("div");
      holder.className = "chart-canvas";
      holder.append(canvas);
      figure.querySelector(".chart-canvases").append(holder);
      new window.Chart(canvas, {
        type: figure.dataset.chart,
        data: {
          labels: shown.map(([row]) => row.querySelector("th").dataset.label),
          datasets: [{
            label: currency,
            // Chart coordinates only: the figures people read stay the table's exact decimals.
            data: shown.map(([, cell]) => Number(cell.dataset.value)),
            backgroundColor: palette[index % palette.length],
            borderColor: palette[index % palette.length],
          }],
        },
        options: {
          animation: false,
          maintainAspectRatio: false,
          plugins: { title: { display: true, text: currency } , legend: { display: false } },
          scales: { y: { beginAtZero: true } },
        },
      });
    });
  }

  function drawCharts() { document.querySelectorAll("figure[data-chart]").forEach(drawChart); }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", drawCharts);
  else drawCharts();
  // A part reloaded with a chart in it (the dashboard's trend, after an add): drawn again.
  document.addEventListener("htmx:afterSettle", drawCharts);
})();
