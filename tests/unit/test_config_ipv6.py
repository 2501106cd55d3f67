"""The IPv6 part of NetConfig: the fd00::/64 layout, --cidr6 checks, the MTU rule, and which
local address outbound IPv6 host sockets bind to."""

from __future__ import annotations

import ipaddress

import pytest

from slirpy.config import ConfigError, NetConfig, build_net_config, parse_cidr6


def test_default_layout_is_slirp4netns() -> None:
    c = build_net_config()
    assert c.ipv6
    assert str(c.network6) == "fd00::/64"
    assert (str(c.gateway6), str(c.dns6), str(c.guest6)) == ("fd00::2", "fd00::3", "fd00::100")
    assert c.guest_mss6 == c.mtu - 60


def test_cidr6_moves_every_address() -> None:
    c = build_net_config(cidr6="fd12:3456:789a:1::/64")
    assert str(c.guest6) == "fd12:3456:789a:1::100"
    assert str(c.gateway6) == "fd12:3456:789a:1::2"


@pytest.mark.parametrize("value, words", [
    ("fd00::/48", "prefix length must be 64"),
    ("fd00::1/64", "no host bits"),
    ("fe80::/64", "link-local"),
    ("ff02::/64", "link-local"),
    ("10.0.2.0/24", "must be an IPv6 network"),
    ("nonsense", "must be an IPv6 network"),
])
def test_bad_cidr6_names_value_and_rule(value: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_cidr6(value)
    assert repr(value) in str(e.value) and words in str(e.value)


def test_small_mtu_turns_ipv6_off_unless_asked_for() -> None:
    assert build_net_config(mtu=1279).network6 is None
    assert build_net_config(mtu=1280).network6 is not None
    assert build_net_config(ipv6=False).network6 is None
    with pytest.raises(ConfigError) as e:
        build_net_config(mtu=1000, ipv6=True)
    assert "1280" in str(e.value) and e.value.rule == "mtu.ipv6"


def test_ipv6_off_has_no_addresses() -> None:
    c = NetConfig(network6=None)
    assert not c.ipv6
    with pytest.raises(ValueError):
        c.guest6


def test_outbound_bind_per_family() -> None:
    c = NetConfig(outbound_addr="192.0.2.7", outbound_addr6="2001:db8::7")
    assert c.bind_address_for("198.51.100.1") == "192.0.2.7"
    assert c.bind_address_for("2001:db8::1") == "2001:db8::7"
    assert c.bind_address_for("::1") is None             # host loopback: never bound
    assert c.bind_address_for("127.0.0.1") is None
    assert NetConfig().bind_address_for("2001:db8::1") is None
    assert isinstance(c.network6, ipaddress.IPv6Network)
