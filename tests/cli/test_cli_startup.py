"""The command line starts quickly: a command imports what it uses (issue 14)."""

from __future__ import annotations

import asyncio
import collections
import re
import signal
import subprocess
import sys

from tests.helpers.processes import REPO, clean_env, cli, cpu_seconds, interrupt_after, spawn


def test_the_import_command_starts_without_the_services() -> None:
    """`expensetracker expenses import` imports what it uses: not every service's app, the
    server, the migrations (seconds of start-up on a small machine), nor FastAPI (the routes'
    dependencies are in platform/deps.py, the app's error handlers in error_handlers.py) and
    the token verifier's jwt and cryptography."""
    code = (
        "import sys, expensetracker.cli as cli, expensetracker.targets as targets\n"
        "assert cli.TARGET_NAMES == targets.TARGET_NAMES, cli.TARGET_NAMES\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=clean_env())
    code = (
        "import sys, expensetracker.cli, expensetracker.cli.expenses\n"
        "loaded = {'alembic', 'uvicorn', 'fastapi', 'jwt', 'cryptography',\n"
        "          'expensetracker.targets',\n"
        "          'expensetracker.web.app',\n"
        "          'expensetracker.reports.app', 'expensetracker.auth.app',\n"
        "          'expensetracker.cli.auth', 'expensetracker.auth.keys',\n"
        "          'expensetracker.cli.backup', 'expensetracker.backup.store'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=clean_env())


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli(*args), cwd=REPO, env=clean_env(), capture_output=True, text=True)


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=clean_env(), capture_output=True, text=True
    )


def test_every_service_command_is_listed_and_runs() -> None:
    """The service commands load when named (SERVICE_COMMANDS), and the top-level help lists
    them all, each with its own help."""
    listed = _run("--help")
    assert listed.returncode == 0, listed.stderr
    for name, summary in [
        ("auth", "Operations of the auth service."),
        ("expenses", "Operations of the expenses service."),
        ("rates", "Exchange rates (kept by the expenses service)."),
        ("backup", "Backups of the database"),
    ]:
        found = re.search(rf"^\W*{name}\s+{re.escape(summary)}", listed.stdout, re.MULTILINE)
        assert found, listed.stdout
    rules = _run("expenses", "rules", "--help")
    assert rules.returncode == 0, rules.stderr
    assert "expensetracker expenses rules" in rules.stdout
    assert "The categorisation rules" in rules.stdout
    unknown = _run("nonsense")
    assert unknown.returncode == 2 and "No such command" in unknown.stderr


def _help_text(*command: str) -> str:
    """A command's help, its words in one line: Rich wraps and frames them."""
    shown = _run(*command, "--help")
    assert shown.returncode == 0, shown.stderr
    return re.sub(r"[\s│]+", " ", shown.stdout)


def test_up_help_says_where_the_embedded_database_goes_by_default() -> None:
    """Rich took the default written as `[default: ...]` for markup and printed nothing of it;
    and EXPENSETRACKER_DATA_DIR, which moves it, went unsaid."""
    assert "(default: EXPENSETRACKER_DATA_DIR, else ./.expensetracker)" in _help_text("up")


def test_prune_help_says_all_it_keeps_and_deletes() -> None:
    """It said it kept the newest verified backup only: the newest one is kept too (however
    long backups have been failing), and what killed runs left is deleted."""
    shown = _help_text("backup", "prune")
    assert "never the newest verified one nor the newest one" in shown, shown
    assert "the files killed runs left" in shown, shown


def test_a_command_exits_without_collecting_its_modules() -> None:
    """By the interpreter's last garbage collections, what the command loaded is frozen, so they
    skip it (they took 0.3 s of every command's exit). A handler registered before the command
    runs runs after its own (atexit is last in, first out), and sees the frozen objects."""
    code = (
        "import atexit, gc, sys\n"
        "atexit.register(\n"
        "    lambda: print('frozen at exit:', gc.get_freeze_count(), file=sys.stderr))\n"
        "sys.argv = ['expensetracker', 'expenses', '--help']\n"
        "from expensetracker.cli import main\n"
        "main()\n"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert "Operations of the expenses service." in done.stdout
    frozen = re.search(r"frozen at exit: (\d+)", done.stderr)
    assert frozen, done.stderr
    assert int(frozen.group(1)) > 10_000  # the objects of every module loaded; 0 unfrozen


def test_a_command_loads_without_collections() -> None:
    """What a command loads lives as long as the process: the collector stays off while it
    loads (it ran about 300 collections, 0.1 s of every start), and is on when the command
    runs. The command here runs as far as checking its arguments."""
    code = (
        "import atexit, gc, sys\n"
        "loading = []\n"
        "def watch(phase, info):\n"
        "    modules = sys.modules\n"
        "    if phase == 'start' and 'expensetracker.cli' in modules and (\n"
        "            'expensetracker.cli.expenses' not in modules):\n"
        "        loading.append(info['generation'])\n"
        "gc.callbacks.append(watch)\n"
        "atexit.register(lambda: print(\n"
        "    'collections while loading:', len(loading), 'on:', gc.isenabled(), file=sys.stderr))\n"
        "sys.argv = ['expensetracker', 'expenses', 'import', '/nonexistent', '--user', 'a@b.org']\n"
        "from expensetracker.__main__ import main\n"
        "main()\n"
    )
    done = _python(code)
    assert done.returncode == 2, done.stderr  # the file does not exist
    assert "/nonexistent" in done.stderr
    assert "collections while loading: 0 on: True" in done.stderr, done.stderr


def test_ctrl_c_that_python_ignores_while_loading_still_stops_the_command() -> None:
    """Python ignores (prints, then drops) an exception raised where it cannot be passed on,
    as in a weak reference's callback, which the import system runs while a command loads: a
    Ctrl-C landing there is still an interrupt, said once the command is loaded, before it
    runs. Here the callback runs as the expenses commands start to load."""
    code = (
        "import sys, weakref\n"
        "class Interrupting:\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'expensetracker.cli.expenses':\n"
        "            class Thing: pass\n"
        "            thing = Thing()\n"
        "            def callback(_):\n"
        "                raise KeyboardInterrupt\n"
        "            watched = weakref.ref(thing, callback)\n"
        "            del thing\n"
        "sys.meta_path.insert(0, Interrupting())\n"
        "sys.argv = ['expensetracker', 'expenses', 'import', '/nonexistent', '--user', 'a@b.org']\n"
        "from expensetracker.__main__ import main\n"
        "main()\n"
    )
    done = _python(code)
    assert done.returncode == 130, (done.returncode, done.stderr)
    assert done.stderr.strip() == "error: interrupted", done.stderr


def test_ctrl_c_that_python_ignores_once_a_command_runs_asks_for_another() -> None:
    code = (
        "import weakref\n"
        "from expensetracker import loading\n"
        "loading.start()\n"
        "assert not loading.loaded()\n"
        "class Thing: pass\n"
        "thing = Thing()\n"
        "def callback(_):\n"
        "    raise KeyboardInterrupt\n"
        "watched = weakref.ref(thing, callback)\n"
        "del thing\n"
        "print('went on')\n"
    )
    done = _python(code)
    assert (done.returncode, done.stdout) == (0, "went on\n"), done.stderr
    assert done.stderr == "Ctrl-C came where Python cannot stop: press it again to stop.\n"


async def test_ctrl_c_while_a_command_loads_says_interrupted() -> None:
    """Ctrl-C sent ever later, from when Python has started (its own start-up, `site` and the
    packages' import hooks, is Python's to answer) until the command is loaded and done: each
    run stopped says `error: interrupted` (status 130; or it ends by the signal itself, -2, as
    it exits), never a traceback. (Later moments, in a command's work: test_backup.py.)"""
    command = cli("expenses", "import", "--help")
    python = cpu_seconds([sys.executable, "-c", ""]) * 1.5
    loading = cpu_seconds(command)
    said: collections.Counter[int] = collections.Counter()
    for step in range(1, 25):
        with spawn(command, clean_env()) as process:
            await interrupt_after(process, cpu_seconds=python + (loading - python) * step / 20)
            code = await asyncio.to_thread(process.wait)
        output = process.output
        assert "Traceback" not in output and "Abort" not in output, output
        if "Usage: " in output and not output.endswith("error: interrupted"):
            assert code in (0, -signal.SIGINT), code  # done: the signal came as it ended
        else:
            assert output.endswith("error: interrupted"), (code, output)
            assert code in (130, -signal.SIGINT), code
        said[code] += 1
    assert said[130] >= 10, said
