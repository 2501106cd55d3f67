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


def test_wait_ipv6_ready_at_once_for_an_address_that_is_ready():
    assert netconf.wait_ipv6_ready("::1", timeout=0) == []


def test_wait_ipv6_ready_gives_up_with_a_warning():
    import time

    start = time.monotonic()
    [warning] = netconf.wait_ipv6_ready("2001:db8::dead", timeout=0.05)   # on no interface here
    assert "2001:db8::dead is still tentative after 0.05 s" in warning
    assert 0.05 <= time.monotonic() - start < 5
    [warning] = netconf.wait_ipv6_ready("ff02::1", timeout=0.05)   # multicast: another error
    assert warning.startswith("cannot bind to the IPv6 address ff02::1: ")
