"""The ``expensetracker`` command (and ``python -m expensetracker``)."""

import gc
import sys

from expensetracker import loading


def main() -> None:
    # What a command loads (its modules: about 110,000 objects) lives as long as the process, yet
    # the collections it set off while loading took about 0.1 s of every start. Collection
    # resumes once the command is loaded, with those objects frozen (cli.main_options).
    gc.disable()
    loading.start()
    try:
        from expensetracker.cli import main as run

        run()
    except KeyboardInterrupt:
        # Ctrl-C while the command line loads, before a command runs (which would say so
        # itself): the same one line, not a traceback.
        sys.stderr.write("error: interrupted\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
