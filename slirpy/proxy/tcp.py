"""Host side of TCP flows: one asyncio Protocol per flow, feeding the pure Stack.

The protocol only translates: transport callbacks become `Stack.tcp_host_*` inputs, and the
runtime turns the Stack's TCP events into transport calls (`write`, `write_eof`,
`pause_reading`, `close`). Every callback ends by asking the runtime for a flush, which is
coalesced to one per loop iteration.
"""

from __future__ import annotations

import asyncio
import errno
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from ..runtime import Runtime

_now = time.monotonic


def tune_transport(transport) -> None:
    """Modest write buffering: the guest's window is the real buffer. (Nagle is already off:
    uvloop and asyncio set TCP_NODELAY on every TCP transport, so no setsockopt here.)"""
    transport.set_write_buffer_limits(high=1 << 20, low=256 << 10)


class HostTcpProtocol(asyncio.Protocol):
    __slots__ = ("runtime", "stack", "flow_id", "transport", "closed")

    def __init__(self, runtime: "Runtime", flow_id: int):
        self.runtime = runtime
        self.stack = runtime.stack
        self.flow_id = flow_id
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        tune_transport(transport)
        self.stack.tcp_host_connected(self.flow_id, _now())
        self.runtime.request_flush()

    def data_received(self, data: bytes) -> None:
        self.stack.tcp_host_data(self.flow_id, data, _now())
        self.runtime.request_flush()

    def eof_received(self) -> bool:
        self.stack.tcp_host_eof(self.flow_id, _now())
        self.runtime.request_flush()
        return True  # keep the transport: the guest may still send (half-close)

    def connection_lost(self, exc) -> None:
        if self.closed:
            return
        self.closed = True
        self.runtime.host_flows.pop(self.flow_id, None)
        if exc is not None:
            self.stack.tcp_host_reset(self.flow_id, _now())
        else:
            self.stack.tcp_host_eof(self.flow_id, _now())
        self.runtime.request_flush()

    def pause_writing(self) -> None:
        self.stack.tcp_host_write_paused(self.flow_id, True, _now())
        self.runtime.request_flush()

    def resume_writing(self) -> None:
        self.stack.tcp_host_write_paused(self.flow_id, False, _now())
        self.runtime.request_flush()

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


async def connect(runtime: "Runtime", flow_id: int, host: str, port: int) -> None:
    """Open the host socket for a guest SYN; report success or the errno to the Stack."""
    loop = asyncio.get_running_loop()
    proto = HostTcpProtocol(runtime, flow_id)
    runtime.host_flows[flow_id] = proto
    try:
        local = runtime.config.bind_address_for(host)
        if local is None:
            await loop.create_connection(lambda: proto, host, port)
        else:
            await loop.create_connection(lambda: proto, host, port, local_addr=(local, 0))
    except asyncio.CancelledError:
        runtime.host_flows.pop(flow_id, None)
        raise
    except OSError as e:
        runtime.host_flows.pop(flow_id, None)
        err = e.errno if e.errno is not None else errno.EHOSTUNREACH
        runtime.stack.tcp_host_connect_failed(flow_id, err, _now())
        runtime.request_flush()
    finally:
        runtime.connecting.pop(flow_id, None)
