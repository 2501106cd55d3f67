"""A UDP flow keeps reading after its socket reported an ICMP error, under uvloop.

libuv stops polling a descriptor once its poll saw POLLERR; a connected UDP socket with
IP_RECVERR gets exactly that from one "port unreachable". Before `WatchedSocket.rearm`, the
flow (and so the guest's UDP conversation, DNS included) went deaf until it expired.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections import Counter

import uvloop

from slirpy.proxy import udp


class _Stack:
    def __init__(self) -> None:
        self.datagrams: list[bytes] = []
        self.errors: list[int] = []

    def udp_host_datagram(self, fid: int, data: bytes, now: float) -> None:
        self.datagrams.append(bytes(data))

    def udp_host_error(self, fid: int, err: int, now: float, *icmp: object) -> None:
        self.errors.append(err)


class _FlowHost:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.stack = _Stack()
        self.counters: Counter[str] = Counter()

    def request_flush(self) -> None:
        pass

    def bind_address_for(self, host: str) -> None:
        return None


async def _until(cond, timeout: float = 5.0) -> bool:
    for _ in range(int(timeout / 0.01)):
        if cond():
            return True
        await asyncio.sleep(0.01)
    return cond()


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _error_then_answer() -> _Stack:
    host = _FlowHost(asyncio.get_running_loop())
    port = _free_udp_port()
    flow = udp.open_flow(host, 1, "127.0.0.1", port)
    try:
        flow.send(b"nobody listens yet")
        assert await _until(lambda: host.stack.errors), "the port unreachable never arrived"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
            server.bind(("127.0.0.1", port))
            server.settimeout(5)
            flow.send(b"now someone does")
            data, addr = server.recvfrom(100)
            assert data == b"now someone does"
            server.sendto(b"the answer", addr)
            await _until(lambda: host.stack.datagrams)
    finally:
        flow.close()
    return host.stack


def test_udp_flow_reads_the_answer_after_a_port_unreachable_under_uvloop():
    stack = uvloop.run(_error_then_answer())
    assert stack.errors[0] == errno.ECONNREFUSED
    assert stack.datagrams == [b"the answer"]


def test_the_same_on_the_plain_asyncio_loop():
    stack = asyncio.run(_error_then_answer())
    assert stack.errors[0] == errno.ECONNREFUSED
    assert stack.datagrams == [b"the answer"]
