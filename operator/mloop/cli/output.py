"""Where the CLI's tables go."""

from __future__ import annotations

import os
import sys

from rich.console import Console

WHOLE = 100_000  # wider than any row: rich sizes a table to its cells and centres its title on the table


def table_console() -> Console:
    """A terminal's width for a person; piped or redirected (less, grep, a CI log), every cell whole on one line,
    as kubectl prints, instead of 80 columns of cells cut to '…'. COLUMNS, when set, is honoured."""
    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        return Console()
    return Console(width=WHOLE)
