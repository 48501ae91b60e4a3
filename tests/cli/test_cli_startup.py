"""The command line starts quickly: a command imports what it uses (issue 14)."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers.processes import REPO, clean_env


def test_the_import_command_starts_without_the_services() -> None:
    """`expensetracker expenses import` imports what it uses: not every service's app, the
    server and the migrations (seconds of start-up on a small machine)."""
    code = (
        "import sys, expensetracker.cli as cli, expensetracker.targets as targets\n"
        "assert cli.TARGET_NAMES == targets.TARGET_NAMES, cli.TARGET_NAMES\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=clean_env())
    code = (
        "import sys, expensetracker.cli, expensetracker.expenses.transfer\n"
        "loaded = {'alembic', 'uvicorn', 'expensetracker.targets', 'expensetracker.web.app',\n"
        "          'expensetracker.reports.app', 'expensetracker.auth.app'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, env=clean_env())
