"""Sequence-number arithmetic modulo 2**32 (RFC 9293 §3.4; serial-number style, RFC 1982).

Comparisons are valid while the two numbers are less than 2**31 apart, which a window of at
most 2**30 bytes (RFC 7323 §2.3) guarantees.
"""

from typing import Final

MASK: Final = 0xFFFFFFFF
_HALF: Final = 1 << 31


def seq_add(a: int, n: int) -> int:
    return (a + n) & MASK


def seq_sub(a: int, b: int) -> int:
    """Signed distance a - b, in [-2**31, 2**31)."""
    return ((a - b + _HALF) & MASK) - _HALF


def seq_lt(a: int, b: int) -> bool:
    return a != b and ((b - a) & MASK) < _HALF


def seq_le(a: int, b: int) -> bool:
    return ((b - a) & MASK) < _HALF


def seq_gt(a: int, b: int) -> bool:
    return seq_lt(b, a)


def seq_ge(a: int, b: int) -> bool:
    return seq_le(b, a)


def seq_between(low: int, x: int, high: int) -> bool:
    """low <= x < high, modulo 2**32."""
    return ((x - low) & MASK) < ((high - low) & MASK)
