"""virtio-net header, Ethernet and ARP: golden bytes, round trips, bad lengths."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from slirpy.tcpip.wire import arp, ethernet, virtio
from slirpy.tcpip.wire.arp import ArpPacket
from slirpy.tcpip.errors import MalformedPacket
from slirpy.tcpip.wire.ethernet import EthernetHeader, mac_from_str, mac_to_str
from slirpy.tcpip.wire.virtio import VirtioNetHeader

SETTINGS = settings(database=None)

# Frames built once with scapy 2.6 (Ether()/ARP()), pasted as hex.
ARP_REQUEST_FRAME = bytes.fromhex(
    "ffffffffffff020000000002080600010800060400010200000000020a000264"
    "0000000000000a000202"
)
ARP_REPLY_FRAME = bytes.fromhex(
    "02000000000252550a0002020806000108000604000252550a0002020a000202"
    "0200000000020a000264"
)
GUEST_MAC = bytes.fromhex("020000000002")
HOST_MAC = bytes.fromhex("52550a000202")

# What the kernel hands us for a TSO super-frame at MTU 1500 (DESIGN.md §3):
# NEEDS_CSUM, TCPV4, hdr_len 66 (14+20+32), gso_size 1448, csum_start 34, csum_offset 16.
VNET_TSO = bytes.fromhex("01014200a805220010000000")


# ---------------------------------------------------------------- virtio

def test_virtio_golden_tso_header():
    h = VirtioNetHeader.parse(VNET_TSO + b"frame follows")
    assert h == VirtioNetHeader(virtio.F_NEEDS_CSUM, virtio.GSO_TCPV4, 66, 1448, 34, 16, 0)
    assert h.needs_csum and h.gso_kind == virtio.GSO_TCPV4
    assert h.pack() == VNET_TSO
    assert virtio.VNET_HDR.size == virtio.VNET_HDR_LEN == 12


def test_virtio_zero_header():
    h = VirtioNetHeader.parse(virtio.ZERO_HEADER)
    assert h == VirtioNetHeader(0, virtio.GSO_NONE, 0, 0, 0, 0)
    assert h.pack() == virtio.ZERO_HEADER == bytes(12)
    assert not h.needs_csum


def test_virtio_fields_are_little_endian():
    h = VirtioNetHeader(2, virtio.GSO_UDP_L4, 0x0102, 0x0304, 0x0506, 0x0708, 0x090A)
    assert h.pack() == bytes.fromhex("0205" "0201" "0403" "0605" "0807" "0a09")


@pytest.mark.parametrize("n", range(12))
def test_virtio_short(n):
    with pytest.raises(MalformedPacket) as e:
        VirtioNetHeader.parse(VNET_TSO[:n])
    assert e.value.reason == "virtio.short"


@pytest.mark.parametrize("gso_type", [2, 6, 7, 0x40, 0x7F, 0x80, 0x82, 0xFF])
def test_virtio_bad_gso_type(gso_type):
    buf = bytes((0, gso_type)) + bytes(10)
    with pytest.raises(MalformedPacket) as e:
        VirtioNetHeader.parse(buf)
    assert e.value.reason == "virtio.bad_gso_type"


@pytest.mark.parametrize("gso_type", [0, 1, 3, 4, 5, 0x81, 0x83, 0x84, 0x85])
def test_virtio_good_gso_types(gso_type):
    assert VirtioNetHeader.parse(bytes((1, gso_type)) + bytes(10)).gso_type == gso_type


u16 = st.integers(0, 0xFFFF)
gso_types = st.sampled_from([0, 1, 3, 4, 5, 0x81, 0x83, 0x84, 0x85])


@SETTINGS
@given(st.integers(0, 255), gso_types, u16, u16, u16, u16, u16)
def test_virtio_roundtrip(flags, gso, hl, gs, cs, co, nb):
    h = VirtioNetHeader(flags, gso, hl, gs, cs, co, nb)
    raw = h.pack()
    assert len(raw) == 12
    assert VirtioNetHeader.parse(raw) == h
    assert VirtioNetHeader.parse(memoryview(raw + b"x" * 5)) == h


# ---------------------------------------------------------------- ethernet

def test_ethernet_golden():
    h = EthernetHeader.parse(ARP_REQUEST_FRAME)
    assert h.dst == ethernet.BROADCAST_MAC and h.is_broadcast and h.is_multicast
    assert h.src == GUEST_MAC
    assert h.ethertype == ethernet.ETHERTYPE_ARP
    assert h.pack() == ARP_REQUEST_FRAME[:14]
    r = EthernetHeader.parse(memoryview(ARP_REPLY_FRAME))
    assert (r.dst, r.src, r.ethertype) == (GUEST_MAC, HOST_MAC, 0x0806)
    assert not r.is_multicast


@pytest.mark.parametrize("n", range(14))
def test_ethernet_short(n):
    with pytest.raises(MalformedPacket) as e:
        EthernetHeader.parse(ARP_REQUEST_FRAME[:n])
    assert e.value.reason == "eth.short"


def test_ethernet_pack_rejects_bad_mac():
    with pytest.raises(ValueError):
        EthernetHeader(b"\x01" * 5, GUEST_MAC, 0x0800).pack()


macs = st.binary(min_size=6, max_size=6)


@SETTINGS
@given(macs, macs, u16)
def test_ethernet_roundtrip(dst, src, et):
    h = EthernetHeader(dst, src, et)
    assert EthernetHeader.parse(h.pack()) == h


def test_mac_strings():
    assert mac_to_str(GUEST_MAC) == "02:00:00:00:00:02"
    assert mac_to_str(memoryview(HOST_MAC)) == "52:55:0a:00:02:02"
    assert mac_from_str("52:55:0A:00:02:02") == HOST_MAC
    assert mac_from_str("52-55-0a-00-02-02") == HOST_MAC


@pytest.mark.parametrize("bad", [
    "", "52:55:0a:00:02", "52:55:0a:00:02:02:03", "52:55:0a:00:02:0g", "52:55:0a:00:02:",
    "525:5:0a:00:02:02", "52550a000202", " 52:55:0a:00:02:02", "52:55:0a:00:02:2",
    "+2:55:0a:00:02:02", "52:55-0a:00:02:02", None, b"52:55:0a:00:02:02",
])
def test_mac_from_str_rejects(bad):
    with pytest.raises(ValueError):
        mac_from_str(bad)


@SETTINGS
@given(macs)
def test_mac_string_roundtrip(mac):
    assert mac_from_str(mac_to_str(mac)) == mac


@SETTINGS
@given(st.text(max_size=24))
def test_mac_from_str_only_valueerror(text):
    try:
        mac = mac_from_str(text)
    except ValueError:
        return
    assert len(mac) == 6 and mac_to_str(mac) == text.lower().replace("-", ":")


# ---------------------------------------------------------------- arp

def test_arp_golden_request():
    p = ArpPacket.parse(memoryview(ARP_REQUEST_FRAME)[14:])
    assert p == ArpPacket(arp.OP_REQUEST, GUEST_MAC, bytes((10, 0, 2, 100)), bytes(6), bytes((10, 0, 2, 2)))
    assert not p.is_gratuitous
    assert p.pack() == ARP_REQUEST_FRAME[14:]
    assert len(p.pack()) == arp.ARP_LEN == 28


def test_arp_golden_reply():
    p = ArpPacket.parse(ARP_REPLY_FRAME[14:])
    assert (p.op, p.sender_mac, p.sender_ip, p.target_mac, p.target_ip) == (
        arp.OP_REPLY, HOST_MAC, bytes((10, 0, 2, 2)), GUEST_MAC, bytes((10, 0, 2, 100)))
    frame = EthernetHeader(GUEST_MAC, HOST_MAC, ethernet.ETHERTYPE_ARP).pack() + p.pack()
    assert frame == ARP_REPLY_FRAME


def test_arp_padding_allowed():
    # Ethernet pads ARP to the 60-byte minimum frame; the 18 trailing zero bytes are ignored.
    padded = ARP_REQUEST_FRAME[14:] + bytes(18)
    assert ArpPacket.parse(padded) == ArpPacket.parse(ARP_REQUEST_FRAME[14:])


@pytest.mark.parametrize("n", range(28))
def test_arp_short(n):
    with pytest.raises(MalformedPacket) as e:
        ArpPacket.parse(ARP_REQUEST_FRAME[14:14 + n])
    assert e.value.reason == "arp.short"


@pytest.mark.parametrize("offset,value", [
    (0, b"\x00\x06"),   # htype IEEE 802
    (2, b"\x86\xdd"),   # ptype IPv6
    (4, b"\x08"),       # hlen
    (5, b"\x10"),       # plen
])
def test_arp_unsupported(offset, value):
    body = bytearray(ARP_REQUEST_FRAME[14:])
    body[offset:offset + len(value)] = value
    with pytest.raises(MalformedPacket) as e:
        ArpPacket.parse(body)
    assert e.value.reason == "arp.unsupported"


@pytest.mark.parametrize("op", [0, 3, 4, 8, 0x0100, 0xFFFF])
def test_arp_bad_op(op):
    body = bytearray(ARP_REQUEST_FRAME[14:])
    body[6:8] = op.to_bytes(2, "big")
    with pytest.raises(MalformedPacket) as e:
        ArpPacket.parse(body)
    assert e.value.reason == "arp.bad_op"


ips = st.binary(min_size=4, max_size=4)


@SETTINGS
@given(st.sampled_from([arp.OP_REQUEST, arp.OP_REPLY]), macs, ips, macs, ips)
def test_arp_roundtrip(op, sha, spa, tha, tpa):
    p = ArpPacket(op, sha, spa, tha, tpa)
    assert ArpPacket.parse(p.pack()) == p
    assert p.is_gratuitous == (spa == tpa)


def test_arp_pack_rejects_bad_lengths():
    with pytest.raises(ValueError):
        ArpPacket(1, GUEST_MAC, b"\x0a\x00\x02", bytes(6), bytes(4)).pack()
