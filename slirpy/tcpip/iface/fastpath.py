"""The receive fast path of an established TCP flow, and of an existing UDP flow, over IPv4: one
frame from the TAP to its connection (or flow) without the general layers' parsing objects and
calls.

Why a module: in a request/response exchange, or a bulk upload, nearly every frame the guest
sends is the next in-order segment of a flow that exists, with a plain 20-byte IPv4 header and
a 20-byte TCP header carrying only ACK (and PSH). For such a frame this module unpacks the
virtio, Ethernet, IPv4 and TCP headers in one `struct` call (wire/tcp4frame.py), looks the flow up
once, and lets `tcp.predict.receive_predicted` (header prediction) update the connection. What
it does not take, it hands, untouched, to `Link.receive_frame`, the general path, whose
checks, counters and results are the reference: every condition below is a case the general
path treats the same way for this frame (tests/unit/test_tcp_predict.py compares both). A
frame is taken only when:

* it has the virtio header (the TAP was opened with IFF_VNET_HDR) and is long enough for all
  four headers; ethertype IPv4, version 4 and IHL 5, not a fragment, protocol TCP, a total
  length that fits the frame and holds the TCP header, data offset 5 (no TCP options), or 8
  with the timestamps option alone, laid out as Linux sends it (NOP, NOP, timestamps);
* the source's MAC is the one already learned for it (so the source is on the sandbox
  network; the general path learns a new one, or drops a source from elsewhere), or the
  source is in a routed prefix (a member of a network; the general path learns no MAC for it);
* flags are ACK or ACK|PSH, nothing else;
* the checksums are vouched for by the virtio header, or verified here (a bad one goes to
  the general path, which drops and counts it);
* its flow exists, and the connection predicts it (`receive_predicted`).

Over IPv6 (wire/tcp6frame.py: the same shape with a 40-byte IPv6 header and no extension
headers), a segment is taken under the same conditions, its source on the sandbox's IPv6
network with the MAC learned for it, or in a routed prefix, as Ipv6Input.receive has it (which
also sends a router advertisement when one is due: so does the fast path).

A UDP datagram (wire/udp4frame.py: the same shape up to IPv4, protocol UDP, a UDP length that
fits) is taken when its source is as above, the virtio header vouches for its checksums, the
IPv4 header checksum holds, and its flow exists and is not a DNS flow (whose queries the name
views may answer): the flow's records are updated and its event queued exactly as
`UdpHandler.receive` does for it (tests/unit/test_udp_fastpath.py compares both).
"""

from __future__ import annotations

from typing import Callable, Final

from ..checksum import sum16
from ..flow import TcpFlow
from ..tcp.predict import receive_predicted
from ..wire import tcp4frame, tcp6frame, udp4frame
from ..wire.ipv4 import words_sum as ipv4_words_sum
from ..wire.tcp import TS_OPTION_LEAD, ts_option_at
from ..wire.tcp4frame import IP_OFF, TCP_OFF, Fields
from ..wire.virtio import F_DATA_VALID, F_NEEDS_CSUM
from .ipv4 import Ipv4Input
from .ipv6 import Ipv6Input
from .link import Link
from .neighbours import Neighbours
from .tcp import TcpHandler
from .udp import UdpHandler

_TRUSTED: Final = F_NEEDS_CSUM | F_DATA_VALID
# What TcpFlow.ip_base_sum adds to the sum of the addresses: the header words of our frames
# that hold version/IHL, DF, TTL and protocol (flow.py).
_IP_BASE: Final = 0x4500 + 0x4000 + ((64 << 8) | 6)
_ACK: Final = 0x10
_ACK_PSH: Final = 0x18


class FastPath:
    """`receive_frame` for the Stack: the fast path, else the link's general path."""

    def __init__(self, link: Link, neighbours: Neighbours, ipv4: Ipv4Input,
                 tcp: TcpHandler, udp: UdpHandler, ipv6: Ipv6Input | None) -> None:
        self._general: Callable[[bytes | memoryview, float], None] = link.receive_frame
        self._counters = link.counters
        self._enabled = link.vnet_hdr
        self._macs = neighbours.entries
        self._routed_source = ipv4.routed_source
        self._by_key = tcp._by_key
        self._budgets = tcp._budgets
        self._dirty = tcp.dirty          # the Stack's set of flows to service (wired before us)
        self._udp_flows = udp._flows
        self._udp = udp
        self._ipv6 = ipv6

    def receive_frame(self, frame: bytes | memoryview, now: float) -> None:
        """Take one frame read from the TAP (see the module docstring for which)."""
        n = len(frame)
        if not self._enabled:
            self._general(frame, now)
            return
        if not tcp4frame.maybe(frame, n):
            if udp4frame.maybe(frame, n):
                if not self._receive_udp(frame, n, now):
                    self._general(frame, now)
            elif not tcp6frame.maybe(frame, n) or not self._receive_tcp6(frame, n, now):
                self._general(frame, now)
            return
        fields: Fields = tcp4frame.FRAME.unpack_from(frame, 0)
        if not tcp4frame.plain(fields, n):
            self._general(frame, now)
            return
        (vflags, src_mac, ethertype, vihl, tos, total, ident, frag, ttl, proto, csum, src, dst,
         sport, dport, seq, ack, off, flags, window) = fields
        if flags != _ACK and flags != _ACK_PSH:
            self._general(frame, now)
            return
        # (The neighbour table holds IPv4 addresses of the sandbox network only, learned the
        # way the general path learns them: a source with its MAC there is on the network.)
        mac = self._macs.get(src)
        if mac != src_mac and (mac is not None or not self._routed_source(src)):
            self._general(frame, now)
            return
        flow = self._by_key.get((src, sport, dst, dport))
        if flow is None:
            self._general(frame, now)
            return
        # The IPv4 header checksum, always verified (wire/ipv4.py): its words summed modulo
        # 0xFFFF (2**16 == 1), the addresses' part taken from the flow (they are its key).
        if (ipv4_words_sum(vihl, tos, total, ident, frag, ttl, proto, csum) + flow.ip_base_sum
                - _IP_BASE) % 0xFFFF:
            self._general(frame, now)
            return
        mv = memoryview(frame)
        if not vflags & _TRUSTED and sum16(mv[TCP_OFF:IP_OFF + total],
                                           flow.pseudo_base + total - 20) != 0xFFFF:
            self._general(frame, now)
            return
        if not self._predicted(flow, seq, ack, window, mv, TCP_OFF, off, IP_OFF + total, now):
            self._general(frame, now)

    def _predicted(self, flow: TcpFlow, seq: int, ack: int, window: int, mv: memoryview,
                   tcp_off: int, doff: int, end: int, now: float) -> bool:
        """The segment (its TCP header at `tcp_off` of the frame `mv`, data offset byte `doff`,
        ending at `end`) to the connection's header prediction; when it takes it, the
        accounting the general path does for a segment taken (both families)."""
        data_off = tcp_off + 20
        tsval = -1
        tsecr = 0
        if doff != 0x50:
            lead, tsval, tsecr = ts_option_at(mv, data_off)
            if lead != TS_OPTION_LEAD:
                return False
            data_off += 12
        dlen = end - data_off
        if not receive_predicted(flow.conn, seq, ack, window, mv[data_off:end], dlen, now,
                                 tsval, tsecr):
            return False
        self._counters["rx.frames"] += 1
        if dlen:
            self._budgets.received(flow, dlen, now)
        self._dirty[flow.flow_id] = flow
        return True

    def _receive_udp(self, frame: bytes | memoryview, n: int, now: float) -> bool:
        """A datagram of an existing UDP flow (module docstring); False: not taken, untouched."""
        f: udp4frame.Fields = udp4frame.FRAME.unpack_from(frame, 0)
        if not udp4frame.plain(f, n) or not f[0] & _TRUSTED:
            return False
        src = f[11]
        mac = self._macs.get(src)
        if mac != f[1] and (mac is not None or not self._routed_source(src)):
            return False
        dst = f[12]
        key = (src, f[13], dst, f[14])
        table = self._udp_flows
        flow = table.get(key)
        if flow is None or flow.dns:
            return False
        if (ipv4_words_sum(f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10])
                + int.from_bytes(src, "big") + int.from_bytes(dst, "big")) % 0xFFFF:
            return False
        mv = memoryview(frame)
        self._counters["rx.frames"] += 1
        table.move_to_end(key)
        self._udp.deliver(flow, mv[IP_OFF:IP_OFF + f[5]],
                          mv[udp4frame.HEADERS_LEN:udp4frame.UDP_OFF + f[15]], now)
        return True

    def _receive_tcp6(self, frame: bytes | memoryview, n: int, now: float) -> bool:
        """The next segment of an established TCP flow over IPv6 (module docstring); False:
        not taken, untouched."""
        ipv6 = self._ipv6
        if ipv6 is None:
            return False
        f: tcp6frame.Fields = tcp6frame.FRAME.unpack_from(frame, 0)
        if not tcp6frame.plain(f, n):
            return False
        flags = f[14]
        if flags != _ACK and flags != _ACK_PSH:
            return False
        src = f[7]
        if ipv6.on_network(src):
            if self._macs.get(src) != f[1]:
                return False
        elif not ipv6.routed_source(src):
            return False
        flow = self._by_key.get((src, f[9], f[8], f[10]))
        if flow is None:
            return False
        plen = f[4]
        mv = memoryview(frame)
        if not f[0] & _TRUSTED and sum16(mv[tcp6frame.TCP_OFF:tcp6frame.TCP_OFF + plen],
                                         flow.pseudo_base + plen) != 0xFFFF:
            return False
        if not self._predicted(flow, f[11], f[12], f[15], mv, tcp6frame.TCP_OFF, f[13],
                               tcp6frame.TCP_OFF + plen, now):
            return False
        ipv6.advertise_if_due(now)
        return True
