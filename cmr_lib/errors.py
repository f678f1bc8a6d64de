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
