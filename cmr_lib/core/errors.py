"""The one error type users see: a single line naming the file or parameter and the problem."""
from __future__ import annotations

import sys


class CmrError(Exception):
    """A user-facing error (bad file, bad parameter); rendered as one line, never a traceback."""

    def _render_traceback_(self):  # IPython/Jupyter calls this instead of printing a traceback
        return [f"CmrError: {self}"]


def cli_main(main):
    """Run a CLI `main(argv) -> int`, turning a CmrError into `error: ...` on stderr and exit code 2."""
    def wrapper(argv=None):
        try:
            return main(argv)
        except CmrError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    wrapper.__doc__ = main.__doc__
    return wrapper


def check_bool(name: str, value) -> bool:
    """`value` must be True or False itself: papermill's `-p flag false` arrives as the truthy string 'false'."""
    if not isinstance(value, bool):
        raise CmrError(f"parameter '{name}' = {value!r}: must be True or False"
                       + (" (papermill: pass -p name False, or -y '{name: false}')" if isinstance(value, str) else ""))
    return value


def check_int(name: str, value, *, minimum: int = 0, hint: str = "") -> int:
    """`value` itself must be an int >= minimum (not a bool, float or string): the one integer rule for
    parameters that code, not a notebook, passes; a one-line CmrError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
        raise CmrError(f"parameter '{name}' = {value!r}: must be {what}{hint}")
    return value
