"""Ctrl-C where Python would drop it.

An exception raised where it cannot be passed on, as in a weak reference's callback (which the
import system runs while modules load), is printed with its traceback and dropped
(sys.unraisablehook). A Ctrl-C landing there would let the command go on as if no one had
pressed it. While the command line loads, such an interrupt is kept, and answered once the
command is loaded, before it runs (cli.main_options); later, the person is told to press it
again. Standard library only: it is in place before anything loads.
"""

import sys
from types import SimpleNamespace

_state = SimpleNamespace(loading=True, interrupted=False)


def _keep_interrupts(unraisable: "sys.UnraisableHookArgs") -> None:
    if unraisable.exc_type is None or not issubclass(unraisable.exc_type, KeyboardInterrupt):
        sys.__unraisablehook__(unraisable)
    elif _state.loading:
        _state.interrupted = True
    else:
        sys.stderr.write("Ctrl-C came where Python cannot stop: press it again to stop.\n")


def start() -> None:
    sys.unraisablehook = _keep_interrupts


def loaded() -> bool:
    """Ends the loading: whether a Ctrl-C was dropped meanwhile."""
    _state.loading = False
    return _state.interrupted
