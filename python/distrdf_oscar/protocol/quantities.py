"""Kubernetes quantities ("1", "250m", "2Gi", "1e3"), as OSCAR takes CPU and memory."""

from __future__ import annotations

import re

# A decimal number, then a binary or decimal SI suffix or an exponent.
_QUANTITY_RE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)([eE][-+]?\d+|[KMGTPE]i|[numkMGTPE])?$")
_SUFFIXES = {
    "": 1.0,
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    **{f"{p}i": float(1024 ** (i + 1)) for i, p in enumerate("KMGTPE")},
}


def parse_quantity(value: str) -> float:
    """A Kubernetes quantity as a number (CPUs, or bytes); ValueError if it is none."""
    match = _QUANTITY_RE.match(value)
    if not match:
        raise ValueError(value)
    suffix = match.group(2) or ""
    if suffix[:1] in ("e", "E") and len(suffix) > 1:
        return float(match.group(1)) * 10.0 ** int(suffix[1:])
    return float(match.group(1)) * _SUFFIXES[suffix]
