"""Human units for the designer's flags: bytes, FLOP/s and seconds, parsed and printed.

    parse_bytes("8KiB") == 8192      B, kB/KB/MB/GB = 1000^n, KiB/MiB/GiB = 1024^n
    parse_flops("50MFLOPS") == 5e7   FLOPS, kFLOPS, MFLOPS, GFLOPS, TFLOPS or the FLOP/s
                                     spelling, any case
    parse_seconds("1ms") == 0.001    s, ms, us, µs, ns

A plain number is bytes, FLOP/s or seconds. Numbers (int/float) pass through after the
same range checks. Every bad value raises EdgekdError with one line naming the value and
the accepted units.
"""

import math
import re

from ..errors import EdgekdError

_NUMBER = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*(.*?)\s*$")

BYTE_UNITS = {"": 1, "B": 1, "kB": 1000, "KB": 1000, "MB": 1000 ** 2, "GB": 1000 ** 3,
              "KiB": 1024, "kiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3}
FLOPS_PREFIXES = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
SECOND_UNITS = {"": 1.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6,
                "ns": 1e-9}

_BYTES_HELP = "B, kB, MB, GB (x1000) or KiB, MiB, GiB (x1024), e.g. 8KiB"
_FLOPS_HELP = "FLOPS, kFLOPS, MFLOPS, GFLOPS, TFLOPS (or FLOP/s), e.g. 50MFLOPS"
_SECONDS_HELP = "s, ms, us, µs, ns, e.g. 1ms"
_FLOPS_UNIT = re.compile(r"^([kmgt]?)flop(?:s|/s)$")


def _split(text, what, accepted):
    """(number, unit) of `text`; `text` may already be a number (then the unit is '')."""
    if isinstance(text, bool):
        raise EdgekdError(f"bad {what} {text!r}: expected a number with a unit: {accepted}")
    if isinstance(text, (int, float)):
        value, unit = float(text), ""
    else:
        m = _NUMBER.match(str(text))
        if not m:
            raise EdgekdError(f"bad {what} {text!r}: expected a number with a unit: {accepted}")
        value, unit = float(m.group(1)), m.group(2)
    if not math.isfinite(value):
        raise EdgekdError(f"bad {what} {text!r}: must be a finite number")
    return value, unit


def parse_bytes(text):
    """A byte count (int, >= 0) from '8KiB', '1.5 MB', '512' (bytes) or an int."""
    value, unit = _split(text, "byte size", _BYTES_HELP)
    if unit not in BYTE_UNITS:
        raise EdgekdError(f"bad byte size {text!r}: unknown unit {unit!r}; use {_BYTES_HELP}")
    if value < 0:
        raise EdgekdError(f"bad byte size {text!r}: must not be negative")
    return round(value * BYTE_UNITS[unit])


def parse_flops(text):
    """A speed in FLOP/s (float, > 0) from '50MFLOPS', '2 GFLOP/s', '1e8' or a number."""
    value, unit = _split(text, "speed", _FLOPS_HELP)
    if unit == "":
        scale = 1.0
    else:
        m = _FLOPS_UNIT.match(unit.replace(" ", "").lower())
        if not m:
            raise EdgekdError(f"bad speed {text!r}: unknown unit {unit!r}; use {_FLOPS_HELP}")
        scale = FLOPS_PREFIXES[m.group(1)]
    if value <= 0:
        raise EdgekdError(f"bad speed {text!r}: must be positive")
    return value * scale


def parse_seconds(text):
    """A duration in seconds (float, > 0) from '1ms', '250 us', '0.1' or a number."""
    value, unit = _split(text, "duration", _SECONDS_HELP)
    if unit not in SECOND_UNITS:
        raise EdgekdError(f"bad duration {text!r}: unknown unit {unit!r}; use {_SECONDS_HELP}")
    if value <= 0:
        raise EdgekdError(f"bad duration {text!r}: must be positive")
    return value * SECOND_UNITS[unit]


def _num(v):
    """Three significant figures, trailing zeros kept so that columns line up."""
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def format_bytes(n):
    """'512 B', '8.00 KiB', '1.50 MiB', '4.00 GiB' (binary prefixes)."""
    if n is None:
        return "unbounded"
    n = int(n)
    if abs(n) < 1024:
        return f"{n} B"
    for unit, scale in (("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if abs(n) >= scale:
            return f"{_num(n / scale)} {unit}"
    return f"{n} B"  # pragma: no cover


def format_flops(n, per_second=False):
    """'262 kFLOP' for a count, or '50.0 MFLOP/s' with per_second=True (decimal prefixes)."""
    if n is None:
        return "unknown"
    suffix = "FLOP/s" if per_second else "FLOP"
    for prefix, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{_num(n / scale)} {prefix}{suffix}"
    return f"{n:.0f} {suffix}" if float(n).is_integer() else f"{_num(n)} {suffix}"


def format_seconds(s):
    """'2.00 s', '1.50 ms', '230 us', '12.0 ns'."""
    if s is None:
        return "unknown"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if abs(s) >= scale:
            return f"{_num(s / scale)} {unit}"
    return f"{_num(s / 1e-9)} ns"
