"""`slirpy run`'s IPv6 options: what reaches the NetConfig, and one line + status 2 for a bad value.

The sandbox is never started: `run_sandbox` is replaced by a recorder.
"""

from __future__ import annotations

import ipaddress

import pytest
from click.testing import CliRunner

from slirpy import cli, config, runcmd


@pytest.fixture
def started(monkeypatch):
    """The NetConfigs `slirpy run` would have started a sandbox with."""
    configs = []

    def fake_run_sandbox(net, argv, **kw):
        configs.append(net)
        return 0

    monkeypatch.setattr(runcmd, "run_sandbox", fake_run_sandbox)
    return configs


def run(*args: str):
    return CliRunner().invoke(cli.main, ["run", *args, "--", "true"])


@pytest.mark.parametrize("args, network6", [
    ((), "fd00::/64"),                                  # on by default
    (("--ipv6",), "fd00::/64"),
    (("--no-ipv6",), None),
    (("--mtu", "1280"), "fd00::/64"),
    (("--mtu", "1279"), None),                          # below the IPv6 minimum: off unless asked
    (("--cidr6", "fd12:3456::/64"), "fd12:3456::/64"),
    (("--no-ipv6", "--cidr6", "fd12:3456::/64"), None),
])
def test_ipv6_options_reach_the_config(started, args, network6):
    res = run(*args)
    assert res.exit_code == 0, res.output
    (net,) = started
    assert net.network6 == (ipaddress.IPv6Network(network6) if network6 else None)
    assert net.ipv6 is (network6 is not None)


def test_cidr6_moves_the_sandbox_addresses(started):
    assert run("--cidr6", "fd12:3456::/64").exit_code == 0
    net = started[0]
    assert (str(net.guest6), str(net.gateway6), str(net.dns6)) == (
        "fd12:3456::100", "fd12:3456::2", "fd12:3456::3")


def test_outbound_addr6_is_resolved_and_kept(started, monkeypatch):
    seen = []
    monkeypatch.setattr(config, "resolve_outbound_addr6", lambda v: seen.append(v) or "2001:db8::7")
    assert run("--outbound-addr6", "eth9").exit_code == 0
    assert seen == ["eth9"]
    assert started[0].outbound_addr6 == "2001:db8::7"
    assert started[0].bind_address_for("2001:db8::1") == "2001:db8::7"


@pytest.mark.parametrize("args, words", [
    (("--cidr6", "fd00::/48"), "invalid IPv6 CIDR 'fd00::/48': prefix length must be 64"),
    (("--cidr6", "10.0.2.0/24"), "invalid IPv6 CIDR '10.0.2.0/24': must be an IPv6 network"),
    (("--cidr6", "fd00::1/64"), "invalid IPv6 CIDR 'fd00::1/64': must be a network address"),
    (("--cidr6", "fe80::/64"), "invalid IPv6 CIDR 'fe80::/64': must be a unicast network"),
    # checked with IPv6 off too: a typo is never silently ignored
    (("--no-ipv6", "--cidr6", "nonsense"), "invalid IPv6 CIDR 'nonsense'"),
    (("--ipv6", "--mtu", "1000"), "invalid MTU 1000 with IPv6: IPv6 needs an MTU of at least 1280"),
    (("--no-ipv6", "--outbound-addr6", "::1"), "invalid --outbound-addr6 '::1': IPv6 is off"),
    (("--mtu", "1000", "--outbound-addr6", "::1"), "invalid --outbound-addr6 '::1': IPv6 is off"),
    (("--outbound-addr6", "nosuchif0"),
     "invalid --outbound-addr6 'nosuchif0': neither an IPv6 address nor an interface"),
])
def test_bad_ipv6_values_are_one_line_and_status_2(started, args, words):
    res = run(*args)
    assert res.exit_code == 2, res.output
    assert started == []
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("slirpy: " + words), res.stderr


def test_help_lists_the_ipv6_options():
    res = CliRunner().invoke(cli.main, ["run", "--help"])
    assert res.exit_code == 0
    for opt in ("--ipv6 / --no-ipv6", "--cidr6 PREFIX/64", "--outbound-addr6 IPv6|IFNAME"):
        assert opt in res.stdout, opt
    assert "below 1280" in res.stdout
