"""configtypes.py: NetConfig, Limits, PortSpec and AutoPublish behave as the frozen dataclasses
they were: fields and defaults, equality and hash by value, repr, read-only, replace."""

from __future__ import annotations

import copy
import inspect
import ipaddress
import pickle

import pytest

from slirpy.config import AutoPublish, Limits, NetConfig, PortSpec, build_net_config, parse_limits

CLASSES = [Limits, NetConfig, PortSpec, AutoPublish]


def sample(cls: type) -> object:
    if cls is PortSpec:
        return PortSpec("tcp", "::1", 8080, 80)
    if cls is NetConfig:
        return build_net_config(publish=["8080:80", "auto/udp"], limits=["max_half_open=64"], mtu=1500)
    return cls()


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_the_fields_are_the_init_parameters_in_order(cls: type) -> None:
    # by position in field order, as a dataclass; replace() and copies rebuild through __init__
    assert tuple(inspect.signature(cls).parameters) == cls.__slots__


def test_the_defaults() -> None:
    limits = Limits()
    assert (limits.max_tcp_flows, limits.max_half_open, limits.tcp_rcv_buf_total, limits.tcp_ack_delay,
            limits.udp_timeout_replied, limits.tcp_inbound_timeout) == (65536, 1024, 16 << 20, 0.001, 180.0, 20.0)
    net = NetConfig()
    assert net.network == ipaddress.IPv4Network("10.0.2.0/24") and net.mtu == 65520
    assert net.network6 == ipaddress.IPv6Network("fd00::/64") and net.limits == Limits()
    assert (net.offload, net.allow_host_loopback, net.guest_mac, net.dns_enabled, net.dns_upstream) == (
        True, False, None, True, None)
    assert (net.routed, net.ports, net.auto_publish) == ((), (), None)
    assert NetConfig(network6=None).network6 is None and not NetConfig(network6=None).ipv6
    assert PortSpec("udp", "0.0.0.0", 0, 53).guest_addr is None
    assert AutoPublish() == AutoPublish(("tcp", "udp"), "127.0.0.1")


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_read_only(cls: type) -> None:
    value = sample(cls)
    before = repr(value)
    for name in cls.__slots__:
        with pytest.raises(AttributeError):
            setattr(value, name, 1)
        with pytest.raises(AttributeError):
            delattr(value, name)
    with pytest.raises(AttributeError):
        setattr(value, "not_a_field", 1)
    assert repr(value) == before


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_equal_and_hashed_by_their_fields(cls: type) -> None:
    a, b = sample(cls), sample(cls)
    assert a is not b and a == b and hash(a) == hash(b) and len({a, b}) == 1
    for name in cls.__slots__:
        other = a.replace(**{name: object()})
        assert other != a and a != other
    assert a != tuple(getattr(a, name) for name in cls.__slots__)


def test_replace_changes_only_the_fields_named() -> None:
    net = sample(NetConfig)
    assert isinstance(net, NetConfig)
    smaller = net.replace(mtu=1400, network6=None)
    assert (smaller.mtu, smaller.network6, net.mtu) == (1400, None, 1500)
    assert all(getattr(smaller, k) == getattr(net, k) for k in NetConfig.__slots__ if k not in ("mtu", "network6"))
    assert type(smaller) is NetConfig and net.replace() == net
    with pytest.raises(TypeError):
        net.replace(not_a_field=1)
    assert parse_limits(["max_udp_flows=9"], base=Limits(max_tcp_flows=7)) == Limits(max_tcp_flows=7, max_udp_flows=9)


def test_repr_names_every_field() -> None:
    assert repr(PortSpec("tcp", "::1", 8080, 80)) == (
        "PortSpec(proto='tcp', host_addr='::1', host_port=8080, guest_port=80, guest_addr=None)")
    assert repr(AutoPublish(("udp",))) == "AutoPublish(protos=('udp',), host_addr='127.0.0.1')"
    assert repr(NetConfig()).startswith("NetConfig(network=IPv4Network('10.0.2.0/24'), mtu=65520, ")
    assert "limits=Limits(max_tcp_flows=65536, " in repr(NetConfig())


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_copies_and_pickles(cls: type) -> None:
    value = sample(cls)
    for twin in (copy.copy(value), copy.deepcopy(value), pickle.loads(pickle.dumps(value))):
        assert twin == value and type(twin) is cls
