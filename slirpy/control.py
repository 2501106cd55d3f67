"""What the control socket (api.py) may do with a running Runtime: change the port forwards,
read counters and flows, start and stop a capture, replace routes and name views.

Why a module: the API's view of the runtime is not the loop's work; runtime.py keeps the loop.
It sees the runtime as `Served` (runtime.py imports api.py, which imports this module: it
must not import runtime.py back, tests/unit/test_import_cycles.py).
"""

from __future__ import annotations

import ipaddress
import time
from typing import TYPE_CHECKING, Any, Protocol

from . import pcap as _pcap
from .ports import host_port_text

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
        return flow_rows(self._runtime.stack, time.monotonic())

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


def flow_rows(stack: Stack, now: float) -> list[dict]:
    """Live flows, in the spirit of `conntrack -L`: protocol, direction, guest and host
    endpoints, state, traffic each way (TCP: payload bytes; UDP/ICMP: datagrams), age;
    `id` (never reused by a sandbox) and `bytes_to_host`/`bytes_to_guest` (payload bytes,
    every protocol) let `slirpy flows --watch` compute rates between two polls."""
    def ep(ip: bytes, port: int) -> str:        # 4 or 16 bytes: 10.0.2.100:80, [fd00::100]:80
        return host_port_text(str(ipaddress.ip_address(ip)), port)

    rows = []
    for f in stack.flows():
        rows.append({"proto": "tcp", "direction": "in" if f.inbound else "out",
                     "guest": ep(f.guest_ip, f.guest_port), "host": ep(f.host_ip, f.host_port),
                     "state": f.conn.state.name, "to_host": f.bytes_in, "to_guest": f.bytes_out,
                     "unit": "bytes", "age": round(now - f.opened_at, 1), "id": f.flow_id,
                     "bytes_to_host": f.bytes_in, "bytes_to_guest": f.bytes_out})
    for proto, flows in (("udp", stack.udp_flows()), ("icmp", stack.echo_flows())):
        for d in flows:
            rows.append({"proto": proto, "direction": "in" if d.inbound else "out",
                         "guest": ep(d.guest_ip, d.guest_port), "host": ep(d.host_ip, d.host_port),
                         "state": "REPLIED" if d.replied else "UNREPLIED",
                         "to_host": d.datagrams_in, "to_guest": d.datagrams_out,
                         "unit": "datagrams", "age": round(now - d.opened_at, 1), "id": d.flow_id,
                         "bytes_to_host": d.bytes_in, "bytes_to_guest": d.bytes_out})
    return rows
