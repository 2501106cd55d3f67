"""Published ports: spec parsing, error messages, binding (loopback only)."""

from __future__ import annotations

import asyncio
import errno
import socket
from collections import defaultdict

import pytest

from slirpy.config import ConfigError, PortSpec, parse_port_spec
from slirpy.ports import (InboundTcpProtocol, PortError, PortManager, UdpListener, bind_all, bind_listener,
                          describe_bind_error, guest_ip_of, v6only_beside)


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


# ------------------------------------------------------------------ IPv6 listeners


def free_port(proto: str = "tcp") -> int:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET6, kind) as s:
        s.bind(("::", 0))
        return s.getsockname()[1]


def v6only(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)


@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_wildcard_ipv6_listener_is_dual_stack_alone_and_v6only_beside_ipv4(proto):
    port = free_port(proto)
    [(_, alone)] = bind_all([PortSpec(proto, "::", port, 80)])
    try:
        assert v6only(alone) == 0                   # IPv4 clients reach it too
    finally:
        alone.close()
    # `-p [::]:P:80 -p P:80`: both bind (in either order), the IPv6 one for IPv6 clients only
    for specs in ([PortSpec(proto, "::", port, 80), PortSpec(proto, "0.0.0.0", port, 80)],
                  [PortSpec(proto, "127.0.0.1", port, 80), PortSpec(proto, "::", port, 80)]):
        bound = bind_all(specs)
        try:
            socks = {spec.host_addr: sock for spec, sock in bound}
            assert v6only(socks["::"]) == 1
        finally:
            for _, sock in bound:
                sock.close()


def test_v6only_beside_only_for_the_wildcard_and_the_same_port_and_proto():
    v6 = PortSpec("tcp", "::", 8080, 80)
    assert v6only_beside(v6, [PortSpec("tcp", "0.0.0.0", 8080, 80)])
    assert not v6only_beside(v6, [PortSpec("udp", "0.0.0.0", 8080, 80)])
    assert not v6only_beside(v6, [PortSpec("tcp", "0.0.0.0", 8081, 80)])
    assert not v6only_beside(v6, [PortSpec("tcp", "::1", 8080, 80)])
    assert not v6only_beside(PortSpec("tcp", "::1", 8080, 80), [PortSpec("tcp", "0.0.0.0", 8080, 80)])
    assert not v6only_beside(PortSpec("tcp", "::", 0, 80), [PortSpec("tcp", "0.0.0.0", 0, 80)])


def test_guest_ip_of_packs_the_forwards_guest_address():
    assert guest_ip_of(PortSpec("tcp", "::", 1, 80)) is None
    assert guest_ip_of(PortSpec("tcp", "::", 1, 80, "10.0.2.100")) == bytes([10, 0, 2, 100])
    assert guest_ip_of(PortSpec("tcp", "::", 1, 80, "fd00::100")) == bytes.fromhex("fd00" + "00" * 12 + "0100")


class Recorder:
    def __init__(self, result=7):
        self.calls = []
        self.result = result

    def tcp_inbound_open(self, *args, **kw):
        self.calls.append(("tcp", args, kw))
        return self.result

    def udp_inbound_open(self, *args, **kw):
        self.calls.append(("udp", args, kw))
        return self.result

    def udp_host_datagram(self, *args):
        self.calls.append(("datagram", args, {}))


class FakeHost:
    def __init__(self, loop=None):
        self.stack = Recorder()
        self.recv_blocks = None         # FlowHost's; nothing is read from a host socket here
        self.counters = defaultdict(int)
        self.loop = loop
        self.tcp = {}
        self.udp = {}
        self.opened = 0

    def request_flush(self):
        pass

    def host_data_read(self, flow_id, nbytes):
        pass

    def register_tcp_flow(self, fid, flow):
        self.tcp[fid] = flow

    def register_udp_flow(self, fid, flow):
        self.udp[fid] = flow

    def tcp_socket_opened(self):
        self.opened += 1


class PeerTransport:
    def __init__(self, peer):
        self.peer = peer

    def get_extra_info(self, name, default=None):
        return self.peer if name == "peername" else default

    def set_write_buffer_limits(self, high=None, low=None):
        pass


@pytest.mark.parametrize("peer, guest_ip", [
    (("2001:db8::9", 40000, 0, 0), None),
    (("::ffff:203.0.113.7", 40001, 0, 0), None),        # an IPv4 client of a dual-stack listener
    (("::1", 40002, 0, 0), bytes.fromhex("fd00" + "00" * 12 + "0100")),
    (("203.0.113.7", 40003), bytes([10, 0, 2, 100])),
])
def test_tcp_client_address_goes_to_the_stack_unchanged_with_the_forwards_guest_ip(peer, guest_ip):
    host = FakeHost()
    proto = InboundTcpProtocol(host, 80, guest_ip)
    proto.connection_made(PeerTransport(peer))
    [(kind, args, kw)] = host.stack.calls
    assert kind == "tcp" and args[:3] == (peer[0], peer[1], 80) and kw == {"guest_ip": guest_ip}
    assert host.tcp == {7: proto} and proto.flow_id == 7


def test_udp_clients_of_an_ipv6_listener_reach_the_stack_with_their_own_address():
    async def main():
        host = FakeHost(asyncio.get_running_loop())
        spec, sock = bind_listener(PortSpec("udp", "::", 0, 53))
        listener = UdpListener(host, sock, 53, bytes(16))
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as c6, \
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c4:
                c6.sendto(b"six", ("::1", spec.host_port))
                c4.sendto(b"four", ("127.0.0.1", spec.host_port))
                for _ in range(100):
                    await asyncio.sleep(0.01)
                    if len(host.stack.calls) == 4:
                        break
                return host.stack.calls, c6.getsockname()[1], c4.getsockname()[1]
        finally:
            listener.close()

    calls, p6, p4 = asyncio.run(main())
    opens = [(args[:3], kw) for kind, args, kw in calls if kind == "udp"]
    assert sorted(opens) == sorted([(("::1", p6, 53), {"guest_ip": bytes(16)}),
                                    (("::ffff:127.0.0.1", p4, 53), {"guest_ip": bytes(16)})])


def test_api_port_added_beside_a_dual_stack_wildcard_is_refused_with_why():
    async def main():
        host = FakeHost(asyncio.get_running_loop())
        ports = PortManager(host, "10.0.2.100", "fd00::100")
        port = free_port()
        try:
            first = await ports.add_forward(PortSpec("tcp", "::", port, 80))
            with pytest.raises(PortError) as info:
                await ports.add_forward(PortSpec("tcp", "0.0.0.0", port, 80))
            # the other order works: the IPv4 one first, then `[::]` for IPv6 clients only
            ports.remove_forward(first)
            await ports.add_forward(PortSpec("tcp", "0.0.0.0", port, 80))
            fid = await ports.add_forward(PortSpec("tcp", "::", port, 80))
            return str(info.value), ports.forwards[fid].dual_stack
        finally:
            ports.close_all()

    why, dual = asyncio.run(main())
    assert why.endswith(f"takes its IPv4 clients too") and f"0.0.0.0:" in why, why
    assert dual is False
