"""TCP header wire format (RFC 9293 §3.1, options RFC 7323 / RFC 2018).

`TcpSegment.parse` validates a TCP header (and, when asked, its checksum) once; the result is
immutable and its payload stays a zero-copy `memoryview`. `build_header` packs a header for
frames we emit.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from ..checksum import finish, pseudo_header_sum, sum16
from ..errors import MalformedPacket

TCP_HDR: Final = struct.Struct("!HHIIBBHHH")  # sport dport seq ack off<<4 flags window checksum urgent
TCP_HLEN: Final = 20
TCP_MAX_HLEN: Final = 60

FIN: Final = 0x01
SYN: Final = 0x02
RST: Final = 0x04
PSH: Final = 0x08
ACK: Final = 0x10
URG: Final = 0x20
ECE: Final = 0x40
CWR: Final = 0x80

OPT_END: Final = 0
OPT_NOP: Final = 1
OPT_MSS: Final = 2
OPT_WSCALE: Final = 3
OPT_SACK_PERM: Final = 4
OPT_SACK: Final = 5
OPT_TIMESTAMP: Final = 8

_U16: Final = struct.Struct("!H")
_U32X2: Final = struct.Struct("!II")
_PROTO_TCP: Final = 6
_OPT_MSS_HDR: Final = bytes((OPT_MSS, 4))
_OPT_SACKPERM_TS: Final = bytes((OPT_SACK_PERM, 2, OPT_TIMESTAMP, 10))
_OPT_NOP_NOP_TS: Final = bytes((OPT_NOP, OPT_NOP, OPT_TIMESTAMP, 10))
_OPT_NOP_NOP_SACKPERM: Final = bytes((OPT_NOP, OPT_NOP, OPT_SACK_PERM, 2))


@dataclass(slots=True, unsafe_hash=True)
class TcpOptions:
    """The options of one segment. Not frozen (as TcpSegment): one is built per SYN received
    and per SACK sent, and a frozen dataclass's __init__ costs several times as much compiled.
    Treat it as read-only (it hashes by value)."""

    mss: int | None = None
    wscale: int | None = None          # raw shift as sent; RFC 7323 §2.3 caps its use at 14
    sack_permitted: bool = False
    timestamp: tuple[int, int] | None = None   # (TSval, TSecr)
    sack_blocks: tuple[tuple[int, int], ...] = ()

    @classmethod
    def parse(cls, buf: memoryview | bytes) -> "TcpOptions":
        """Parse the options area (everything after the fixed 20 bytes)."""
        mss = wscale = timestamp = None
        sack_permitted = False
        sack_blocks: tuple[tuple[int, int], ...] = ()
        data = bytes(buf)       # at most 40 bytes; indexing bytes gives ints without objects
        n = len(data)
        i = 0
        while i < n:
            kind = data[i]
            if kind == OPT_END:
                break
            if kind == OPT_NOP:
                i += 1
                continue
            if i + 1 >= n:
                raise MalformedPacket("tcp.bad_option")
            length = data[i + 1]
            if length < 2 or i + length > n:
                raise MalformedPacket("tcp.bad_option")
            if kind == OPT_MSS:
                if length != 4:
                    raise MalformedPacket("tcp.bad_option")
                mss = _U16.unpack_from(data, i + 2)[0]
            elif kind == OPT_WSCALE:
                if length != 3:
                    raise MalformedPacket("tcp.bad_option")
                wscale = data[i + 2]
            elif kind == OPT_SACK_PERM:
                if length != 2:
                    raise MalformedPacket("tcp.bad_option")
                sack_permitted = True
            elif kind == OPT_TIMESTAMP:
                if length != 10:
                    raise MalformedPacket("tcp.bad_option")
                timestamp = _U32X2.unpack_from(data, i + 2)
            elif kind == OPT_SACK:
                if (length - 2) % 8 != 0 or length == 2:
                    raise MalformedPacket("tcp.bad_option")
                sack_blocks = tuple(_U32X2.unpack_from(data, j) for j in range(i + 2, i + length, 8))
            # unknown kinds with a sane length are skipped (RFC 9293 §3.1)
            i += length
        return cls(mss, wscale, sack_permitted, timestamp, sack_blocks)

    def pack(self) -> bytes:
        """Options area, 32-bit aligned the way Linux lays it out (RFC 7323 Appendix A).

        SYN order: MSS, SACK-permitted, timestamps, NOP+window scale (20 bytes). Without
        SACK-permitted, timestamps are preceded by NOP NOP so the TSval stays aligned.
        Raises ValueError when the result would exceed 40 bytes.
        """
        out = bytearray()
        if self.mss is not None:
            out += _OPT_MSS_HDR + _U16.pack(self.mss)
        if self.timestamp is not None:
            out += _OPT_SACKPERM_TS if self.sack_permitted else _OPT_NOP_NOP_TS
            out += _U32X2.pack(*self.timestamp)
        elif self.sack_permitted:
            out += _OPT_NOP_NOP_SACKPERM
        if self.wscale is not None:
            out += bytes((OPT_NOP, OPT_WSCALE, 3, self.wscale))
        if self.sack_blocks:
            out += bytes((OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(self.sack_blocks)))
            for left, right in self.sack_blocks:
                out += _U32X2.pack(left, right)
        while len(out) % 4:
            out.append(OPT_END)
        if len(out) > TCP_MAX_HLEN - TCP_HLEN:
            raise ValueError("TCP options longer than 40 bytes")
        return bytes(out)


NO_OPTIONS: Final = TcpOptions()
_SYN_MSS: Final = struct.Struct("!BBH")
_OPT_NOP_WSCALE: Final = bytes((OPT_NOP, OPT_WSCALE, 3))


def syn_options(mss: int, wscale: int | None, sack_permitted: bool,
                timestamp: tuple[int, int] | None = None) -> bytes:
    """The options of a SYN or SYN-ACK we send: the same bytes as
    `TcpOptions(mss=mss, wscale=wscale, sack_permitted=sack_permitted, timestamp=timestamp).pack()`
    without the object (one per new connection)."""
    out = _SYN_MSS.pack(OPT_MSS, 4, mss)
    if timestamp is not None:
        out += (_OPT_SACKPERM_TS if sack_permitted else _OPT_NOP_NOP_TS) + _U32X2.pack(*timestamp)
    elif sack_permitted:
        out += _OPT_NOP_NOP_SACKPERM
    if wscale is not None:
        out += _OPT_NOP_WSCALE + bytes((wscale,))
    return out


TS_OPTION_LEN: Final = 12            # NOP, NOP, kind 8, length 10, TSval, TSecr (RFC 7323 App. A)
TS_OPTION_LEAD: Final = 0x0101080A   # its first four bytes as one big-endian word
_TS_OPTION: Final = struct.Struct("!III")


def ts_option(tsval: int, tsecr: int) -> bytes:
    """The timestamps option of a non-SYN segment, laid out as Linux sends it (the form the
    receive fast path recognises): NOP, NOP, then the 10-byte option; 12 bytes."""
    return _TS_OPTION.pack(TS_OPTION_LEAD, tsval, tsecr)


def ts_option_at(buf: bytes | memoryview, offset: int) -> tuple[int, int, int]:
    """(lead word, TSval, TSecr) read at `offset`: the option is the one `ts_option` packs
    exactly when the lead word is TS_OPTION_LEAD."""
    return _TS_OPTION.unpack_from(buf, offset)


@dataclass(slots=True)
class TcpSegment:
    """A validated TCP segment. `window` is the raw 16-bit field, not yet scaled.

    Not frozen: one is built per received segment, and a frozen dataclass's __init__ costs
    about twice as much. Treat it as read-only."""

    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: int
    window: int
    urgent: int = 0
    options: TcpOptions = NO_OPTIONS
    payload: memoryview | bytes = b""

    @property
    def seg_len(self) -> int:
        """SEG.LEN of RFC 9293: payload octets plus one for SYN and one for FIN."""
        return len(self.payload) + (self.flags & SYN and 1) + (self.flags & FIN and 1)

    @classmethod
    def parse(
        cls,
        buf: memoryview,
        src_ip: bytes = b"",
        dst_ip: bytes = b"",
        verify_checksum: bool = False,
    ) -> "TcpSegment":
        """Parse `buf`, the whole TCP segment (header + payload, nothing after it).

        With `verify_checksum`, `src_ip`/`dst_ip` (4 or 16 bytes each) give the IPv4 or IPv6
        pseudo-header.
        """
        n = len(buf)
        if n < TCP_HLEN:
            raise MalformedPacket("tcp.short")
        sport, dport, seq, ack, off, flags, window, _csum, urgent = TCP_HDR.unpack_from(buf, 0)
        hlen = (off >> 4) * 4
        if hlen < TCP_HLEN or hlen > n:
            raise MalformedPacket("tcp.bad_data_offset")
        if verify_checksum:
            if sum16(buf, pseudo_header_sum(src_ip, dst_ip, _PROTO_TCP, n)) != 0xFFFF:
                raise MalformedPacket("tcp.bad_checksum")
        options = TcpOptions.parse(buf[TCP_HLEN:hlen]) if hlen > TCP_HLEN else NO_OPTIONS
        return cls(sport, dport, seq, ack, flags, window, urgent, options, buf[hlen:])

    def pack(self, src_ip: bytes = b"", dst_ip: bytes = b"") -> bytes:
        """Header + options + payload. With both IPs the checksum is filled in, else it is 0."""
        opts = self.options.pack() if self.options != NO_OPTIONS else b""
        hdr = build_header(self.src_port, self.dst_port, self.seq, self.ack, self.flags,
                           self.window, opts, 0, self.urgent)
        seg = hdr + bytes(self.payload)
        if src_ip or dst_ip:
            csum = finish(sum16(seg, pseudo_header_sum(src_ip, dst_ip, _PROTO_TCP, len(seg))))
            seg = seg[:16] + _U16.pack(csum) + seg[18:]
        return seg


def build_header(
    src_port: int,
    dst_port: int,
    seq: int,
    ack: int,
    flags: int,
    window: int,
    options: bytes = b"",
    checksum: int = 0,
    urgent: int = 0,
) -> bytes:
    """Pack a TCP header; `options` must already be padded to a multiple of 4 bytes."""
    if len(options) & 3 or len(options) > TCP_MAX_HLEN - TCP_HLEN:
        raise ValueError("TCP options must be padded to a multiple of 4 and at most 40 bytes")
    off = ((TCP_HLEN + len(options)) // 4) << 4
    return TCP_HDR.pack(src_port, dst_port, seq, ack, off, flags, window, checksum, urgent) + options
