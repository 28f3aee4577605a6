"""Durations as written in specs: 30s, 10m, 1h30m, 2d."""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    parts = re.findall(r"([0-9]+(?:\.[0-9]+)?)([smhd])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 10m, 1h30m, 2d)")
    return sum(float(n) * _UNITS[u] for n, u in parts)
