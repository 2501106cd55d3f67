"""Published ports: spec parsing, error messages, binding (loopback only)."""

from __future__ import annotations

import errno
import socket

import pytest

from slirpy.config import ConfigError, PortSpec, parse_port_spec
from slirpy.ports import PortError, bind_all, bind_listener, describe_bind_error


@pytest.mark.parametrize("text, expected", [
    ("8080:80", [PortSpec("tcp", "0.0.0.0", 8080, 80)]),
    ("80", [PortSpec("tcp", "0.0.0.0", 0, 80)]),
    ("127.0.0.1:5353:53/udp", [PortSpec("udp", "127.0.0.1", 5353, 53)]),
    ("127.0.0.1::53/UDP", [PortSpec("udp", "127.0.0.1", 0, 53)]),
    ("8000-8002:9000-9002", [PortSpec("tcp", "0.0.0.0", 8000, 9000), PortSpec("tcp", "0.0.0.0", 8001, 9001),
                             PortSpec("tcp", "0.0.0.0", 8002, 9002)]),
    ("7000-7001", [PortSpec("tcp", "0.0.0.0", 0, 7000), PortSpec("tcp", "0.0.0.0", 0, 7001)]),
    ("[::1]:8080:80", [PortSpec("tcp", "::1", 8080, 80)]),
    ("[0:0::0]:8080:80/udp", [PortSpec("udp", "::", 8080, 80)]),
    (" 1:65535/tcp ", [PortSpec("tcp", "0.0.0.0", 1, 65535)]),
])
def test_port_specs_parse_as_docker_does(text, expected):
    assert parse_port_spec(text) == expected


@pytest.mark.parametrize("text, why", [
    ("", "empty"),
    ("8080:80/sctp", "protocol 'sctp' must be tcp or udp"),
    ("8080:0", "container port 0 must be from 1 to 65535"),
    ("70000:80", "host port 70000 must be from 1 to 65535"),
    ("http:80", "host port 'http' is not a number"),
    ("8080:", "container port '' is not a number"),
    ("1.2.3:8080:80", "'1.2.3' is not an IPv4 address"),
    ("::1:8080:80", "too many ':'"),
    ("[::1:8080:80", "missing ']'"),
    ("[::1]8080:80", "expected ':' after ']'"),
    ("[nope]:8080:80", "'nope' is not an IPv6 address"),
    ("[::1]:80", "expected [IPv6]:HOST_PORT:CONTAINER_PORT"),
    ("8000-8002:9000-9001", "differ in length"),
    ("8002-8000:80", "ends before it starts"),
])
def test_malformed_port_specs_are_quoted_and_explained(text, why):
    with pytest.raises(ConfigError) as e:
        parse_port_spec(text)
    assert repr(text) in str(e.value) and why in str(e.value)


def test_port_spec_text_round_trips():
    for text in ("1.2.3.4:80:8080/tcp", "[::1]:53:5353/udp"):
        [spec] = parse_port_spec(text)
        assert str(spec) == text and parse_port_spec(str(spec)) == [spec]


def test_bind_errors_name_the_address_port_and_cause():
    spec = PortSpec("tcp", "0.0.0.0", 80, 8080)
    msg = describe_bind_error(spec, OSError(errno.EACCES, "Permission denied"), port_start=1024)
    assert "0.0.0.0:80/tcp" in msg and "net.ipv4.ip_unprivileged_port_start is 1024" in msg
    assert "sysctl -w net.ipv4.ip_unprivileged_port_start=80" in msg
    msg = describe_bind_error(PortSpec("tcp", "0.0.0.0", 2000, 80), OSError(errno.EACCES, "x"), port_start=1024)
    assert msg.endswith("permission denied") and "sysctl" not in msg
    msg = describe_bind_error(PortSpec("udp", "::1", 5353, 53), OSError(errno.EADDRINUSE, "x"))
    assert "[::1]:5353/udp" in msg and "already in use" in msg
    msg = describe_bind_error(PortSpec("tcp", "192.0.2.1", 8080, 80), OSError(errno.EADDRNOTAVAIL, "x"))
    assert "192.0.2.1 is not an address of this host" in msg


def test_bind_listener_reports_a_port_in_use_and_fills_in_a_free_port():
    spec, sock = bind_listener(PortSpec("tcp", "127.0.0.1", 0, 80))
    try:
        assert spec.host_port == sock.getsockname()[1] != 0
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        with pytest.raises(PortError, match=rf"127\.0\.0\.1:{spec.host_port}/tcp: address already in use"):
            bind_listener(PortSpec("tcp", "127.0.0.1", spec.host_port, 81))
        # all-or-nothing: the first listener is closed again when a later one fails
        with pytest.raises(PortError):
            bind_all([PortSpec("udp", "127.0.0.1", 0, 53), PortSpec("tcp", "127.0.0.1", spec.host_port, 1)])
    finally:
        sock.close()


def test_bind_all_refuses_the_same_host_port_twice():
    with pytest.raises(PortError, match="twice"):
        bind_all([PortSpec("tcp", "127.0.0.1", 40999, 80), PortSpec("tcp", "127.0.0.1", 40999, 81)])
