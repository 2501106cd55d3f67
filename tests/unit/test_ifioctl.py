"""ifioctl.py's structures, byte for byte (the netns test checks what the kernel makes of them),
and netconf's txqueuelen step without a kernel (a stand-in `ip`)."""

from __future__ import annotations

import os
import socket
import struct
import sys

import pytest

from slirpy import ifioctl, netconf

LONG = struct.calcsize("@L")          # 8 on 64-bit Linux, 4 on 32-bit


def test_ifreq_is_the_kernels_size():
    assert ifioctl.IFREQ_SIZE == (40 if LONG == 8 else 32)
    for raw in (ifioctl.ifreq_int("tap0", 1), ifioctl.ifreq_flags("tap0", 1),
                ifioctl.ifreq_addr("tap0", "10.0.2.100"), ifioctl.ifreq_hwaddr("tap0", bytes(6))):
        assert len(raw) == ifioctl.IFREQ_SIZE


def test_ifreq_int_and_flags_follow_the_name():
    raw = ifioctl.ifreq_int("tap0", 65520)
    assert raw[:16] == b"tap0" + bytes(12)
    assert struct.unpack_from("=i", raw, 16)[0] == 65520
    assert raw[20:] == bytes(len(raw) - 20)
    assert struct.unpack_from("=h", ifioctl.ifreq_flags("lo", 0x1043), 16)[0] == 0x1043


def test_ifreq_addr_is_a_sockaddr_in():
    raw = ifioctl.ifreq_addr("tap0", "10.0.2.100")
    assert struct.unpack_from("=H", raw, 16)[0] == socket.AF_INET
    assert raw[18:20] == b"\0\0"                       # port
    assert raw[20:24] == bytes([10, 0, 2, 100])        # network byte order
    assert raw[24:] == bytes(len(raw) - 24)
    assert ifioctl.sockaddr_in("255.255.255.0") == struct.pack("=H", socket.AF_INET) + b"\0\0" + b"\xff\xff\xff\0" + bytes(8)


def test_ifreq_hwaddr_is_an_ethernet_sockaddr():
    raw = ifioctl.ifreq_hwaddr("tap0", bytes.fromhex("02aabbccddee"))
    assert struct.unpack_from("=H", raw, 16)[0] == ifioctl.ARPHRD_ETHER
    assert raw[18:24] == bytes.fromhex("02aabbccddee")
    with pytest.raises(ValueError):
        ifioctl.ifreq_hwaddr("tap0", b"\x02")


def test_names_must_fit_ifnamsiz():
    assert ifioctl.ifreq_int("a" * 15, 0)[:15] == b"a" * 15
    for bad in ("", "a" * 16):
        with pytest.raises(ValueError):
            ifioctl.ifreq_int(bad, 0)


def test_rtentry_layout():
    if LONG != 8:
        pytest.skip("offsets below are those of 64-bit Linux")
    raw = ifioctl.rtentry_default4("10.0.2.2", 0x1234)
    assert len(raw) == 120                              # sizeof(struct rtentry) on x86_64/arm64
    dst, gw, mask = raw[8:24], raw[24:40], raw[40:56]
    flags = struct.unpack_from("=H", raw, 56)[0]
    dev = struct.unpack_from("=Q", raw, 88)[0]          # after pad2 (2+4), pad3 (8), pad4 (8), metric (2+6)
    assert dst == ifioctl.sockaddr_in("0.0.0.0") == mask
    assert gw == ifioctl.sockaddr_in("10.0.2.2")
    assert flags == ifioctl.RTF_UP | ifioctl.RTF_GATEWAY
    assert dev == 0x1234


def test_in6_ifreq_layout():
    raw = ifioctl.in6_ifreq("fd00::100", 64, 7)
    assert len(raw) == 24
    assert raw[:16] == socket.inet_pton(socket.AF_INET6, "fd00::100")
    assert struct.unpack_from("=Ii", raw, 16) == (64, 7)


def test_in6_rtmsg_layout():
    raw = ifioctl.in6_rtmsg_default("fd00::2", 9)
    assert len(raw) == (80 if LONG == 8 else 72)
    assert raw[:32] == bytes(32)                        # dst ::, src ::
    assert raw[32:48] == socket.inet_pton(socket.AF_INET6, "fd00::2")
    rtype, dst_len, src_len, metric = struct.unpack_from("=IHHI", raw, 48)
    assert (rtype, dst_len, src_len, metric) == (ifioctl.RTN_UNICAST, 0, 0, 0)   # 0: the kernel's 1024
    flags, ifindex = struct.unpack_from("=Ii", raw, len(raw) - 8)
    assert flags == ifioctl.RTF_UP | ifioctl.RTF_GATEWAY and ifindex == 9


def _fake_ip(tmp_path, body: str) -> str:
    path = tmp_path / "ip"
    path.write_text(f"#!{sys.executable}\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_set_txqueuelen_runs_ip_link_set(tmp_path):
    log = tmp_path / "argv"
    ip = _fake_ip(tmp_path, f"import sys; open({str(log)!r}, 'w').write(' '.join(sys.argv[1:]))")
    assert netconf.set_txqueuelen("tap0", 10000, (str(tmp_path / "missing"), ip)) == []
    assert log.read_text() == "link set dev tap0 txqueuelen 10000"


def test_set_txqueuelen_reports_what_ip_said(tmp_path):
    ip = _fake_ip(tmp_path, "import sys; sys.stderr.write('RTNETLINK answers: Operation not permitted\\n'); sys.exit(2)")
    assert netconf.set_txqueuelen("tap0", 10000, (ip,)) == [
        f"cannot set tap0 txqueuelen 10000: {ip} failed: RTNETLINK answers: Operation not permitted"]


def test_set_txqueuelen_without_ip(tmp_path):
    missing = str(tmp_path / "ip")
    assert netconf.set_txqueuelen("tap0", 10000, (missing,)) == [
        f"cannot set tap0 txqueuelen 10000: no `ip` command (iproute2) in {missing}"]
    assert not os.path.exists(missing)


def test_tap_header_length_is_the_cores():
    # tap.py keeps its own copy (importing the compiled core would cost start-up time)
    from slirpy import tap
    from slirpy.tcpip.wire import virtio
    assert tap.VNET_HDR_LEN == virtio.VNET_HDR_LEN == 12


def test_start_txqueuelen_returns_while_ip_runs(tmp_path):
    # `slirpy run` releases the command between the two halves: the first may not wait for `ip`,
    # which here cannot end before the test writes to the fifo it reads
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    log = tmp_path / "argv"
    ip = _fake_ip(tmp_path, f"import sys; open({str(fifo)!r}).read(); "
                            f"open({str(log)!r}, 'w').write(' '.join(sys.argv[1:]))")
    finish = netconf.start_txqueuelen("tap0", 10000, (ip,))
    assert not log.exists()
    with open(fifo, "w") as f:
        f.write("go")
    assert finish() == []
    assert log.read_text() == "link set dev tap0 txqueuelen 10000"
