"""slirp4netns mode's IPv6 options, parsed and built into a NetConfig (no namespace touched)."""

from __future__ import annotations

import ipaddress

import pytest

from slirpy import config, slirp4netns as s4n


def build(*args: str):
    return s4n.build_config(s4n.parse_args([*args, "1", "tap0"]))


@pytest.mark.parametrize("args", [("-6",), ("--enable-ipv6",), ("--enable-ip",)])   # getopt prefixes
def test_enable_ipv6_gives_slirp4netns_layout(args):
    net = build(*args)
    assert net.network6 == ipaddress.IPv6Network("fd00::/64")
    assert (str(net.guest6), str(net.gateway6), str(net.dns6)) == ("fd00::100", "fd00::2", "fd00::3")


def test_ipv6_is_off_by_default_as_in_slirp4netns():
    assert build().network6 is None
    assert build("--mtu=65520").network6 is None


def test_disable_host_loopback_is_one_switch_for_both_gateways():
    assert build("-6").allow_host_loopback is True
    assert build("-6", "--disable-host-loopback").allow_host_loopback is False


def test_outbound_addr6(monkeypatch):
    monkeypatch.setattr(config, "resolve_outbound_addr6", lambda v: {"eth0": "2001:db8::5"}[v])
    net = build("-6", "--outbound-addr6=eth0")
    assert net.outbound_addr6 == "2001:db8::5"
    assert net.bind_address_for("2001:db8::1") == "2001:db8::5"
    assert net.bind_address_for("::1") is None


@pytest.mark.parametrize("args, words", [
    (("-6", "--mtu=1279"), "slirpy: invalid MTU 1279 with IPv6: IPv6 needs an MTU of at least 1280"),
    (("-6", "--outbound-addr6=not-an-interface0"),
     "slirpy: invalid --outbound-addr6 'not-an-interface0': neither an IPv6 address nor an interface"),
])
def test_ipv6_errors_are_exit_1_with_one_line(args, words):
    with pytest.raises(s4n.Exit) as info:
        build(*args)
    assert info.value.code == 1 and info.value.err.startswith(words), info.value.err
    assert "\n" not in info.value.err


def test_help_lists_enable_ipv6_and_outbound_addr6(capsys):
    assert s4n.run(["--help"]) == 0
    out = capsys.readouterr().out
    lines = {l.split()[0].rstrip(","): l for l in out.splitlines() if l.startswith("-")}
    assert "enable IPv6" in lines["-6"] and "--enable-ipv6" in lines["-6"]
    assert "--outbound-addr6=IPv6" in out and "not supported" not in lines["--outbound-addr6=IPv6"]


def test_banner_names_the_ipv6_addresses_only_with_ipv6(capsys):
    opts = s4n.parse_args(["-6", "1", "tap0"])
    s4n._print_banner(opts, s4n.build_config(opts))
    out = capsys.readouterr().out
    assert "* IPv6 Gateway:    fd00::2" in out and "* IPv6 DNS:        fd00::3" in out
    assert "as 10.0.2.2 and [::1]:* as fd00::2" in out
    opts = s4n.parse_args(["1", "tap0"])
    s4n._print_banner(opts, s4n.build_config(opts))
    assert "IPv6" not in capsys.readouterr().out


# ------------------------------------------------------------------ what scripts read (issue 17)

def test_version_prints_slirp_config_version_max_that_slirpy_implements(capsys):
    assert s4n.run(["--version"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "slirp4netns version 1.2.0"
    assert "SLIRP_CONFIG_VERSION_MAX: 3" in lines      # IPv6, loopback, outbound addrs, disable_dns
    assert s4n.run(["-v"]) == 0
    assert capsys.readouterr().out.splitlines() == lines


@pytest.mark.parametrize("opt, field", [("--enable-sandbox", "enable_sandbox"),
                                        ("--enable-seccomp", "enable_seccomp"),
                                        ("--create-sandbox", "enable_sandbox")])
def test_hardening_flags_are_parsed_without_a_not_implemented_warning(capsys, opt, field):
    o = s4n.parse_args([opt, "1", "tap0"])
    assert getattr(o, field) and o.target == "1"
    assert s4n.run([opt, "--mtu=100", "1", "tap0"]) == 1
    captured = capsys.readouterr()
    assert "no effect" not in captured.err and "MTU 100 is not supported" in captured.err
    # --create-sandbox keeps slirp4netns's deprecation warning (on stdout, as slirp4netns)
    assert ("deprecated" in captured.out) == (opt == "--create-sandbox")


def test_plain_run_prints_no_hardening_warning(capsys):
    assert s4n.run(["--mtu=100", "1", "tap0"]) == 1
    assert "warning" not in capsys.readouterr().err


def test_help_lists_sandbox_and_seccomp_as_implemented(capsys):
    assert s4n.run(["--help"]) == 0
    out = capsys.readouterr().out
    lines = {l.split()[0].rstrip(","): l for l in out.splitlines() if l.startswith("-")}
    for opt in ("--enable-sandbox", "--enable-seccomp"):
        assert opt in lines and "no effect" not in lines[opt], lines[opt]
    assert "no effect" not in out and "not implemented" not in out
    # Every option the help lists is one the parser takes.
    for opt in lines:
        if opt.startswith("--"):
            assert opt[2:].split("=")[0] in {o.rstrip("=") for o in s4n._LONG}, opt
