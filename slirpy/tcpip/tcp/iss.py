"""Initial sequence numbers (RFC 6528): a 4-microsecond clock plus a secret-keyed PRF of the
4-tuple.

Why a module: every new TCP flow, both directions, takes one, so its cost is paid per
connection; and what makes it safe (keyed, unguessable from outside, growing with time for one
4-tuple) deserves one place and its own tests.

The PRF is keyed BLAKE2s (RFC 7693 MAC mode, 16-byte random key, 4-byte output). A keyed
BLAKE2s first absorbs the key as a whole block: that part is the same for every 4-tuple, so it
is done once (`_keyed`) and each ISS starts from a copy of that state, which skips the
constructor's argument parsing and key set-up. The output is the same as a fresh
`blake2s(data, key=secret, digest_size=4)`, which the tests check.

The ISS grows with time for the same 4-tuple, so a guest still holding that tuple in
TIME-WAIT accepts our new SYN at once (RFC 6191 / Linux) instead of waiting for a
retransmission.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Final

_MASK: Final = 0xFFFFFFFF
_TICKS_PER_SECOND: Final = 250_000                  # one tick per 4 us (RFC 6528 §3)
# what is hashed: guest ip, peer ip, guest port, peer port (one struct per address length)
_TUPLE4: Final = struct.Struct("!4s4sHH")
_TUPLE16: Final = struct.Struct("!16s16sHH")


class IssGenerator:
    """ISS = (4 us clock + PRF(secret, 4-tuple)) mod 2**32 (RFC 6528 §3)."""

    __slots__ = ("_keyed",)

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the ISS secret must be at least 16 bytes")
        self._keyed = hashlib.blake2s(digest_size=4, key=secret)

    def offset(self, guest_ip: bytes, guest_port: int, peer_ip: bytes, peer_port: int) -> int:
        """The keyed hash part alone (the ISS at clock 0)."""
        h = self._keyed.copy()
        fmt = _TUPLE4 if len(guest_ip) == 4 else _TUPLE16
        h.update(fmt.pack(guest_ip, peer_ip, guest_port, peer_port))
        return int.from_bytes(h.digest(), "big")

    def iss(self, guest_ip: bytes, guest_port: int, peer_ip: bytes, peer_port: int,
            now: float) -> int:
        return (int(now * _TICKS_PER_SECOND)
                + self.offset(guest_ip, guest_port, peer_ip, peer_port)) & _MASK
