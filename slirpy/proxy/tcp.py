"""Host side of TCP flows: one asyncio Protocol per flow, feeding the pure Stack.

The protocol only translates: transport callbacks become `Stack.tcp_host_*` inputs, and the
runtime turns the Stack's TCP events into transport calls (`write`, `write_eof`,
`pause_reading`, `close`). Every callback ends by asking the runtime for a flush, which is
coalesced to one per loop iteration.

Reads land straight in `RecvBlocks` (the protocol is an `asyncio.BufferedProtocol`), not in
a new `bytes` per read: a read of 16 KiB or more is queued for the guest as a read-only view
of the block it landed in, so host->guest data is copied once by the kernel into our memory
and once by the kernel out of it, never by us. (Measured before this: turning each 256 KiB
read into `bytes` was 8-14 % of the process's CPU in bulk host->sandbox transfers.)
"""

from __future__ import annotations

import array
import asyncio
import collections
import errno
import fcntl
import select
import socket
import termios
import time
from typing import Final, cast

from .host import FlowHost

_now: Final = time.monotonic


BLOCK: Final = 256 << 10          # one block of read buffer
_MIN_ROOM: Final = 64 << 10       # a read gets at least this much room; less left: the next block
_COPY_BELOW: Final = 16 << 10     # smaller reads are copied out, and their room is used again
_RETIRED_MAX: Final = 256         # full blocks remembered for reuse (more are left to the allocator)
# A guest's connection's first small host reads are each followed by a look for the host's FIN
# (`eof_next`): a server that answers and closes (HTTP `Connection: close`) then has its FIN go
# to the guest on the answer's segment instead of a loop turn later (the loop reads a socket's
# EOF only on its next wake-up), by which time the guest client has read the answer and closed
# first. A client that closes first keeps the connection in TIME-WAIT for a minute: its 28k
# ephemeral ports last a few seconds of wrk's `Connection: close`, and its connect() slows
# down looking for a free one. Later reads are not followed: a long-lived flow pays nothing.
_EOF_LOOKS: Final = 2
_POLLER: Final = select.poll()             # eof_next's: one fd registered at a time
_INQ: Final = array.array("i", [0])         # eof_next's FIONREAD result


def _unviewed(block: bytearray) -> bool:
    """Whether no memoryview of `block` is left (see RecvBlocks). A bytearray that has views
    cannot change size (BufferError): shrink it by its last byte and give the byte back, which
    its allocation always holds (no reallocation, nothing moves). The byte's value does not
    matter: a block is written before it is read. (Counted references would be the other
    way, but their number depends on how the code holding them was compiled.)"""
    try:
        block.pop()
    except BufferError:
        return False
    block.append(0)
    return True

_NO_VIEW: Final = memoryview(b"")  # RecvBlocks' views between blocks: they hold none of the old one


class RecvBlocks:
    """Where every host TCP read lands: fixed blocks filled front to back.

    The event loop reads one socket at a time (`get_buffer`, the read, `buffer_updated`), so
    one current block serves all flows: `room()` is its free tail, `take(n)` turns the `n`
    bytes just read into data for the Stack. A read of `_COPY_BELOW` or more is handed on as
    a read-only view and its bytes are never written again; a smaller one (a request, an
    ACK-sized answer) is copied out, so small traffic keeps reusing the same room and pins
    nothing. A full block is retired; it is filled again only once no view of it is left
    (`_unviewed`), so its bytes stay put while a flow still queues them.
    Memory: the blocks holding data queued for guests, bounded by the queue limits (a view
    pins its whole block: at most BLOCK / _COPY_BELOW times the bytes queued).
    """

    __slots__ = ("_block", "_mv", "_ro", "_off", "_retired", "allocated", "reused")

    def __init__(self) -> None:
        self._block: bytearray | None = None
        self._mv = _NO_VIEW
        self._ro = _NO_VIEW
        self._off = BLOCK           # no room: the first room() takes a block
        self._retired: collections.deque[bytearray] = collections.deque()
        self.allocated = 0          # blocks made
        self.reused = 0             # retired blocks filled again

    def room(self) -> memoryview:
        if BLOCK - self._off < _MIN_ROOM:
            self._next_block()
        return self._mv[self._off:]

    def take(self, n: int) -> bytes | memoryview:
        off = self._off
        if n < _COPY_BELOW:
            return self._mv[off:off + n].tobytes()
        self._off = off + n
        return self._ro[off:off + n]

    def _next_block(self) -> None:
        retired = self._retired
        old = self._block
        self._block = None
        self._mv = self._ro = _NO_VIEW                 # our own views of it go now
        if old is not None:
            retired.append(old)
            del old
            if len(retired) > _RETIRED_MAX:
                retired.popleft()
        block = None
        for _ in range(min(len(retired), 4)):         # the oldest are the likeliest free
            b = retired[0]
            if _unviewed(b):
                retired.popleft()
                block = b
                self.reused += 1
                break
            retired.rotate(-1)
        if block is None:
            block = bytearray(BLOCK)
            self.allocated += 1
        self._block = block
        self._mv = memoryview(block)
        self._ro = self._mv.toreadonly()
        self._off = 0


def tune_transport(transport: asyncio.WriteTransport) -> None:
    """Modest write buffering: the guest's window is the real buffer. (Nagle is already off:
    uvloop and asyncio set TCP_NODELAY on every TCP transport, so no setsockopt here.)"""
    transport.set_write_buffer_limits(high=1 << 20, low=256 << 10)


def eof_next(fd: int) -> bool:
    """Whether everything the host sent on socket `fd` has been read and its FIN has come:
    the FIN is in (POLLRDHUP, so no data can follow it) and nothing is left before it
    (FIONREAD 0; the kernel does not count the FIN). One poll, plus one ioctl after a FIN;
    no exception on the usual answer (a MSG_PEEK recv raises EAGAIN and costs 4x as much)."""
    poller = _POLLER
    poller.register(fd, select.POLLRDHUP)
    try:
        ready = poller.poll(0)
        if not ready or not ready[0][1] & select.POLLRDHUP:
            return False
        fcntl.ioctl(fd, termios.FIONREAD, _INQ)
    except OSError:
        return False                    # the loop's own read reports the socket's error
    finally:
        poller.unregister(fd)
    return _INQ[0] == 0


def cork_before_eof(transport: asyncio.WriteTransport) -> bool:
    """The guest's data about to be written to this host socket is the last before its FIN
    (the runtime writes both in one flush): cork the socket (TCP_CORK), so that the data and
    the FIN leave in one segment when write_eof() shuts the socket down, as a kernel sends a
    close that finds data unsent. Written apart, a few microseconds between them, a host
    client that has read a whole answer closes first and keeps the connection in TIME-WAIT.
    Only with nothing buffered in the transport (else write_eof waits for the buffer, and the
    cork would hold its tail until then). True when corked."""
    if transport.get_write_buffer_size():
        return False
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    except OSError:
        return False
    return True


class HostTcpProtocol(asyncio.BufferedProtocol):
    __slots__ = ("flow_host", "stack", "blocks", "flow_id", "transport", "closed", "eof_looks")

    def __init__(self, flow_host: FlowHost, flow_id: int, eof_looks: int = _EOF_LOOKS):
        self.flow_host = flow_host
        self.stack = flow_host.stack
        self.blocks = flow_host.recv_blocks     # one attribute lookup less per read
        self.flow_id = flow_id
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.eof_looks = eof_looks       # small reads left that are followed by eof_next()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = self.transport = cast(asyncio.Transport, transport)    # a TCP stream's
        self.flow_host.tcp_socket_opened()
        if self.closed:
            # The flow ended while the connect was in flight (close() found no transport):
            # this socket has no flow left to serve.
            transport.abort()
            return
        tune_transport(transport)
        self.stack.tcp_host_connected(self.flow_id, _now())
        self.flow_host.request_flush()

    def get_buffer(self, sizehint: int) -> memoryview:
        room = self.blocks.room()
        allowed = self.stack.tcp_host_allowance(self.flow_id)
        return room if allowed >= len(room) else room[:allowed]

    def buffer_updated(self, nbytes: int) -> None:
        t = self.transport          # set: the loop reads only once connection_made has run
        data = self.blocks.take(nbytes)
        stack = self.stack
        now = _now()
        if stack.tcp_host_data(self.flow_id, data, now) and t is not None:
            t.pause_reading()    # now: before the loop reads this socket again
        if self.eof_looks and nbytes < _COPY_BELOW and t is not None:
            self.eof_looks -= 1
            sock = t.get_extra_info("socket")
            if sock is not None and eof_next(sock.fileno()):
                # (The loop reads the FIN itself later: eof_received repeats it, a no-op.)
                stack.tcp_host_eof(self.flow_id, now)
                self.flow_host.counters["tcp.host.eof_with_data"] += 1
        self.flow_host.host_data_read(self.flow_id, nbytes)

    def eof_received(self) -> bool:
        self.stack.tcp_host_eof(self.flow_id, _now())
        self.flow_host.request_flush()
        return True  # keep the transport: the guest may still send (half-close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.flow_host.tcp_socket_closed()     # the transport has closed the socket
        if self.closed:
            return
        self.closed = True
        self.flow_host.unregister_tcp_flow(self.flow_id)
        if exc is not None:
            self.stack.tcp_host_reset(self.flow_id, _now())
        else:
            self.stack.tcp_host_eof(self.flow_id, _now())
        self.flow_host.request_flush()

    def pause_writing(self) -> None:
        self.stack.tcp_host_write_paused(self.flow_id, True, _now())
        self.flow_host.request_flush()

    def resume_writing(self) -> None:
        self.stack.tcp_host_write_paused(self.flow_id, False, _now())
        self.flow_host.request_flush()

    # commands from the runtime (Stack events)

    def close(self, reset: bool) -> None:
        if self.closed:
            return
        self.closed = True
        t = self.transport
        if t is not None:
            if reset:
                t.abort()
            else:
                t.close()


async def connect(flow_host: FlowHost, flow_id: int, host: str, port: int) -> None:
    """Open the host socket for a guest SYN; report success or the errno to the Stack."""
    loop = asyncio.get_running_loop()
    proto = HostTcpProtocol(flow_host, flow_id)
    flow_host.register_tcp_flow(flow_id, proto)
    try:
        local = flow_host.bind_address_for(host)
        if local is None:
            await loop.create_connection(lambda: proto, host, port)
        else:
            await loop.create_connection(lambda: proto, host, port, local_addr=(local, 0))
    except asyncio.CancelledError:
        flow_host.unregister_tcp_flow(flow_id)
        raise
    except OSError as e:
        flow_host.unregister_tcp_flow(flow_id)
        err = e.errno if e.errno is not None else errno.EHOSTUNREACH
        flow_host.stack.tcp_host_connect_failed(flow_id, err, _now())
        flow_host.request_flush()
