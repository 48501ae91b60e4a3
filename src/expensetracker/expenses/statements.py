"""Bank statements (OFX/QFX, CAMT.053, MT940, QIF) read as rows of the CSV import's columns.

Each reader turns the statement's transactions into the cells of a CSV row (in the order of
``transfer.STATEMENT_COLUMNS``), so that one validator, one batched writer and one transaction
serve every format: the same checks, the whole file or nothing, external ids that make a second
import create nothing.
A row's position is the transaction's number in the file (1 for the first, credits counted).

Money coming in (credits) and zero amounts are not spending: they are counted as skipped and
not imported (a dry run lists the first ones). OFX and CAMT.053 are read as streams in bounded
memory; MT940 and QIF are parsed whole by their libraries, which the import's size limit bounds.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import IO
from xml.etree.ElementTree import Element  # types only: parsing goes through defusedxml

import defusedxml.ElementTree
import mt940
import quiffen
from defusedxml import DefusedXmlException

from expensetracker.expenses.schemas import PREVIEW_ROWS, DateOrder, SkipReason
from expensetracker.expenses.schemas import ImportFormat as Format
from expensetracker.platform.errors import Problem

# Media types that name a format; the ones in SNIFFED_MEDIA_TYPES are looked at instead.
MEDIA_TYPES: dict[str, Format] = {
    "text/csv": "csv",
    "application/x-ofx": "ofx",
    "application/ofx": "ofx",
    "application/vnd.intu.qfx": "ofx",
    "application/x-qfx": "ofx",
    "application/x-mt940": "mt940",
    "text/x-mt940": "mt940",
    "application/qif": "qif",
    "application/x-qif": "qif",
}
# OFX 2 and CAMT.053 are both XML; MT940, QIF and CSV all plain text.
SNIFFED_MEDIA_TYPES = ("application/octet-stream", "text/plain", "application/xml", "text/xml")
SNIFF_BYTES = 4096
DESCRIPTION_LIMIT = 200
MERCHANT_LIMIT = 100
EXTERNAL_ID_LIMIT = 100
# How an MT940 :61: mark signs its amount. The package's defaults (those of its release 5.0)
# negate only a plain D: a reversal of a credit (RC), money leaving the account like a debit,
# came back positive and was skipped as a credit, and so was a debit marked in lower case (d).
_MT940_SIGNS = mt940.Options(reversal_sign=True, case_insensitive_marks=True)
READ_CHARS = 1024 * 1024


# A transaction read: the cells of its CSV row, or why it is not imported.
Transaction = list[str] | SkipReason


class InvalidImport(Problem):
    status = 422
    type_ = "urn:expensetracker:problem:invalid-import"
    title = "Invalid import"


class MissingOption(InvalidImport):
    """A file refused for want of an option. ``reason`` names it ``{option}``: the API's detail
    says "the <name> option" (its query parameter), the command line its own ``--name``."""

    def __init__(self, reason: str, *, option: str) -> None:
        super().__init__(reason.format(option=f"the {option} option"))
        self.reason = reason
        self.option = option


def detect(head: bytes) -> Format:
    """The format of a file from its first bytes; CSV when nothing else fits."""
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").decode("latin-1")
    upper = text.upper()
    if upper.startswith("OFXHEADER") or "<OFX>" in upper:
        return "ofx"
    if "CAMT.053" in text or "<BKTOCSTMRSTMT" in upper:
        return "camt053"
    if text.startswith(("!Type:", "!Account", "!Option", "!Clear")):
        return "qif"
    if re.search(r"^:20:", text, re.MULTILINE) and re.search(r"^:61:|^:25:", text, re.MULTILINE):
        return "mt940"
    return "csv"


@dataclass
class Options:
    """What a file may need besides its content: QIF has no currency and an ambiguous date
    order."""

    currency: str | None = None
    date_order: DateOrder | None = None


@dataclass
class Statement:
    """Rows of one statement file; ``skipped`` counts the credits met so far."""

    format: Format
    options: Options = field(default_factory=Options)
    skipped: int = 0
    # A dry run's first skipped transactions, (number, reason); None: an import lists none.
    skips: list[tuple[int, SkipReason]] | None = None
    # QIF, and transactions without a bank id: how often each hash of fields was met, so that
    # two identical purchases on one day are two expenses, and a second import finds both.
    _seen: Counter[str] = field(default_factory=Counter)

    def rows(self, spool: IO[bytes]) -> Iterator[tuple[int, list[str]]]:
        reader = {
            "ofx": self._ofx,
            "camt053": self._camt053,
            "mt940": self._mt940,
            "qif": self._qif,
        }[self.format]
        for position, row in enumerate(reader(spool), start=1):
            if isinstance(row, list):
                yield position, row
                continue
            self.skipped += 1
            if self.skips is not None and len(self.skips) < PREVIEW_ROWS:
                self.skips.append((position, row))

    def _row(
        self,
        *,
        occurred_on: str,
        amount: str,
        currency: str,
        payee: str,
        memo: str,
        account: str,
        bank_id: str,
    ) -> Transaction:
        """The cells of a CSV row for a spending transaction; why not, for one that is not. A
        bank amount that is not a plain decimal number is passed on as it is, for the validator
        to report."""
        if _BANK_AMOUNT.fullmatch(amount := amount.strip()):
            value = Decimal(amount.replace(",", "."))
            if value >= 0:
                return "credit" if value else "zero"
            # Exact: "-1500.00" in JPY is 1500, never rounded.
            amount = format(-value.normalize(), "f")
        payee, memo = " ".join(payee.split()), " ".join(memo.split())
        description = payee or memo
        notes = memo if payee and memo else ""
        if len(description) > DESCRIPTION_LIMIT:
            notes = "\n".join(filter(None, (description, notes)))
            description = description[: DESCRIPTION_LIMIT - 1] + "…"
        if not bank_id:
            # A stable hash of the fields, counted, where the bank gives no id.
            key = "\x1f".join((occurred_on, amount, currency, payee, memo, account))
            self._seen[key] += 1
            bank_id = hashlib.sha256(f"{key}\x1f{self._seen[key]}".encode()).hexdigest()[:32]
        external_id = f"{self.format}:{account}:{bank_id}"
        if len(external_id) > EXTERNAL_ID_LIMIT:
            external_id = f"{self.format}:" + hashlib.sha256(external_id.encode()).hexdigest()
        merchant = payee[:MERCHANT_LIMIT]
        return [occurred_on, amount, currency, description, notes, merchant, "", "", external_id]

    # --- OFX/QFX: SGML (1.x, leaves unclosed) or XML (2.x), read as a stream of tags ----------

    def _ofx(self, spool: IO[bytes]) -> Iterator[Transaction]:
        head = spool.read(SNIFF_BYTES).decode("latin-1").upper()
        spool.seek(0)
        western = re.search(r"CHARSET:\s*(1252|ISO-8859-1)", head) is not None
        text = io.TextIOWrapper(spool, encoding="cp1252" if western else "utf-8", newline="")
        currency = account = ""
        opened = False
        pending = ""
        # Each transaction whole, its leaves in one dict; what lies between transactions (the
        # statement's currency and account) tag by tag. Read in chunks: bounded memory.
        while chunk := text.read(READ_CHARS):
            pending += _ofx_checked(chunk)
            done = 0
            for match in _OFX_TRANSACTION.finditer(pending):
                # Most gaps between transactions are a line break: nothing to look at.
                gap = (
                    _OFX_TAG.findall(pending, done, match.start())
                    if match.start() - done > 2
                    else ()
                )
                for name, value in gap:
                    opened |= name == "OFX"
                    if name == "CURDEF":
                        currency = value.strip()
                    elif name == "ACCTID":
                        account = value.strip()
                done = match.end()
                yield self._ofx_transaction(match.group(1), currency=currency, account=account)
            pending = pending[done:]
        if not opened and "<OFX>" not in pending:
            raise InvalidImport("The file is not an OFX statement: it has no <OFX> element.")
        if "<STMTTRN>" in pending or "</OFX>" not in pending:
            raise InvalidImport("The OFX file ends before its statement does (truncated?).")

    def _ofx_transaction(self, body: str, *, currency: str, account: str) -> Transaction:
        """One <STMTTRN>: NAME or PAYEE's NAME (never both), the CURRENCY aggregate's CURSYM
        when the amount is in another currency than the statement's."""
        if "&" in body:
            body = _xml_unescaped(body)
        leaves = dict(_OFX_TAG.findall(body))
        if "<CURRENCY>" in body:
            found = _OFX_CURRENCY.search(body)
            currency = found.group(1) if found else ""
        return self._row(
            occurred_on=_ofx_date(leaves.get("DTPOSTED", "").strip()),
            amount=leaves.get("TRNAMT", ""),
            currency=currency.strip(),
            payee=leaves.get("NAME", ""),
            memo=leaves.get("MEMO", ""),
            account=account,
            bank_id=leaves.get("FITID", "").strip(),
        )

    # --- CAMT.053: ISO 20022 XML, streamed, with DTDs and entities refused --------------------

    def _camt053(self, spool: IO[bytes]) -> Iterator[Transaction]:
        account = ""
        statement = None
        try:
            events = defusedxml.ElementTree.iterparse(
                spool, events=("start", "end"), forbid_dtd=True
            )
            for event, element in events:
                name = element.tag.rpartition("}")[2]
                if event == "start":
                    if name == "Stmt":
                        statement = element
                    continue
                if name == "Acct":
                    account = _text(element, "Id/IBAN") or _text(element, "Id/Othr/Id")
                elif name == "Ntry":
                    transaction = self._camt_entry(element, account=account)
                    if statement is not None:
                        statement.remove(element)  # bounded memory: the entry is done
                    yield transaction
        except DefusedXmlException:
            raise InvalidImport(
                "The XML file declares a DTD or entities, which are not accepted."
            ) from None
        except defusedxml.ElementTree.ParseError as exc:
            raise InvalidImport(f"The file is not well-formed XML ({exc}).") from None

    def _camt_entry(self, entry: Element, *, account: str) -> Transaction:
        amount = _text(entry, "Amt")
        if _text(entry, "CdtDbtInd") == "DBIT":
            amount = "-" + amount
        # The other party: who was paid for a debit, who paid for a credit.
        party = "Cdtr" if amount.startswith("-") else "Dbtr"
        payee = _text(entry, f"NtryDtls/TxDtls/RltdPties/{party}/Nm") or _text(
            entry, f"NtryDtls/TxDtls/RltdPties/{party}/Pty/Nm"
        )
        memo = " ".join(
            text
            for text in (
                _text(entry, "NtryDtls/TxDtls/RmtInf/Ustrd"),
                _text(entry, "AddtlNtryInf"),
            )
            if text
        )
        found = _find(entry, "Amt")
        return self._row(
            occurred_on=_text(entry, "BookgDt/Dt") or _text(entry, "BookgDt/DtTm")[:10],
            amount=amount,
            currency=found.get("Ccy", "") if found is not None else "",
            payee=payee,
            memo=memo,
            account=account,
            bank_id=_text(entry, "AcctSvcrRef") or _text(entry, "NtryRef"),
        )

    # --- MT940 (SWIFT), by the mt-940 package ----------------------------------------------

    def _mt940(self, spool: IO[bytes]) -> Iterator[Transaction]:
        text = _utf8(spool.read())
        last_entry = max(text.rfind("\n:61:"), text.rfind(":61:", 0, 4))
        if max(text.rfind(":62F:"), text.rfind(":62M:")) < last_entry or ":20:" not in text:
            raise InvalidImport(
                "The MT940 file ends without a closing balance (:62F:) after its last "
                "transaction (truncated?)."
            )
        try:
            transactions = mt940.parse(text, options=_MT940_SIGNS)
            account = str(transactions.data.get("account_identification") or "")
        except Exception as exc:  # the package raises what it meets: one answer for all
            raise InvalidImport(
                f"The file is not a valid MT940 statement ({_unreadable(exc)})."
            ) from None
        for transaction in transactions:
            data = transaction.data
            amount = data.get("amount")
            # A structured :86: (?20 purpose, ?32 name: German banks' layout) is split by the
            # package; any other is its whole text.
            details = str(data.get("purpose") or data.get("transaction_details") or "")
            yield self._row(
                occurred_on=str(data.get("date", "")),
                amount=str(amount.amount) if amount is not None else "",
                currency=str(data.get("currency") or getattr(amount, "currency", "")),
                payee=str(data.get("applicant_name") or ""),
                memo=details,
                account=account,
                bank_id=str(data.get("bank_reference") or ""),
            )

    # --- QIF (Quicken), by the quiffen package ------------------------------------------------

    def _qif(self, spool: IO[bytes]) -> Iterator[Transaction]:
        text = _utf8(spool.read()).replace("\r\n", "\n").strip()
        if not text.endswith("^"):
            raise InvalidImport("The QIF file does not end with '^' (truncated?).")
        if not self.options.currency:
            raise MissingOption("A QIF file names no currency: give {option}.", option="currency")
        day_first = qif_day_first(text, self.options.date_order)
        try:
            qif = quiffen.Qif.parse_string(text, day_first=day_first)
        except Exception as exc:  # the package raises what it meets: one answer for all
            raise InvalidImport(f"The file is not a valid QIF file ({_unreadable(exc)}).") from None
        for account in qif.accounts.values():
            for transactions in account.transactions.values():
                for transaction in transactions:
                    yield self._row(
                        occurred_on=transaction.date.date().isoformat(),
                        amount=str(transaction.amount),
                        currency=self.options.currency,
                        payee=transaction.payee or "",
                        memo=transaction.memo or "",
                        account=account.name,
                        bank_id="",
                    )


_XML_ESCAPES = {"&lt;": "<", "&gt;": ">", "&quot;": '"', "&apos;": "'", "&nbsp;": " "}
# A leaf and its text (the closing tags of OFX 2 leaves, with no text, match as "/NAME").
# Digits, a decimal point or comma (many European banks), a sign: nothing Decimal() alone would
# also take (exponents, "NaN", other scripts' digits).
_BANK_AMOUNT = re.compile(r"[+-]?[0-9]{1,15}(?:[.,][0-9]{1,15})?", re.ASCII)
_OFX_TAG = re.compile(r"<([A-Z0-9./]+)>([^<]*)")
_OFX_TRANSACTION = re.compile(r"<STMTTRN>(.*?)</STMTTRN>", re.DOTALL)
_OFX_CURRENCY = re.compile(r"<CURRENCY>(?:[^/]|/(?!CURRENCY))*?<CURSYM>([^<]*)")
_OFX_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_QIF_DATE = re.compile(r"^D\s*(\d{1,2})\s*[/.\-]\s*(\d{1,2})", re.MULTILINE)


def _ofx_checked(text: str) -> str:
    """``text`` without comments; a DTD or an entity declaration is refused (the five XML
    entities are the only ones read: no entity is ever expanded into more text)."""
    if "<!" in text:
        text = _OFX_COMMENT.sub("", text)
        if "<!" in text:
            raise InvalidImport("The OFX file declares a DTD or entities: not accepted.")
    return text


def _xml_unescaped(text: str) -> str:
    for escape, character in _XML_ESCAPES.items():
        text = text.replace(escape, character)
    return text.replace("&amp;", "&")


def _ofx_date(value: str) -> str:
    """OFX's ``YYYYMMDD[HHMMSS[.XXX][[offset:TZ]]]`` as an ISO date; anything else as it is, for
    the validator to report."""
    if len(value) >= 8 and value[:8].isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:8]}"
    return value


def _find(element: Element, path: str) -> Element | None:
    """``path`` below ``element`` whatever the CAMT version's namespace."""
    found = element
    for step in path.split("/"):
        below = next((child for child in found if child.tag.rpartition("}")[2] == step), None)
        if below is None:
            return None
        found = below
    return found


def _text(element: Element, path: str) -> str:
    found = _find(element, path)
    return (found.text or "").strip() if found is not None else ""


def _utf8(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidImport(f"The file is not UTF-8 text ({exc.reason}).") from None


def qif_day_first(text: str, date_order: DateOrder | None) -> bool:
    """Whether QIF dates put the day first: proved by a date whose first or second number is
    above 12, or else given by ``date_order``; a file proving both orders is refused."""
    first_is_day = second_is_day = False
    for first, second in _QIF_DATE.findall(text):
        first_is_day |= int(first) > 12
        second_is_day |= int(second) > 12
    if first_is_day and second_is_day:
        raise InvalidImport("The QIF file's dates mix day-first and month-first orders.")
    proved: DateOrder | None = "dmy" if first_is_day else "mdy" if second_is_day else None
    if proved and date_order and proved != date_order:
        raise InvalidImport(f"The QIF file's dates are {proved}, not {date_order}.")
    order = proved or date_order
    if order is None:
        raise MissingOption(
            "The QIF file's dates could be day-first or month-first: give {option} (dmy or mdy).",
            option="date_order",
        )
    return order == "dmy"


def _unreadable(exc: Exception) -> str:
    """Why a package refused the file, for a person: Decimal's error and mt940's name Python
    objects (``[<class 'decimal.ConversionSyntax'>]``, a tag's repr with its address)."""
    if isinstance(exc, InvalidOperation):
        return "an amount is not a number"
    if isinstance(exc, RuntimeError) and len(exc.args) == 3 and hasattr(exc.args[1], "id"):
        return f"its :{exc.args[1].id}: field cannot be read"
    return str(exc)
