"""DHCPv4 messages (RFC 2131, options RFC 2132): a client's request parsed, a server's reply built.

Why a module: a guest that configures itself (slirp4netns mode without `-c`, any guest that
runs a DHCP client) asks the gateway for an address; this is the wire half of the answer, with
no state (the lease table is iface/dhcp.py's). Only what a server reads is parsed: the BOOTP
fixed part (op, hardware type and length, xid, flags, ciaddr, chaddr), the magic cookie and
the options up to END, of which message type (53), requested address (50) and server
identifier (54) are kept. Anything else about the packet that is wrong raises MalformedPacket
with a `dhcp.*` reason: too short, not a BOOTREQUEST, not Ethernet, no cookie, an option that
runs past the buffer, a missing or unknown message type, an address option not 4 bytes long.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..errors import MalformedPacket

SERVER_PORT = 67
CLIENT_PORT = 68

# op htype hlen hops xid secs flags ciaddr yiaddr siaddr giaddr chaddr(16)
BOOTP_HDR = struct.Struct("!BBBBIHH4s4s4s4s16s")
BOOTP_FIXED = 236                       # + sname(64) + file(128) after the header above
MAGIC = b"\x63\x82\x53\x63"
MIN_LEN = BOOTP_FIXED + len(MAGIC)      # 240: the smallest message with options
BOOTREQUEST = 1
BOOTREPLY = 2
HTYPE_ETHERNET = 1
FLAG_BROADCAST = 0x8000

DISCOVER, OFFER, REQUEST, DECLINE, ACK, NAK, RELEASE, INFORM = 1, 2, 3, 4, 5, 6, 7, 8
CLIENT_TYPES = frozenset((DISCOVER, REQUEST, DECLINE, RELEASE, INFORM))

OPT_PAD = 0
OPT_SUBNET_MASK = 1
OPT_ROUTER = 3
OPT_DNS = 6
OPT_REQUESTED_IP = 50
OPT_LEASE_TIME = 51
OPT_MSG_TYPE = 53
OPT_SERVER_ID = 54
OPT_END = 255

_U32 = struct.Struct("!I")
_ZERO4 = bytes(4)


@dataclass(frozen=True, slots=True)
class DhcpRequest:
    """A client's message, as far as a server needs it."""
    msg_type: int
    xid: int
    flags: int
    ciaddr: bytes                       # 4 bytes; zero unless the client has an address
    mac: bytes                          # chaddr, the client's 6-byte hardware address
    requested_ip: bytes | None          # option 50
    server_id: bytes | None             # option 54

    @property
    def broadcast(self) -> bool:
        return bool(self.flags & FLAG_BROADCAST)

    @classmethod
    def parse(cls, buf: bytes | bytearray | memoryview) -> "DhcpRequest":
        """Parse the UDP payload `buf` (bytes after the options' END are ignored)."""
        if len(buf) < MIN_LEN:
            raise MalformedPacket("dhcp.short")
        op, htype, hlen, _hops, xid, _secs, flags, ciaddr, _yi, _si, _gi, chaddr = \
            BOOTP_HDR.unpack_from(buf, 0)
        if op != BOOTREQUEST:
            raise MalformedPacket("dhcp.not_request")
        if htype != HTYPE_ETHERNET or hlen != 6:
            raise MalformedPacket("dhcp.bad_hw")
        if bytes(buf[BOOTP_FIXED:MIN_LEN]) != MAGIC:
            raise MalformedPacket("dhcp.bad_cookie")
        opts = parse_options(buf, MIN_LEN)
        mtype = opts.get(OPT_MSG_TYPE)
        if mtype is None or len(mtype) != 1:
            raise MalformedPacket("dhcp.no_type")
        if mtype[0] not in CLIENT_TYPES:
            raise MalformedPacket("dhcp.bad_type")
        return cls(mtype[0], xid, flags, ciaddr, chaddr[:6], _addr(opts.get(OPT_REQUESTED_IP)),
                   _addr(opts.get(OPT_SERVER_ID)))


def _addr(value: bytes | None) -> bytes | None:
    if value is not None and len(value) != 4:
        raise MalformedPacket("dhcp.bad_option")
    return value


def parse_options(buf: bytes | bytearray | memoryview, pos: int) -> dict[int, bytes]:
    """The options from `pos` up to END (or the end of the buffer): code -> value (the last
    copy of a repeated option wins). A length that runs past the buffer is malformed."""
    n = len(buf)
    opts: dict[int, bytes] = {}
    while pos < n:
        code = buf[pos]
        if code == OPT_END:
            break
        if code == OPT_PAD:
            pos += 1
            continue
        if pos + 1 >= n:
            raise MalformedPacket("dhcp.bad_option")
        end = pos + 2 + buf[pos + 1]
        if end > n:
            raise MalformedPacket("dhcp.bad_option")
        opts[code] = bytes(buf[pos + 2:end])
        pos = end
    return opts


def build_reply(msg_type: int, req: DhcpRequest, yiaddr: bytes, server: bytes,
                mask: bytes = _ZERO4, router: bytes | None = None, dns: bytes | None = None,
                lease: int = 0) -> bytes:
    """A server's OFFER, ACK or NAK to `req` (the BOOTP header echoes xid, flags, ciaddr and
    chaddr; siaddr is 0). An OFFER/ACK carries the subnet mask, router, DNS server (each when
    given), lease time (when nonzero) and server identifier; a NAK only the identifier."""
    head = BOOTP_HDR.pack(BOOTREPLY, HTYPE_ETHERNET, 6, 0, req.xid, 0, req.flags,
                          req.ciaddr if msg_type == ACK else _ZERO4, yiaddr, _ZERO4, _ZERO4,
                          req.mac + bytes(10))
    opts = bytearray((OPT_MSG_TYPE, 1, msg_type, OPT_SERVER_ID, 4))
    opts += server
    if msg_type != NAK:
        if lease:
            opts += bytes((OPT_LEASE_TIME, 4)) + _U32.pack(lease)
        opts += bytes((OPT_SUBNET_MASK, 4)) + mask
        if router is not None:
            opts += bytes((OPT_ROUTER, 4)) + router
        if dns is not None:
            opts += bytes((OPT_DNS, 4)) + dns
    opts.append(OPT_END)
    return head + bytes(BOOTP_FIXED - BOOTP_HDR.size) + MAGIC + bytes(opts)


def build_request(msg_type: int, xid: int, mac: bytes, *, flags: int = 0,
                  ciaddr: bytes = _ZERO4, requested_ip: bytes | None = None,
                  server_id: bytes | None = None) -> bytes:
    """A client's message (tests and the fuzz corpus; the parser's inverse)."""
    head = BOOTP_HDR.pack(BOOTREQUEST, HTYPE_ETHERNET, 6, 0, xid, 0, flags, ciaddr, _ZERO4,
                          _ZERO4, _ZERO4, mac + bytes(10))
    opts = bytearray((OPT_MSG_TYPE, 1, msg_type))
    if requested_ip is not None:
        opts += bytes((OPT_REQUESTED_IP, 4)) + requested_ip
    if server_id is not None:
        opts += bytes((OPT_SERVER_ID, 4)) + server_id
    opts.append(OPT_END)
    return head + bytes(BOOTP_FIXED - BOOTP_HDR.size) + MAGIC + bytes(opts)
