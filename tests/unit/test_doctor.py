"""doctor: the pure parts (sysctl diagnosis, ping range, subid files, explain, report exit code).
The probe itself (fork + unshare + TAP) is exercised by `slirpy doctor` and tests/netns."""

from __future__ import annotations

import errno
import io
import os

import pytest

from slirpy import doctor
from slirpy.doctor import Finding, NamespaceError, explain, ping_range_ok, subid_range, userns_blocker
from slirpy.netconf import NetconfError
from slirpy.tap import TUN_PATH, TapError

ALL_OK = {"kernel.unprivileged_userns_clone": "1", "user.max_user_namespaces": "15000",
          "kernel.apparmor_restrict_unprivileged_userns": "0"}
ABSENT = {"kernel.unprivileged_userns_clone": None, "user.max_user_namespaces": "15000",
          "kernel.apparmor_restrict_unprivileged_userns": None}


def test_read_sysctl(tmp_path):
    (tmp_path / "net" / "ipv4").mkdir(parents=True)
    (tmp_path / "net" / "ipv4" / "ping_group_range").write_text("0\t2147483647\n")
    assert doctor.read_sysctl("net.ipv4.ping_group_range", root=str(tmp_path)) == "0\t2147483647"
    assert doctor.read_sysctl("kernel.no_such_knob", root=str(tmp_path)) is None


@pytest.mark.parametrize("values,err,fix", [
    (dict(ALL_OK, **{"kernel.unprivileged_userns_clone": "0"}), errno.EPERM, doctor.FIX_USERNS_CLONE),
    (dict(ALL_OK, **{"user.max_user_namespaces": "0"}), errno.ENOSPC, doctor.FIX_MAX_USERNS),
    (dict(ALL_OK, **{"kernel.apparmor_restrict_unprivileged_userns": "1"}), errno.EPERM, doctor.FIX_APPARMOR),
    (dict(ALL_OK, **{"kernel.apparmor_restrict_unprivileged_userns": "1"}), None, doctor.FIX_APPARMOR),
    (ABSENT, errno.ENOSPC, doctor.FIX_MAX_USERNS),
])
def test_userns_blocker_names_the_setting(values, err, fix):
    detail, got = userns_blocker(values, err)
    assert got == fix
    assert detail


def test_userns_blocker_none_when_settings_allow():
    assert userns_blocker(ALL_OK) is None
    assert userns_blocker(ABSENT, errno.EPERM) is None


@pytest.mark.parametrize("text,gids,ok", [
    ("0\t2147483647", {1001}, True), ("1\t0", {1001}, False), ("1000 1001", {1001}, True),
    ("1000 1001", {1002, 5}, False), ("1000 1001", {7, 1000}, True), (None, {0}, False), ("junk", {0}, False),
])
def test_ping_range(text, gids, ok):
    assert ping_range_ok(text, gids) is ok


def test_subid_range(tmp_path):
    f = tmp_path / "subuid"
    f.write_text("alice:100000:65536\nbob:x:1\n1003:300000:1000\ncarol:400000:0\n")
    assert subid_range(str(f), "alice", 1001) == (100000, 65536)
    assert subid_range(str(f), "dave", 1003) == (300000, 1000)      # numeric entry
    assert subid_range(str(f), "bob", 1002) is None                  # malformed
    assert subid_range(str(f), "carol", 1004) is None                # empty range
    assert subid_range(str(tmp_path / "missing"), "alice", 1001) is None


@pytest.mark.parametrize("err,fix", [(errno.EACCES, doctor.FIX_TUN_PERMS), (errno.EPERM, doctor.FIX_TUN_PERMS),
                                     (errno.ENOENT, doctor.FIX_TUN_MISSING), (errno.ENODEV, doctor.FIX_TUN_MISSING)])
def test_explain_tun(err, fix):
    text = f"cannot open {TUN_PATH}: {os.strerror(err)}"
    assert explain(TapError(err, text, TUN_PATH), ALL_OK) == f"{text} (fix: {fix})"


def test_explain_plain_oserror_on_tun_path():
    msg = explain(PermissionError(errno.EACCES, "Permission denied", TUN_PATH), ALL_OK)
    assert msg.endswith(f"(fix: {doctor.FIX_TUN_PERMS})")


def test_explain_namespace_error():
    exc = NamespaceError(errno.EPERM, "cannot create namespaces (unshare user+net+mount+pid): Operation not permitted")
    blocked = dict(ALL_OK, **{"kernel.unprivileged_userns_clone": "0"})
    msg = explain(exc, blocked)
    assert msg.startswith("cannot create namespaces")
    assert msg.endswith(f"(fix: {doctor.FIX_USERNS_CLONE})") and "\n" not in msg
    assert "slirpy doctor" in explain(exc, ALL_OK)       # no known cause: point at the report


def test_explain_tunsetiff_eperm_under_apparmor():
    exc = TapError(errno.EPERM, "cannot create TAP 'tap0' (TUNSETIFF): Operation not permitted")
    msg = explain(exc, dict(ALL_OK, **{"kernel.apparmor_restrict_unprivileged_userns": "1"}))
    assert msg.endswith(f"(fix: {doctor.FIX_APPARMOR})")
    assert explain(exc, ALL_OK) == "cannot create TAP 'tap0' (TUNSETIFF): Operation not permitted"


def test_explain_other_errors_are_one_line():
    assert explain(NetconfError("cannot add address: File exists")) == "cannot add address: File exists"
    assert explain(FileNotFoundError(errno.ENOENT, "No such file or directory", "/x")) == \
        "/x: No such file or directory"
    assert explain(RuntimeError("two\nlines")) == "two lines"
    assert explain(RuntimeError()) == "RuntimeError"


def test_print_report_exit_code(monkeypatch):
    findings = [Finding("a", True, True, "fine", ""), Finding("b", False, False, "meh", "do b")]
    monkeypatch.setattr(doctor, "run_checks", lambda: list(findings))
    out = io.StringIO()
    assert doctor.print_report(out) == 0
    assert "[warn] b: meh" in out.getvalue() and "fix: do b" in out.getvalue()
    findings.append(Finding("c", False, True, "broken", "do c"))
    out = io.StringIO()
    assert doctor.print_report(out) == 1
    assert "[FAIL] c: broken" in out.getvalue() and "fix: do c" in out.getvalue()


IF_INET6 = """\
fd000000000000000000000000000002 04 40 00 82     eth0
00000000000000000000000000000001 01 80 10 80       lo
fe8000000000000000fc00fffe000001 04 40 20 80     eth0
"""
ROUTE_DEFAULT = ("00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
                 "fd000000000000000000000000000001 00000400 00000003 00000000 00000003     eth0\n")
ROUTE_UNREACHABLE = ("00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
                     "00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo\n")
ROUTE_LOCAL = ("fd000000000000000000000000000000 40 00000000000000000000000000000000 00 "
               "00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n")


def test_global_ipv6_addresses_skip_loopback_and_link_local():
    assert doctor.global_ipv6_addresses(IF_INET6) == [("fd00::2", "eth0")]
    assert doctor.global_ipv6_addresses("garbage\n\n") == []


def test_ipv6_default_route_ignores_the_kernels_unreachable_one():
    assert doctor.ipv6_default_route(ROUTE_LOCAL + ROUTE_DEFAULT) == "eth0"
    assert doctor.ipv6_default_route(ROUTE_LOCAL + ROUTE_UNREACHABLE) is None
    assert doctor.ipv6_default_route("") is None


def test_ipv6_finding_says_what_the_sandbox_gets():
    ok = doctor.ipv6_finding(IF_INET6, ROUTE_DEFAULT, 0)
    assert (ok.ok, ok.required) == (True, False)
    assert ok.detail == "fd00::2 on eth0, default route via eth0; ICMPv6 ping sockets allowed"
    no_ping = doctor.ipv6_finding(IF_INET6, ROUTE_DEFAULT, errno.EACCES)
    assert "ping -6 from the sandbox will not work" in no_ping.detail and no_ping.fix == doctor.FIX_PING
    no_route = doctor.ipv6_finding(IF_INET6, ROUTE_UNREACHABLE, 0)
    assert not no_route.ok and "no IPv6 default route" in no_route.detail
    lo_only = doctor.ipv6_finding(IF_INET6.splitlines()[1] + "\n", "", 0)
    assert not lo_only.ok and lo_only.detail.startswith("no global IPv6 address on this host; the "
                                                        "sandbox's connections to IPv6 addresses fail at once")
    off = doctor.ipv6_finding(None, "", errno.EAFNOSUPPORT)
    assert not off.ok and not off.required and "IPv6 turned off" in off.detail and "--no-ipv6" in off.fix


def test_fd_limit_finding_says_how_many_flows_fit():
    import resource

    from slirpy.config import Limits
    from slirpy.hostres import fit_limits_to_fds
    low = doctor.fd_limit_finding(1024, 1024)
    expect = fit_limits_to_fds(Limits(), 1024)
    assert not low.ok and not low.required and "limits.conf" in low.fix
    assert f"room for {expect.max_tcp_flows} TCP flows" in low.detail and expect.max_tcp_flows < 1024
    high = doctor.fd_limit_finding(1024, 524288)       # the soft limit is raised to the hard one
    assert high.ok and high.fix == "" and "room for 65536 TCP flows" in high.detail
    assert "1024 soft / 524288 hard" in high.detail
    inf = resource.RLIM_INFINITY
    assert doctor.fd_limit_finding(inf, inf).ok and "unlimited soft / unlimited hard" in \
        doctor.fd_limit_finding(inf, inf).detail
    edge = doctor.fd_limit_finding(4096, 4096)          # 4096 fds leave fewer than 4096 TCP flows
    assert not edge.ok


def test_nofile_target_is_what_raise_nofile_limit_keeps():
    import resource

    from slirpy.hostres import nofile_target
    inf = resource.RLIM_INFINITY
    assert nofile_target(1024, 20000) == 20000          # raised to the hard limit
    assert nofile_target(20000, 20000) == 20000
    assert nofile_target(1024, inf) == 1 << 20          # unlimited counts as 2**20
    assert nofile_target(inf, inf) == 1 << 20
    assert nofile_target(2 << 20, inf) == 1 << 20
