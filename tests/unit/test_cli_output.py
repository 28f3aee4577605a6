"""The CLI's tables piped or redirected: every cell whole, as kubectl prints them."""

from __future__ import annotations

import subprocess
import sys

LONG = "iris-species-retrain-1-with-a-long-name"
SCRIPT = f"""
from rich.table import Table
from mloop.cli.output import table_console
table = Table(title="packages")
for column in ("package", "gate"):
    table.add_column(column)
table.add_row("{LONG}", "Production refused: iris-species/live:accuracy is 0.95 < 0.975 of iris-rf-1 on 40 rows")
table_console().print(table)
"""


def run(env: dict[str, str]) -> str:
    return subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, env=env).stdout


def test_a_piped_table_keeps_every_cell_whole_on_one_line() -> None:
    out = run({"PATH": "/usr/bin:/bin", "TERM": "dumb"})  # stdout is a pipe, no COLUMNS: as in `mloop status | less`
    row = next(line for line in out.splitlines() if LONG in line)
    assert "of iris-rf-1 on 40 rows" in row and "…" not in out


def test_columns_when_set_still_bounds_the_width() -> None:
    out = run({"PATH": "/usr/bin:/bin", "TERM": "dumb", "COLUMNS": "60"})
    assert max(len(line) for line in out.splitlines()) <= 60
