"""A UDP flow hands a burst of the guest's datagrams to the host as UDP GSO sends
(proxy/udp.py `send_many`): the receiver must get exactly the datagrams, in order, whatever
their sizes; what the kernel refuses falls back to one send each; errors reach the guest as
with one send per datagram. Real loopback sockets, the real kernel segmentation."""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest

from slirpy.proxy import udp
from slirpy.proxy.udp import GSO_MAX_BYTES, GSO_MAX_SEGMENTS, gso_run
from tests.unit.test_udp_rearm import _FlowHost


@pytest.fixture
def world():
    host = _FlowHost(asyncio.new_event_loop())
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    server.bind(("127.0.0.1", 0))
    server.settimeout(5)
    flow = udp.open_flow(host, 1, "127.0.0.1", server.getsockname()[1])
    yield host, flow, server
    flow.close()
    server.close()
    host.loop.close()


def _receive(server: socket.socket, n: int) -> list[bytes]:
    return [server.recv(65536) for _ in range(n)]


def _parts(sizes: list[int]) -> list[bytes]:
    return [bytes([i % 251]) * size for i, size in enumerate(sizes)]


# ------------------------------------------------------------------ which runs go together

@pytest.mark.parametrize("sizes, runs", [
    ([1400] * 5, [5]),
    ([1400] * 4 + [900], [5]),                     # a shorter last one joins the run
    ([1400, 900, 1400], [2, 1]),                   # ... and ends it
    ([900, 1400], [1, 1]),                         # a larger one never joins
    ([1400, 0, 1400, 1400], [1, 1, 2]),            # an empty datagram cannot be a segment
    ([0, 0], [1, 1]),
    ([7], [1]),
    ([100] * (GSO_MAX_SEGMENTS + 3), [GSO_MAX_SEGMENTS, 3]),
    ([30000] * 3, [2, 1]),                         # GSO_MAX_BYTES
])
def test_gso_run_boundaries(sizes, runs):
    parts = _parts(sizes)
    got, i = [], 0
    while i < len(parts):
        j = gso_run(parts, i)
        got.append(j - i)
        i = j
    assert got == runs
    assert 2 * 30000 <= GSO_MAX_BYTES < 3 * 30000


# ------------------------------------------------------------------ through the kernel

@pytest.mark.parametrize("sizes", [
    [1400] * 40,
    [1400] * 40 + [123],
    [1400, 1400, 700, 1400, 1400, 1400, 0, 5, 5, 5, 65000 // 2, 65000 // 2, 1],
    [100] * (2 * GSO_MAX_SEGMENTS + 5),
    [1],
])
def test_send_many_delivers_exactly_the_datagrams_in_order(world, sizes):
    host, flow, server = world
    parts = _parts(sizes)
    flow.send_many(parts)
    assert _receive(server, len(parts)) == parts
    expected_gso = 0
    i = 0
    while i < len(parts):
        j = gso_run(parts, i)
        expected_gso += j - i >= 2
        i = j
    assert host.counters["udp.host.tx.gso"] == expected_gso
    assert host.counters["udp.host.tx.gso_refused"] == 0 and not host.stack.errors


def test_memoryview_parts_are_sent_as_they_are(world):
    host, flow, server = world
    buf = bytes(range(256)) * 40
    parts = [memoryview(buf)[k * 1000:(k + 1) * 1000] for k in range(10)]
    flow.send_many(parts)
    assert _receive(server, 10) == [bytes(p) for p in parts]
    assert host.counters["udp.host.tx.gso"] == 1


class _RefusingSocket(socket.socket):
    """A connected UDP socket whose sendmsg with UDP_SEGMENT fails as a kernel that cannot
    segment this flow's datagrams answers (a socket.socket: the compiled flow checks the type)."""

    err = errno.EINVAL
    calls = 0

    def sendmsg(self, buffers, ancdata=(), *args):
        if ancdata:
            type(self).calls += 1
            raise OSError(self.err, "refused")
        return super().sendmsg(buffers, ancdata, *args)


@pytest.mark.parametrize("err", [errno.EINVAL, errno.EIO, errno.ENOPROTOOPT])
def test_a_refusal_falls_back_to_one_send_each_for_good(world, err):
    host, flow, server = world
    _RefusingSocket.err, _RefusingSocket.calls = err, 0
    fake = _RefusingSocket(socket.AF_INET, socket.SOCK_DGRAM)
    fake.connect(server.getsockname())
    fake.setblocking(False)
    flow.sock.close()
    flow.sock = fake
    parts = _parts([1400] * 6)
    flow.send_many(parts)
    flow.send_many(parts)
    assert _receive(server, 12) == parts + parts
    assert _RefusingSocket.calls == 1 and flow.gso is False
    assert host.counters["udp.host.tx.gso_refused"] == 1 and host.counters["udp.host.tx.gso"] == 0
    assert not host.stack.errors


def test_a_pending_error_fails_the_first_datagram_only_as_single_sends_would():
    """An earlier datagram's port unreachable is pending on the connected socket: the next
    send reports it (the guest hears it) and that datagram is lost; the rest of the burst goes."""
    host = _FlowHost(asyncio.new_event_loop())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    flow = udp.open_flow(host, 1, "127.0.0.1", port)
    try:
        flow.send(b"nobody listens")     # on lo the port unreachable is back before send returns
        assert not host.stack.errors and host.counters["udp.host.tx.error"] == 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
            server.bind(("127.0.0.1", port))
            server.settimeout(5)
            parts = _parts([1000] * 5)
            flow.send_many(parts)
            assert host.counters["udp.host.tx.error"] == 1
            assert errno.ECONNREFUSED in host.stack.errors
            assert _receive(server, 4) == parts[1:]
            assert host.counters["udp.host.tx.gso"] == 1
    finally:
        flow.close()
        host.loop.close()
