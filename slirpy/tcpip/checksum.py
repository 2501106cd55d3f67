"""The Internet checksum (RFC 1071), computed with big integers instead of a word loop, and
the IPv4 (RFC 9293 §3.1) and IPv6 (RFC 8200 §8.1) pseudo-headers of TCP, UDP and ICMPv6.

Because 2**16 == 1 (mod 0xFFFF), the one's-complement sum of a buffer's 16-bit big-endian
words is congruent to the whole buffer read as one big-endian integer, modulo 0xFFFF. One
`int.from_bytes` and one `%` replace a Python loop (timings: perf/NOTES.md).
"""

from __future__ import annotations


def sum16(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """One's-complement sum of `data` (odd length padded with a zero byte) plus `initial`.

    Returns a folded sum in 1..0xFFFF, or 0 only when everything summed was zero. Not inverted.
    """
    n = int.from_bytes(data, "big")
    if len(data) & 1:
        n <<= 8
    n += initial
    if n == 0:
        return 0
    s = n % 0xFFFF
    return s if s else 0xFFFF


def finish(s: int) -> int:
    """The checksum field value for a folded sum: its one's complement."""
    return ~s & 0xFFFF


def fold(s: int) -> int:
    """A positive sum of 16-bit words folded to 16 bits (1..0xFFFF): what a partial checksum
    field holds for the kernel to finish (NEEDS_CSUM). For s > 0 this equals the end-around
    carry applied until it fits (2**16 == 1 mod 0xFFFF), at a third of its cost. The framer's
    per-segment loop writes this one expression inline."""
    return s % 0xFFFF or 0xFFFF


def internet_checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    return ~sum16(data, initial) & 0xFFFF


def pseudo_header_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """Folded sum of the pseudo-header for a segment of `length` bytes: IPv4's (RFC 9293 §3.1)
    when the addresses are 4 bytes, IPv6's (RFC 8200 §8.1) when they are 16.

    The IPv6 pseudo-header carries a 32-bit length and 24 zero bits before the next header;
    its words sum, modulo 0xFFFF, to the same value as IPv4's zero+proto and 16-bit length,
    so one formula serves both: each address read as one integer, plus proto, plus length.
    Because the sum is taken modulo 0xFFFF, `length` may exceed 16 bits (the length of a GSO
    super-frame is never put on the wire, but a caller verifying an oversized buffer must get
    a wrong sum, not a struct.error). Both addresses must have the same length, 4 or 16.
    """
    n = len(src)
    if n != len(dst) or (n != 4 and n != 16):
        raise ValueError("pseudo_header_sum: addresses must be both 4 or both 16 bytes")
    n = int.from_bytes(src, "big") + int.from_bytes(dst, "big") + proto + length
    if n == 0:
        return 0
    s = n % 0xFFFF
    return s if s else 0xFFFF
