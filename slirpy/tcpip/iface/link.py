"""The link layer: virtio-net header, Ethernet, ethertype demux, and the frame queue out.

Why a module: every frame in and out crosses it, whatever the protocol above. In: strip the
virtio header (it tells whether the checksum still needs verifying), parse Ethernet, hand
IPv4, IPv6 and ARP to their handlers (wired by the Stack: this module imports no layer above
it); the ethertype is looked at once, IPv4 first. With IPv6 off, IPv6 frames are counted
(`ipv6.rx.drop.off`) and dropped. Out: `frames` is the queue `Stack.frames_to_send` returns;
`send_ip` frames one IP packet of either family to the guest from a virtual host's MAC (the
gateway's, or the DNS address's). `IpFamily` holds what framing a packet of one family
takes (ethertype, header length and builder, virtio checksum headers); a flow picks its
family once, when it is made, so no per-packet code asks which family it is.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Final

from ..errors import MalformedPacket
from ..wire.ethernet import ETH_HDR, ETH_HLEN, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6
from ..wire.ethernet import parse_fields as parse_eth
from ..wire.icmp import ERROR_QUOTE_MAX as ICMP_QUOTE_MAX
from ..wire.icmpv6 import ERROR_QUOTE_MAX as ICMPV6_QUOTE_MAX
from ..wire.icmpv6 import multicast_mac
from ..wire.ipv4 import IPV4_HLEN
from ..wire.ipv4 import build_header as build_ipv4_header
from ..wire.ipv6 import IPV6_HLEN
from ..wire.ipv6 import build_header as build_ipv6_header
from ..wire.virtio import F_NEEDS_CSUM, GSO_NONE, VNET_HDR, VNET_HDR_LEN, checksum_trusted

ETH_IP_HLEN: Final = ETH_HLEN + IPV4_HLEN     # 34: csum_start of a transport header after plain IPv4
ETH_IP6_HLEN: Final = ETH_HLEN + IPV6_HLEN    # 54: csum_start of a transport header after plain IPv6
TCP_CSUM_OFFSET: Final = 16
UDP_CSUM_OFFSET: Final = 6

# A frame for the TAP: bytes, or a tuple of buffers for os.writev.
Frame = Any
IpInput = Callable[[memoryview, bytes, bool, float], None]
ArpInput = Callable[[memoryview, bytes], None]


def _ignore_ip(mv: memoryview, src_mac: bytes, verify: bool, now: float) -> None:
    return None


def _ignore_arp(mv: memoryview, src_mac: bytes) -> None:
    return None


class IpFamily:
    """How a packet of one IP family is framed for the guest; a flow keeps its family's."""

    __slots__ = ("ethertype", "hlen", "build_header", "quote_max", "vnet_tcp_csum",
                 "vnet_udp_csum")

    def __init__(self, ethertype: int, hlen: int, build_header: Callable[..., bytes],
                 quote_max: int, vnet_hdr: bool) -> None:
        self.ethertype = ethertype
        self.hlen = hlen
        self.build_header = build_header      # (src, dst, proto, payload length) -> header
        self.quote_max = quote_max            # head of a guest packet an ICMP error may quote
        csum_start = ETH_HLEN + hlen
        # A complete frame whose TCP (UDP) checksum we leave to the kernel (NEEDS_CSUM).
        self.vnet_tcp_csum = VNET_HDR.pack(F_NEEDS_CSUM, GSO_NONE, 0, 0, csum_start,
                                           TCP_CSUM_OFFSET, 0) if vnet_hdr else b""
        self.vnet_udp_csum = VNET_HDR.pack(F_NEEDS_CSUM, GSO_NONE, 0, 0, csum_start,
                                           UDP_CSUM_OFFSET, 0) if vnet_hdr else b""


class Link:
    """Frames in (demux) and out (the queue), and the MACs of the virtual hosts."""

    def __init__(self, config: Any, counters: defaultdict[str, int], *, vnet_hdr: bool,
                 offload: bool) -> None:
        self.counters = counters
        self.vnet_hdr = vnet_hdr
        self.offload = offload and vnet_hdr
        self.gw_mac: bytes = config.gateway_mac
        # IP address (4 or 16 bytes) -> MAC of each virtual host (the neighbour layers add
        # the IPv6 ones)
        self.virtual_macs: dict[bytes, bytes] = {config.gateway.packed: config.gateway_mac,
                                                 config.dns.packed: config.dns_mac}
        self.guest_mac: bytes | None = config.guest_mac   # set by neighbours when learned
        self.frames: list[Frame] = []
        self.ipv4_input: IpInput = _ignore_ip
        self.ipv6_input: IpInput = self._ipv6_off
        self.arp_input: ArpInput = _ignore_arp
        self.v4 = IpFamily(ETHERTYPE_IPV4, IPV4_HLEN, build_ipv4_header, ICMP_QUOTE_MAX, vnet_hdr)
        self.v6 = IpFamily(ETHERTYPE_IPV6, IPV6_HLEN, build_ipv6_header, ICMPV6_QUOTE_MAX,
                           vnet_hdr)
        self.vnet_plain = bytes(VNET_HDR_LEN) if vnet_hdr else b""
        self.vnet_csum = self.v4.vnet_tcp_csum
        self.vnet_udp_csum = self.v4.vnet_udp_csum

    def family(self, ip: bytes) -> IpFamily:
        """The family of a packed address (asked once per flow, never per packet)."""
        return self.v6 if len(ip) == 16 else self.v4

    def receive_frame(self, frame: bytes | memoryview, now: float) -> None:
        """Take one frame read from the TAP (with its virtio header when `vnet_hdr`)."""
        c = self.counters
        c["rx.frames"] += 1
        mv = memoryview(frame)
        try:
            verify = True
            if self.vnet_hdr:
                verify = not checksum_trusted(mv)
                mv = mv[VNET_HDR_LEN:]
            dst_mac, src_mac, ethertype = parse_eth(mv)
            if ethertype == ETHERTYPE_IPV4:
                self.ipv4_input(mv[ETH_HLEN:], src_mac, verify, now)
            elif ethertype == ETHERTYPE_IPV6:
                self.ipv6_input(mv[ETH_HLEN:], src_mac, verify, now)
            elif ethertype == ETHERTYPE_ARP:
                self.arp_input(mv[ETH_HLEN:], src_mac)
            else:
                c["rx.drop.ethertype"] += 1
        except MalformedPacket as e:
            c["rx.drop." + e.reason] += 1

    def _ipv6_off(self, mv: memoryview, src_mac: bytes, verify: bool, now: float) -> None:
        self.counters["ipv6.rx.drop.off"] += 1

    def eth_prefix(self, dst_mac: bytes, src_mac: bytes | None = None,
                   ethertype: int = ETHERTYPE_IPV4) -> bytes:
        """The Ethernet header of an IP frame to `dst_mac` (from the gateway by default)."""
        return ETH_HDR.pack(dst_mac, src_mac or self.gw_mac, ethertype)

    def send_arp(self, dst_mac: bytes, src_mac: bytes, arp: bytes) -> None:
        self.frames.append(self.vnet_plain + ETH_HDR.pack(dst_mac, src_mac, ETHERTYPE_ARP) + arp)

    def send_ip(self, src: bytes, dst: bytes, proto: int, payload: bytes, ttl: int = 64,
                df: bool = True) -> None:
        """One IP packet to the guest, from the MAC of `src` if it is a virtual host. The
        family follows the addresses (`ttl` is the hop limit of an IPv6 packet; IPv6 has no
        fragmenting routers, so `df` means nothing there)."""
        if len(src) == 16:
            self.send_ip6(src, dst, proto, payload, ttl)
            return
        mac = self.guest_mac
        if mac is None:
            self.counters["tx.drop.no_guest_mac"] += 1
            return
        src_mac = self.virtual_macs.get(src, self.gw_mac)
        ip = build_ipv4_header(src, dst, proto, len(payload), ttl=ttl, df=df)
        self.frames.append(self.vnet_plain + ETH_HDR.pack(mac, src_mac, ETHERTYPE_IPV4) + ip
                           + payload)

    def send_ip6(self, src: bytes, dst: bytes, proto: int, payload: bytes, hop_limit: int = 64,
                 dst_mac: bytes | None = None) -> None:
        """One IPv6 packet to the guest (`dst_mac`: the guest's by default; a multicast
        destination goes to its multicast MAC)."""
        if dst_mac is None:
            if dst[0] == 0xFF:
                dst_mac = multicast_mac(dst)
            else:
                dst_mac = self.guest_mac
                if dst_mac is None:
                    self.counters["tx.drop.no_guest_mac"] += 1
                    return
        src_mac = self.virtual_macs.get(src, self.gw_mac)
        ip = build_ipv6_header(src, dst, proto, len(payload), hop_limit)
        self.frames.append(self.vnet_plain + ETH_HDR.pack(dst_mac, src_mac, ETHERTYPE_IPV6) + ip
                           + payload)
