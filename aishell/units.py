"""Sizes as people read them: binary units (KiB, MiB, GiB, TiB), everywhere aishell
shows a size, so a report's bytes reclaimed and its database sizes read alike."""

from __future__ import annotations

from typing import Any


def binary_size(n: Any, unknown: str = "-") -> str:
    """Bytes in B, KiB, MiB, GiB or TiB; `unknown` when n is not a number."""
    if not isinstance(n, int | float) or isinstance(n, bool):
        return unknown
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"
