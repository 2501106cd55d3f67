"""resolv.conf parsing, the sandbox's copy, re-reading on change, and --dns-upstream parsing."""

from __future__ import annotations

import os

import pytest

from slirpy.config import ConfigError, parse_dns_upstream
from slirpy.resolvconf import FALLBACK_UPSTREAM, ResolvConf, parse, sandbox_text

SYSTEMD_STUB = """\
# This is /run/systemd/resolve/stub-resolv.conf managed by man:systemd-resolved(8).
nameserver 127.0.0.53
options edns0 trust-ad
search corp.example lan
"""


def test_parse_systemd_stub():
    servers, keep = parse(SYSTEMD_STUB)
    assert servers == ["127.0.0.53"]
    assert keep == ["options edns0 trust-ad", "search corp.example lan"]


def test_parse_skips_comments_garbage_and_keeps_order():
    text = ("; comment\n#nameserver 192.0.2.1\nnameserver   192.0.2.53 # trailing\n"
            "nameserver not-an-ip\nnameserver\nnameserver 2001:db8::53\nnameserver fe80::1%eth0\n"
            "domain corp.test\nsortlist 130.155.160.0\nunknown words\n")
    servers, keep = parse(text)
    assert servers == ["192.0.2.53", "2001:db8::53", "fe80::1%eth0"]
    assert keep == ["domain corp.test"]


def test_sandbox_text_points_at_the_forwarder_with_the_hosts_search_lines():
    text = sandbox_text("10.0.2.3", ["search a.example", "options ndots:2"])
    lines = [l for l in text.splitlines() if not l.startswith("#")]
    assert lines == ["nameserver 10.0.2.3", "search a.example", "options ndots:2"]
    assert text.endswith("\n")
    assert parse(text)[0] == ["10.0.2.3"]


def test_sandbox_text_lists_the_ipv6_forwarder_after_the_ipv4_one():
    text = sandbox_text("10.0.2.3", ["search a.example"], "fd00::3")
    lines = [l for l in text.splitlines() if not l.startswith("#")]
    assert lines == ["nameserver 10.0.2.3", "nameserver fd00::3", "search a.example"]
    assert parse(text)[0] == ["10.0.2.3", "fd00::3"]


def test_resolv_conf_sandbox_text_with_and_without_ipv6(tmp_path):
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 192.0.2.1\nsearch corp.test\n")
    rc = ResolvConf(str(path))
    assert rc.sandbox_text("10.0.2.3").splitlines()[1:] == ["nameserver 10.0.2.3", "search corp.test"]
    assert rc.sandbox_text("10.0.2.3", "fd00::3").splitlines()[1:] == [
        "nameserver 10.0.2.3", "nameserver fd00::3", "search corp.test"]


def test_run_sandbox_gives_the_sandbox_both_forwarders_only_with_ipv6(tmp_path, monkeypatch):
    from slirpy import launch
    from slirpy.config import build_net_config
    from slirpy.sandbox import SandboxError

    host = tmp_path / "resolv.conf"
    host.write_text("nameserver 192.0.2.1\n")
    texts = []

    def fake_start(opts, meanwhile=None):
        texts.append(opts.resolv_conf_text)
        raise SandboxError("not started")

    monkeypatch.setattr("slirpy.sandbox.Sandbox.start", fake_start)
    for ipv6 in (None, False):
        net = build_net_config(resolv_conf=str(host), ipv6=ipv6, cidr6="fd12::/64")
        with pytest.raises(SystemExit):
            launch.run_sandbox(net, ["true"], quiet=True)
    with_v6, without = ([l for l in t.splitlines() if l.startswith("nameserver")] for t in texts)
    assert with_v6 == ["nameserver 10.0.2.3", "nameserver fd12::3"]
    assert without == ["nameserver 10.0.2.3"]


def test_reread_when_the_file_changes(tmp_path):
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 192.0.2.1\n")
    rc = ResolvConf(str(path))
    assert rc.upstream() == ("192.0.2.1", 53)
    assert rc.upstream() == ("192.0.2.1", 53)
    assert rc.reloads == 1                               # unchanged: not read again
    # Replaced by rename (as resolvconf, NetworkManager and systemd-resolved do).
    new = tmp_path / "resolv.conf.new"
    new.write_text("nameserver 192.0.2.2\nsearch x.example\n")
    os.replace(new, path)
    assert rc.upstream() == ("192.0.2.2", 53)
    assert "search x.example" in rc.sandbox_text("10.0.2.3")
    # Rewritten in place with a different size.
    path.write_text("nameserver 192.0.2.33\n")
    assert rc.upstream() == ("192.0.2.33", 53)
    assert rc.reloads == 3


def test_follows_a_symlink(tmp_path):
    target = tmp_path / "stub.conf"
    target.write_text(SYSTEMD_STUB)
    link = tmp_path / "resolv.conf"
    link.symlink_to(target)
    rc = ResolvConf(str(link))
    assert rc.upstream() == ("127.0.0.53", 53)
    other = tmp_path / "other.conf"
    other.write_text("nameserver 192.0.2.9\n")
    link.unlink()
    link.symlink_to(other)
    assert rc.upstream() == ("192.0.2.9", 53)


def test_missing_or_empty_file_falls_back_like_glibc(tmp_path):
    rc = ResolvConf(str(tmp_path / "absent"))
    assert rc.upstream() == FALLBACK_UPSTREAM == ("127.0.0.1", 53)
    assert rc.nameservers() == []
    path = tmp_path / "absent"
    path.write_text("nameserver 192.0.2.7\n")
    assert rc.upstream() == ("192.0.2.7", 53)


@pytest.mark.parametrize("value, expected", [
    ("192.0.2.53", ("192.0.2.53", 53)),
    ("192.0.2.53:5353", ("192.0.2.53", 5353)),
    ("127.0.0.53", ("127.0.0.53", 53)),
    ("2001:db8::1", ("2001:db8::1", 53)),
    ("[2001:db8::1]:5300", ("2001:db8::1", 5300)),
])
def test_parse_dns_upstream(value, expected):
    assert parse_dns_upstream(value) == expected


@pytest.mark.parametrize("value", ["", "dns.example", "192.0.2.1:0", "192.0.2.1:70000",
                                   "[2001:db8::1", "192.0.2.1:x", "[::1]x"])
def test_parse_dns_upstream_rejects(value):
    with pytest.raises(ConfigError):
        parse_dns_upstream(value)
