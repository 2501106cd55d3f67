"""DNS messages (RFC 1035 §4), as far as the local name views need them: the question of a
query, and an answer built for it.

Why a module: the DNS forwarder answers names of sandbox networks itself (tcpip/names.py) and
forwards everything else untouched, so it reads only the header and the one question of a
query and never the rest (EDNS OPT records and the like stay the upstream's business). An
answer copies the question, sets QR, AA and RA, keeps the query's id, opcode and RD, and
carries A or AAAA records whose owner is a pointer to the question's name (§4.1.4). Malformed
input raises MalformedPacket with a `dns.*` reason; nothing else is ever raised.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import MalformedPacket

HEADER = struct.Struct("!HHHHHH")       # id, flags, qdcount, ancount, nscount, arcount
HLEN = 12
_QTAIL = struct.Struct("!HH")           # qtype, qclass
_RR = struct.Struct("!HHHIH")           # name pointer, type, class, ttl, rdlength
NAME_POINTER = 0xC000 | HLEN            # the question's name, at offset 12

QR = 0x8000
AA = 0x0400
TC = 0x0200
RD = 0x0100
RA = 0x0080
OPCODE_MASK = 0x7800
OPCODE_QUERY = 0
RCODE_NOERROR = 0
RCODE_NXDOMAIN = 3

TYPE_A = 1
TYPE_AAAA = 28
CLASS_IN = 1
MAX_NAME = 255                          # octets of a name on the wire (§2.3.4)
MAX_LABEL = 63
UDP_MAX = 512                           # a UDP answer without EDNS (§4.2.1)
_RDLEN = {TYPE_A: 4, TYPE_AAAA: 16}


@dataclass(frozen=True, slots=True)
class DnsQuestion:
    """The question of a query: `name` in lower case, without the trailing dot ("" for the
    root), a "." or "\\" inside a label escaped with a backslash; `end` is the offset just
    past the question."""
    ident: int
    flags: int
    name: str
    qtype: int
    qclass: int
    end: int

    @property
    def opcode(self) -> int:
        return (self.flags & OPCODE_MASK) >> 11


def parse_query(msg: bytes | memoryview) -> DnsQuestion:
    """The header and first question of a query. Raises MalformedPacket: shorter than a
    header (`dns.truncated`), a response (`dns.not_query`), no question (`dns.no_question`),
    a question that runs past the end, a label over 63 octets, a name over 255, or a
    compression pointer or reserved label type in the question (`dns.bad_name`)."""
    n = len(msg)
    if n < HLEN:
        raise MalformedPacket("dns.truncated")
    ident, flags, qdcount, _an, _ns, _ar = HEADER.unpack_from(msg, 0)
    if flags & QR:
        raise MalformedPacket("dns.not_query")
    if qdcount == 0:
        raise MalformedPacket("dns.no_question")
    labels: list[str] = []
    pos = HLEN
    size = 1
    while True:
        if pos >= n:
            raise MalformedPacket("dns.truncated")
        length = msg[pos]
        pos += 1
        if length == 0:
            break
        if length > MAX_LABEL:                 # a pointer (0xC0) or reserved types (0x40, 0x80)
            raise MalformedPacket("dns.bad_name")
        size += length + 1
        if size > MAX_NAME:
            raise MalformedPacket("dns.bad_name")
        if pos + length > n:
            raise MalformedPacket("dns.truncated")
        label = bytes(msg[pos:pos + length]).decode("latin-1").lower()
        if "." in label or "\\" in label:       # presentation-format escapes keep names apart
            label = label.replace("\\", "\\\\").replace(".", "\\.")
        labels.append(label)
        pos += length
    if pos + _QTAIL.size > n:
        raise MalformedPacket("dns.truncated")
    qtype, qclass = _QTAIL.unpack_from(msg, pos)
    return DnsQuestion(ident, flags, ".".join(labels), qtype, qclass, pos + _QTAIL.size)


def build_answer(query: bytes | memoryview, q: DnsQuestion, rcode: int,
                 addresses: Sequence[bytes] = (), ttl: int = 0,
                 limit: int = 65535) -> bytes:
    """The answer to `query` (whose question `q` is): `rcode`, and one A (4-byte) or AAAA
    (16-byte) record per address, all of `q.qtype`'s size (others are skipped). Records
    that would take the message past `limit` octets are left out and TC is set (§4.1.1)."""
    rdlen = _RDLEN.get(q.qtype, 0)
    question = bytes(query[HLEN:q.end])
    records = []
    size = HLEN + len(question)
    truncated = False
    if rdlen:
        for addr in addresses:
            if len(addr) != rdlen:
                continue
            if size + _RR.size + rdlen > limit:
                truncated = True
                break
            records.append(_RR.pack(NAME_POINTER, q.qtype, CLASS_IN, ttl, rdlen) + addr)
            size += _RR.size + rdlen
    flags = QR | AA | RA | (q.flags & (OPCODE_MASK | RD)) | (TC if truncated else 0) | rcode
    return HEADER.pack(q.ident, flags, 1, len(records), 0, 0) + question + b"".join(records)
