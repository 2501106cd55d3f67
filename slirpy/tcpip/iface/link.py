"""The link layer: virtio-net header, Ethernet, ethertype demux, and the frame queue out.

Why a module: every frame in and out crosses it, whatever the protocol above. In: strip the
virtio header (it tells whether the checksum still needs verifying), parse Ethernet, hand
IPv4 and ARP to their handlers (wired by the Stack: this module imports no layer above it).
Out: `frames` is the queue `Stack.frames_to_send` returns; `send_ip` frames one IP packet to
the guest from a virtual host's MAC (the gateway's, or the DNS address's).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable

from ..errors import MalformedPacket
from ..wire.ethernet import ETH_HDR, ETH_HLEN, ETHERTYPE_ARP, ETHERTYPE_IPV4
from ..wire.ethernet import parse_fields as parse_eth
from ..wire.ipv4 import IPV4_HLEN
from ..wire.ipv4 import build_header as build_ipv4_header
from ..wire.virtio import F_NEEDS_CSUM, GSO_NONE, VNET_HDR, VNET_HDR_LEN, checksum_trusted

ETH_IP_HLEN = ETH_HLEN + IPV4_HLEN     # 34: csum_start of a transport header after plain IPv4

# A frame for the TAP: bytes, or a tuple of buffers for os.writev.
Frame = Any
IpInput = Callable[[memoryview, bytes, bool, float], None]
ArpInput = Callable[[memoryview, bytes], None]


def _ignore_ip(mv: memoryview, src_mac: bytes, verify: bool, now: float) -> None:
    return None


def _ignore_arp(mv: memoryview, src_mac: bytes) -> None:
    return None


class Link:
    """Frames in (demux) and out (the queue), and the MACs of the virtual hosts."""

    def __init__(self, config: Any, counters: defaultdict[str, int], *, vnet_hdr: bool,
                 offload: bool) -> None:
        self.counters = counters
        self.vnet_hdr = vnet_hdr
        self.offload = offload and vnet_hdr
        self.gw_mac: bytes = config.gateway_mac
        self.virtual_macs: dict[bytes, bytes] = {config.gateway.packed: config.gateway_mac,
                                                 config.dns.packed: config.dns_mac}
        self.guest_mac: bytes | None = config.guest_mac   # set by neighbours when learned
        self.frames: list[Frame] = []
        self.ipv4_input: IpInput = _ignore_ip
        self.arp_input: ArpInput = _ignore_arp
        if vnet_hdr:
            self.vnet_plain = bytes(VNET_HDR_LEN)
            # A complete frame whose TCP (UDP) checksum we leave to the kernel.
            self.vnet_csum = VNET_HDR.pack(F_NEEDS_CSUM, GSO_NONE, 0, 0, ETH_IP_HLEN, 16, 0)
            self.vnet_udp_csum = VNET_HDR.pack(F_NEEDS_CSUM, GSO_NONE, 0, 0, ETH_IP_HLEN, 6, 0)
        else:
            self.vnet_plain = self.vnet_csum = self.vnet_udp_csum = b""

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
            elif ethertype == ETHERTYPE_ARP:
                self.arp_input(mv[ETH_HLEN:], src_mac)
            else:
                c["rx.drop.ethertype"] += 1
        except MalformedPacket as e:
            c["rx.drop." + e.reason] += 1

    def eth_prefix(self, dst_mac: bytes, src_mac: bytes | None = None) -> bytes:
        """The Ethernet header of an IPv4 frame to `dst_mac` (from the gateway by default)."""
        return ETH_HDR.pack(dst_mac, src_mac or self.gw_mac, ETHERTYPE_IPV4)

    def send_arp(self, dst_mac: bytes, src_mac: bytes, arp: bytes) -> None:
        self.frames.append(self.vnet_plain + ETH_HDR.pack(dst_mac, src_mac, ETHERTYPE_ARP) + arp)

    def send_ip(self, src: bytes, dst: bytes, proto: int, payload: bytes, ttl: int = 64,
                df: bool = True) -> None:
        """One IP packet to the guest, from the MAC of `src` if it is a virtual host."""
        mac = self.guest_mac
        if mac is None:
            self.counters["tx.drop.no_guest_mac"] += 1
            return
        src_mac = self.virtual_macs.get(src, self.gw_mac)
        ip = build_ipv4_header(src, dst, proto, len(payload), ttl=ttl, df=df)
        self.frames.append(self.vnet_plain + ETH_HDR.pack(mac, src_mac, ETHERTYPE_IPV4) + ip
                           + payload)
