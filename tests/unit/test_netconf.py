"""netconf's sysctls for the sandbox interface: IPv6, the neighbour queue (the ioctl part runs in
tests/netns)."""

from __future__ import annotations

import os

from slirpy import netconf
from slirpy.config import build_net_config


def test_ipv6_on_turns_off_dad_and_router_advertisements_before_up():
    net = build_net_config()
    assert net.ipv6
    assert netconf.ipv6_sysctls(net) == {"accept_dad": "0", "accept_ra": "0"}
    assert netconf.ipv6_sysctls(net, hide_ipv6=True) == {"accept_dad": "0", "accept_ra": "0"}


def test_ipv6_off_touches_nothing_unless_asked_to_hide_it():
    net = build_net_config(ipv6=False)
    assert netconf.ipv6_sysctls(net) == {}
    assert netconf.ipv6_sysctls(net, hide_ipv6=True) == {"disable_ipv6": "1"}


def test_set_ipv6_sysctls_writes_each_value(tmp_path):
    conf = tmp_path / "tap0"
    conf.mkdir()
    for name in ("accept_dad", "accept_ra"):
        (conf / name).write_text("1\n")
    assert netconf.set_ipv6_sysctls("tap0", {"accept_dad": "0", "accept_ra": "0"}, str(tmp_path)) == []
    assert (conf / "accept_dad").read_text() == "0"
    assert (conf / "accept_ra").read_text() == "0"


def test_set_ipv6_sysctls_without_kernel_ipv6_is_nothing_to_do(tmp_path):
    assert netconf.set_ipv6_sysctls("tap0", {"disable_ipv6": "1"}, str(tmp_path)) == []
    assert not (tmp_path / "tap0").exists()


def test_set_ipv6_sysctls_names_what_it_could_not_set(tmp_path):
    conf = tmp_path / "tap0"
    conf.mkdir()
    (conf / "accept_ra").write_text("1\n")
    (conf / "accept_dad").mkdir()            # opening it for writing fails: EISDIR
    problems = netconf.set_ipv6_sysctls("tap0", {"accept_dad": "0", "accept_ra": "0"}, str(tmp_path))
    assert problems == ["cannot set net.ipv6.conf.tap0.accept_dad=0: Is a directory"]
    assert (conf / "accept_ra").read_text() == "0"
    assert os.path.isdir(conf / "accept_dad")


def _neigh(root, family: str):
    d = root / family / "neigh" / "tap0"
    d.mkdir(parents=True)
    (d / "unres_qlen_bytes").write_text("212992\n")
    return d / "unres_qlen_bytes"


def test_unres_qlen_is_raised_for_each_family_in_use(tmp_path):
    v4, v6 = _neigh(tmp_path, "ipv4"), _neigh(tmp_path, "ipv6")
    assert netconf.set_unres_qlen("tap0", False, root=str(tmp_path)) == []
    assert v4.read_text() == str(4 << 20) and v6.read_text() == "212992\n"
    assert netconf.set_unres_qlen("tap0", True, root=str(tmp_path)) == []
    assert v6.read_text() == str(4 << 20)


def test_unres_qlen_that_cannot_be_set_is_a_warning(tmp_path):
    assert netconf.set_unres_qlen("tap0", False, root=str(tmp_path)) == [
        "cannot set net.ipv4.neigh.tap0.unres_qlen_bytes=4194304: No such file or directory"]


GUEST6 = bytes.fromhex("fd000000000000000000000000000100")


def if_inet6_text(flags: int, ifname: str = "tap0") -> str:
    # What the kernel prints: lo's ::1, the link-local, then the guest's address with `flags`.
    return ("00000000000000000000000000000001 01 80 10 80       lo\n"
            "fe8000000000000000aabbfffeccddee 02 40 20 80     tap0\n"
            f"fd000000000000000000000000000100 02 40 00 {flags:02x} {ifname:>8}\n")


def test_ipv6_address_flags_reads_the_line_of_that_address_and_interface():
    text = if_inet6_text(0xc0)
    assert netconf.ipv6_address_flags(text, "tap0", GUEST6) == 0xc0
    assert netconf.ipv6_address_flags(text, "eth0", GUEST6) is None
    assert netconf.ipv6_address_flags(text, "tap0", bytes(15) + b"\x02") is None
    assert netconf.ipv6_address_flags("garbage\n" + "x " * 6, "tap0", GUEST6) is None


def test_wait_ipv6_ready_returns_once_the_address_is_no_longer_tentative(tmp_path):
    import threading
    import time

    path = tmp_path / "if_inet6"
    path.write_text(if_inet6_text(netconf.IFA_F_TENTATIVE | 0x80))
    ready = threading.Timer(0.05, lambda: path.write_text(if_inet6_text(0x80)))
    start = time.monotonic()
    ready.start()
    try:
        assert netconf.wait_ipv6_ready("tap0", GUEST6, timeout=10, path=str(path)) == []
    finally:
        ready.cancel()
    assert 0.04 < time.monotonic() - start < 5


def test_wait_ipv6_ready_at_once_when_ready(tmp_path):
    path = tmp_path / "if_inet6"
    path.write_text(if_inet6_text(0x80))
    assert netconf.wait_ipv6_ready("tap0", GUEST6, timeout=0, path=str(path)) == []


def test_wait_ipv6_ready_gives_up_with_a_warning(tmp_path):
    path = tmp_path / "if_inet6"
    path.write_text(if_inet6_text(netconf.IFA_F_TENTATIVE | 0x80))
    [warning] = netconf.wait_ipv6_ready("tap0", GUEST6, timeout=0.05, path=str(path))
    assert "still tentative after 0.05 s" in warning
    path.write_text(if_inet6_text(netconf.IFA_F_DADFAILED | 0x80))
    [warning] = netconf.wait_ipv6_ready("tap0", GUEST6, path=str(path))
    assert "failed duplicate address detection" in warning
    path.write_text(if_inet6_text(0x80, ifname="eth0"))
    [warning] = netconf.wait_ipv6_ready("tap0", GUEST6, path=str(path))
    assert "missing" in warning
    [warning] = netconf.wait_ipv6_ready("tap0", GUEST6, path=str(tmp_path / "none"))
    assert warning.startswith("cannot read")
