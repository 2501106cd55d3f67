"""What the control socket (api.py) may do with a running Runtime: change the port forwards,
read counters and flows, start and stop a capture, replace routes and name views.

Why a module: the API's view of the runtime is not the loop's work; runtime.py keeps the loop.
It sees the runtime as `Served` (runtime.py imports api.py, which imports this module: it
must not import runtime.py back, tests/unit/test_import_cycles.py).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from . import pcap as _pcap

if TYPE_CHECKING:  # pragma: no cover
    from .config import PortSpec
    from .impair import FrameLink
    from .ports import PortManager
    from .tcpip.stack import Stack


class Served(Protocol):
    """What RuntimeControl uses of runtime.Runtime."""

    link: FrameLink
    counters: Any
    ports: PortManager

    @property
    def stack(self) -> Stack: ...

    def snapshot(self) -> dict: ...

    def flow_table(self, now: float) -> list[dict]: ...


class RuntimeControl:
    """What the control socket may do: change the port forwards, and read counters and flows."""

    def __init__(self, runtime: Served):
        self._runtime = runtime
        self._ports = runtime.ports

    @property
    def guest_addr(self) -> str:
        return self._ports.guest_addr

    @property
    def guest_addr6(self) -> str | None:
        return self._ports.guest_addr6

    async def add_forward(self, spec: PortSpec) -> int:
        return await self._ports.add_forward(spec)

    def list_forwards(self) -> list[tuple[int, PortSpec]]:
        return self._ports.list_forwards()

    def remove_forward(self, forward_id: int) -> bool:
        return self._ports.remove_forward(forward_id)

    def auto_forward_ids(self) -> set[int]:
        return self._ports.auto_forward_ids()

    def stats(self) -> dict:
        return self._runtime.snapshot()

    def flows(self) -> list[dict]:
        return self._runtime.flow_table(time.monotonic())

    def pcap_start(self, path: str, max_size: int) -> dict:
        return _pcap.start_capture(self._runtime, path, max_size).info()

    def pcap_stop(self) -> dict | None:
        cap = _pcap.stop_capture(self._runtime)
        return None if cap is None else cap.info()

    def set_routes(self, prefixes: list) -> None:
        self._runtime.stack.set_routed(prefixes)

    def set_names(self, views: dict, domains: list) -> None:
        self._runtime.stack.set_names(views, domains)

    def routes_to(self, ip: bytes) -> bool:
        return self._runtime.stack.routes_to(ip)
