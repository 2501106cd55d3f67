"""The host-side adapters with IPv6 flows, against fakes: error queues (IPV6_RECVERR, crafted
`sock_extended_err` + `sockaddr_in6` bytes), ping6 replies and hop limits, and connect/open
failures reported to the stack with their errno. No core needed: the Stack is a recorder."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import struct
from collections import defaultdict

import pytest

from slirpy.proxy import icmp as icmp_proxy
from slirpy.proxy import tcp as tcp_proxy
from slirpy.proxy import udp as udp_proxy
from slirpy.proxy.udp import IPV6_RECVERR, IP_RECVERR, parse_extended_err

OFFENDER6 = ipaddress.IPv6Address("2001:db8::fe").packed
OFFENDER4 = ipaddress.IPv4Address("198.51.100.254").packed


def ee(err: int, origin: int, icmp_type: int, code: int, info: int = 0) -> bytes:
    return struct.pack("=IBBBBII", err, origin, icmp_type, code, 0, info, 0)


def sockaddr_in6(addr: bytes, port: int = 0, scope: int = 0) -> bytes:
    return struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", port, 0) + addr + struct.pack("=I", scope)


def sockaddr_in(addr: bytes) -> bytes:
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H", 0) + addr + bytes(8)


# ------------------------------------------------------------------ parse_extended_err

def test_ipv6_error_has_icmpv6_type_code_and_a_16_byte_offender():
    # port unreachable (1/4) from 2001:db8::fe, as IPV6_RECVERR delivers it
    e = parse_extended_err(ee(errno.ECONNREFUSED, 3, 1, 4) + sockaddr_in6(OFFENDER6))
    assert (e.errno, e.origin, e.icmp_type, e.icmp_code, e.offender) == (
        errno.ECONNREFUSED, udp_proxy.SO_EE_ORIGIN_ICMP6, 1, 4, OFFENDER6)


def test_packet_too_big_keeps_the_mtu_in_info():
    e = parse_extended_err(ee(errno.EMSGSIZE, 3, 2, 0, info=1400) + sockaddr_in6(OFFENDER6))
    assert (e.icmp_type, e.info, e.offender) == (2, 1400, OFFENDER6)


def test_ipv4_error_keeps_its_4_byte_offender():
    e = parse_extended_err(ee(errno.EHOSTUNREACH, 2, 3, 1) + sockaddr_in(OFFENDER4))
    assert (e.origin, e.icmp_type, e.icmp_code, e.offender) == (2, 3, 1, OFFENDER4)


@pytest.mark.parametrize("tail", [b"", sockaddr_in6(OFFENDER6)[:20], struct.pack("=H", 99) + bytes(26)],
                         ids=["none", "truncated", "unknown-family"])
def test_missing_or_short_offender_is_none(tail):
    e = parse_extended_err(ee(errno.EMSGSIZE, 1, 0, 0) + tail)
    assert e is not None and e.offender is None


def test_a_short_control_message_is_not_an_error():
    assert parse_extended_err(ee(0, 3, 1, 4)[:-1]) is None


# ------------------------------------------------------------------ fakes

class Recorder:
    """The Stack's host inputs, recorded as (name, args)."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args, **kw: self.calls.append((name, args, kw))


class FakeSock:
    """A socket whose error queue and data are given; records what is sent and set."""

    def __init__(self, errqueue=(), data=()):
        self.errqueue = list(errqueue)       # ancdata lists, one per MSG_ERRQUEUE read
        self.data = list(data)               # (bytes, ancdata) for ordinary reads
        self.sent = []
        self.opts = []

    def recvmsg(self, size, ancsize=0, flags=0):
        if flags & socket.MSG_ERRQUEUE:
            if not self.errqueue:
                raise BlockingIOError(errno.EAGAIN, "empty")
            return b"", self.errqueue.pop(0), 0, None
        if not self.data:
            raise BlockingIOError(errno.EAGAIN, "empty")
        data, anc = self.data.pop(0)
        return data, anc, 0, None

    def recv(self, size):
        return self.recvmsg(size)[0]

    def send(self, data):
        self.sent.append(bytes(data))
        return len(data)

    def setsockopt(self, level, opt, value):
        self.opts.append((level, opt, value))

    def fileno(self):
        return -1


class FakeLoop:
    """Records the readers: a socket that reported an error must be watched again (rearm)."""
    def __init__(self):
        self.readers = {}
        self.rearmed = 0

    def add_reader(self, fd, cb):
        self.readers[fd] = cb

    def remove_reader(self, fd):
        if self.readers.pop(fd, None) is not None:
            self.rearmed += 1


class FakeHost:
    def __init__(self, bind6: str | None = None):
        self.stack = Recorder()
        self.recv_blocks = None         # FlowHost's; nothing is read from a host socket here
        self.counters = defaultdict(int)
        self.flushes = 0
        self.bind6 = bind6
        self.registered = {}
        self.loop = FakeLoop()

    def request_flush(self):
        self.flushes += 1

    def host_data_read(self, flow_id, nbytes):
        self.flushes += 1

    def bind_address_for(self, host):
        return self.bind6 if ":" in host else None

    def register_tcp_flow(self, fid, flow):
        self.registered[fid] = flow

    def unregister_tcp_flow(self, fid):
        self.registered.pop(fid, None)


def v6_err(icmp_type, code, err=errno.EHOSTUNREACH, info=0):
    return [(socket.IPPROTO_IPV6, IPV6_RECVERR, ee(err, 3, icmp_type, code, info) + sockaddr_in6(OFFENDER6))]


# ------------------------------------------------------------------ UDP

def test_udp_ipv6_flow_relays_icmpv6_errors_with_the_offender():
    host = FakeHost()
    flow = udp_proxy.HostUdpFlow(host, 9, FakeSock(errqueue=[v6_err(1, 4, errno.ECONNREFUSED)]))
    host.loop.add_reader(flow.fd, flow.on_readable)
    flow.on_readable()                   # woken by EPOLLERR: nothing to read, the error queue
    [(name, args, _)] = host.stack.calls
    assert name == "udp_host_error"
    assert args[:2] == (9, errno.ECONNREFUSED) and args[3:] == (1, 4, OFFENDER6, 0)
    # watched again: uvloop stops polling a descriptor after POLLERR
    assert host.loop.rearmed == 1 and host.loop.readers[flow.fd] == flow.on_readable


def test_udp_flow_of_the_other_family_passes_the_errno_only():
    # a guest's IPv6 DNS flow to an IPv4 upstream: ICMPv4 details mean nothing to it
    host = FakeHost()
    anc = [(socket.IPPROTO_IP, IP_RECVERR, ee(errno.ECONNREFUSED, 2, 3, 3) + sockaddr_in(OFFENDER4))]
    flow = udp_proxy.HostUdpFlow(host, 4, FakeSock(errqueue=[anc]), relay_icmp=False)
    flow.on_readable()
    [(name, args, _)] = host.stack.calls
    assert name == "udp_host_error" and args[0:2] == (4, errno.ECONNREFUSED) and len(args) == 3


def test_udp_open_flow_picks_the_family_and_who_gets_icmp_details(monkeypatch):
    class Loop:
        def add_reader(self, fd, cb):
            self.fd = fd

    host = FakeHost()
    host.loop = Loop()
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as peer:
        peer.bind(("::1", 0))
        port = peer.getsockname()[1]
        same = udp_proxy.open_flow(host, 1, "::1", port, "fd00::100")
        other = udp_proxy.open_flow(host, 2, "::1", port, "10.0.2.100")
        try:
            assert same.sock.family == other.sock.family == socket.AF_INET6
            assert same.relay_icmp and not other.relay_icmp
            assert same.sock.getsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR) == 1
        finally:
            same.sock.close()
            other.sock.close()


# ------------------------------------------------------------------ ICMPv6 echo

def test_echo6_request_is_type_128_and_the_hop_limit_is_ipv6_unicast_hops():
    host = FakeHost()
    sock = FakeSock()
    flow = icmp_proxy.HostEchoFlow(host, 3, sock, icmp_proxy.V6)
    flow.send(7, 5, b"ping")
    assert sock.opts == [(socket.IPPROTO_IPV6, icmp_proxy.IPV6_UNICAST_HOPS, 5)]
    assert sock.sent == [bytes([128, 0, 0, 0, 0, 0, 0, 7]) + b"ping"]
    flow.send(8, 5, b"")                 # same hop limit: not set again
    assert len(sock.opts) == 1


def test_echo6_reply_reaches_the_stack_with_its_hop_limit():
    host = FakeHost()
    hops = [(socket.IPPROTO_IPV6, icmp_proxy.IPV6_HOPLIMIT, struct.pack("=i", 57))]
    reply = bytes([129, 0, 0xAB, 0xCD, 0, 42, 1, 2]) + b"payload"
    stray = bytes([128, 0, 0, 0, 0, 42, 0, 3]) + b"x"            # not a reply: counted
    flow = icmp_proxy.HostEchoFlow(host, 3, FakeSock(data=[(reply, hops), (stray, [])]), icmp_proxy.V6)
    flow.on_readable()
    [(name, args, _)] = host.stack.calls
    assert name == "icmp_host_echo_reply"
    fid, seq, data, hop_limit, _now = args
    assert (fid, seq, bytes(data), hop_limit) == (3, 0x0102, b"payload", 57)
    assert host.counters["icmp.host.rx.drop.type"] == 1


def test_parse_reply_is_per_family():
    v4_reply = bytes([0, 0, 0, 0, 0, 1, 0, 9]) + b"d"
    v6_reply = bytes([129, 0, 0, 0, 0, 1, 0, 9]) + b"d"
    ttl = [(socket.IPPROTO_IP, icmp_proxy.IP_TTL, struct.pack("=i", 61))]
    assert icmp_proxy.parse_reply(icmp_proxy.V4, v4_reply, ttl)[::2] == (9, 61)
    assert icmp_proxy.parse_reply(icmp_proxy.V6, v4_reply, ttl) is None
    assert icmp_proxy.parse_reply(icmp_proxy.V4, v6_reply, []) is None
    # the IPv4 TTL message is not an IPv6 hop limit: default 64
    assert icmp_proxy.parse_reply(icmp_proxy.V6, v6_reply, ttl)[::2] == (9, 64)
    assert icmp_proxy.parse_reply(icmp_proxy.V6, v6_reply[:7], []) is None


def test_echo6_errors_go_to_the_stack_as_icmpv6_with_a_16_byte_offender():
    host = FakeHost()
    # time exceeded (3/0), then one of the other family's origin, which is not ours to relay
    v4 = [(socket.IPPROTO_IP, IP_RECVERR, ee(errno.EHOSTUNREACH, 2, 11, 0) + sockaddr_in(OFFENDER4))]
    flow = icmp_proxy.HostEchoFlow(host, 5, FakeSock(errqueue=[v6_err(3, 0), v4]), icmp_proxy.V6)
    flow.on_readable()
    assert [(n, a[:3], a[4:]) for n, a, _ in host.stack.calls] == [
        ("icmp_host_error", (5, 3, 0), (OFFENDER6, 0))]


def test_echo4_flow_ignores_icmpv6_origins():
    host = FakeHost()
    flow = icmp_proxy.HostEchoFlow(host, 5, FakeSock(errqueue=[v6_err(1, 0)]), icmp_proxy.V4)
    flow.on_readable()
    assert host.stack.calls == []


@pytest.mark.parametrize("host, err, expect", [
    ("2001:db8::1", errno.EAFNOSUPPORT, (1, 0)),        # this host has no IPv6: no route
    ("2001:db8::1", errno.EADDRNOTAVAIL, (1, 0)),       # ... or no IPv6 address
    ("2001:db8::1", errno.ENETUNREACH, (1, 0)),
    ("2001:db8::1", errno.EHOSTUNREACH, (1, 3)),
    ("2001:db8::1", errno.EACCES, None),                # ping_group_range: said once, not per echo
    ("203.0.113.9", errno.ENETUNREACH, (3, 0)),
    ("203.0.113.9", errno.EHOSTUNREACH, (3, 1)),
    ("203.0.113.9", errno.EACCES, None),
])
def test_open_failure_answers_in_the_flows_own_icmp_flavour(host, err, expect):
    assert icmp_proxy.open_error(host, err) == expect


def test_family_for():
    assert icmp_proxy.family_for("2001:db8::1") is icmp_proxy.V6
    assert icmp_proxy.family_for("::1") is icmp_proxy.V6
    assert icmp_proxy.family_for("198.51.100.1") is icmp_proxy.V4
    assert (icmp_proxy.V6.af, icmp_proxy.V6.proto) == (socket.AF_INET6, socket.IPPROTO_ICMPV6)


# ------------------------------------------------------------------ TCP connect

@pytest.mark.parametrize("err", [errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.ENETUNREACH])
def test_tcp_connect_to_ipv6_failing_is_reported_with_its_errno(err):
    host = FakeHost(bind6="2001:db8::7")
    asked = []

    async def main():
        loop = asyncio.get_running_loop()

        async def create_connection(factory, h, p, **kw):
            asked.append((h, p, kw.get("local_addr")))
            raise OSError(err, "fake")

        loop.create_connection = create_connection
        await tcp_proxy.connect(host, 11, "2001:db8::1", 443)

    asyncio.run(main())
    assert asked == [("2001:db8::1", 443, ("2001:db8::7", 0))]    # bound per family
    [(name, args, _)] = host.stack.calls
    assert name == "tcp_host_connect_failed" and args[:2] == (11, err)
    assert host.registered == {} and host.flushes == 1
