"""A host that answers and closes: its FIN goes to the guest with the answer (proxy/tcp.py).

The event loop reads a host socket's data and, a loop turn later, its EOF. A flow's first small
reads are followed by a look for the FIN (`eof_next`), so the Stack can send the FIN on the
answer's last segment and the guest does not close first (and keep the connection in TIME-WAIT).
"""

from __future__ import annotations

import collections
import socket

import pytest

from slirpy.proxy import tcp as tcp_proxy
from slirpy.proxy.tcp import HostTcpProtocol, RecvBlocks, eof_next


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_eof_next_sees_the_fin_only_once_the_data_is_read(pair):
    ours, host = pair
    fd = ours.fileno()
    assert not eof_next(fd)                     # nothing yet
    host.sendall(b"answer")
    assert not eof_next(fd)                     # data, no FIN
    host.shutdown(socket.SHUT_WR)
    assert not eof_next(fd)                     # data still to read: the FIN is not next
    assert ours.recv(3) == b"ans"
    assert not eof_next(fd)
    assert ours.recv(100) == b"wer"
    assert eof_next(fd)
    assert eof_next(fd)                         # a look: the EOF stays for the loop's read
    assert ours.recv(100) == b""


def test_eof_next_leaves_nothing_registered(pair):
    ours, host = pair
    other, other_host = socket.socketpair()
    try:
        other_host.close()                      # a FIN on another socket, looked at first
        assert eof_next(other.fileno())
        assert not eof_next(ours.fileno())      # ... is not reported for this one
        assert tcp_proxy._POLLER.poll(0) == []
    finally:
        other.close()


def test_eof_next_on_a_socket_that_is_not_connected_or_not_open():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    fd = s.fileno()
    try:
        assert not eof_next(fd)
    finally:
        s.close()
    assert not eof_next(fd)                     # closed: POLLNVAL, not an EOF
    assert tcp_proxy._POLLER.poll(0) == []


class _Transport:
    def __init__(self, sock):
        self.sock = sock
        self.looked = 0

    def get_extra_info(self, name):
        assert name == "socket"
        self.looked += 1
        return self.sock

    def pause_reading(self):
        pass


class _Stack:
    def __init__(self):
        self.calls = []

    def tcp_host_allowance(self, flow_id):
        return 1 << 30

    def tcp_host_data(self, flow_id, data, now):
        self.calls.append(("data", flow_id, bytes(data)))
        return False

    def tcp_host_eof(self, flow_id, now):
        self.calls.append(("eof", flow_id))


class _Runtime:
    def __init__(self):
        self.stack = _Stack()
        self.recv_blocks = RecvBlocks()
        self.counters = collections.defaultdict(int)
        self.flushes = 0

    def request_flush(self):
        self.flushes += 1

    def host_data_read(self, flow_id, nbytes):
        self.flushes += 1


def _flow(sock, proto_class=HostTcpProtocol, *args):
    """A protocol on `sock` (our end of the pair) with fake runtime, Stack and transport."""
    rt = _Runtime()
    proto = proto_class(rt, *args)
    proto.transport = _Transport(sock)
    return rt, proto


def _loop_read(proto, sock):
    """What the event loop does when the socket is readable: one read into the protocol's room."""
    room = proto.get_buffer(-1)
    n = sock.recv_into(room)
    proto.buffer_updated(n)


def test_an_answer_and_fin_together_reach_the_stack_in_one_read(pair):
    ours, host = pair
    rt, proto = _flow(ours, HostTcpProtocol, 5)
    host.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nok")
    host.close()
    _loop_read(proto, ours)
    assert rt.stack.calls == [("data", 5, b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nok"),
                              ("eof", 5)]
    assert rt.counters["tcp.host.eof_with_data"] == 1 and rt.flushes == 1


def test_no_eof_while_the_host_keeps_the_connection_open(pair):
    ours, host = pair
    rt, proto = _flow(ours, HostTcpProtocol, 5)
    host.sendall(b"first answer")
    _loop_read(proto, ours)
    assert rt.stack.calls == [("data", 5, b"first answer")]
    assert rt.counters["tcp.host.eof_with_data"] == 0


def test_only_a_flows_first_small_reads_look_for_the_fin(pair):
    ours, host = pair
    rt, proto = _flow(ours, HostTcpProtocol, 5)
    t = proto.transport
    host.sendall(b"x" * 40_000)                 # large reads: more is likely coming, no look
    while sum(len(c[2]) for c in rt.stack.calls) < 40_000:
        _loop_read(proto, ours)
    assert t.looked == 0
    for i in range(tcp_proxy._EOF_LOOKS + 3):   # keep-alive answers: only the first few look
        host.sendall(b"answer %d" % i)
        _loop_read(proto, ours)
    assert t.looked == tcp_proxy._EOF_LOOKS
    host.sendall(b"last")
    host.close()
    _loop_read(proto, ours)                     # past the looks: the loop's own read finds EOF
    assert rt.stack.calls[-1] == ("data", 5, b"last")
    assert rt.counters["tcp.host.eof_with_data"] == 0


def test_a_published_ports_client_is_not_looked_at(pair):
    # The host side of an inbound flow is the client: its close after a request leaves the
    # guest (the server) no TIME-WAIT to spare, so no system call is spent looking.
    from slirpy.ports import InboundTcpProtocol
    ours, host = pair
    rt, proto = _flow(ours, InboundTcpProtocol, 80)
    proto.flow_id = 9
    t = proto.transport
    host.sendall(b"GET / HTTP/1.0\r\n\r\n")
    host.shutdown(socket.SHUT_WR)
    _loop_read(proto, ours)
    assert rt.stack.calls == [("data", 9, b"GET / HTTP/1.0\r\n\r\n")] and t.looked == 0
