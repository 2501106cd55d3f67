"""`slirpy ps`, and a sandbox NAME where the run-time commands (`port`, `stats`, `flows`, `top`,
`pcap`) take an API socket: both read the records of `slirpy.registry`.

A member of a named network has no API socket of its own: its ports are served by the holder's
router, whose socket its record names, and its address in its first network is the `guest_addr`
of what is published for it (`Target.guest_addr`).
"""

from __future__ import annotations

import importlib
import json
import os
import time
from dataclasses import dataclass
from typing import Any

from . import registry
from .launch import fail
from .ports import host_port_text


@dataclass
class Target:
    """The API socket a run-time command talks to, and the sandbox's record when named."""
    api_socket: str
    rec: registry.SandboxRecord | None = None

    def member_addresses(self) -> list[str]:
        """A network member's addresses (first network first); [] for any other sandbox."""
        out: list[str] = []
        for net in (self.rec.networks.values() if self.rec is not None else ()):
            out += [str(net[k]) for k in ("ip", "ip6") if isinstance(net, dict) and net.get(k)]
        return out

    def guest_addr(self) -> str | None:
        addrs = self.member_addresses()
        return addrs[0] if addrs else None


def resolve(api_socket: str | None, name: str | None, args: list[str]) -> tuple[Target, list[str]]:
    """Which sandbox: `--api-socket PATH`, `--name NAME`, or else the first of `args` as NAME.
    Returns the target and the rest of `args`; a missing or unknown one ends slirpy (2 / 1)."""
    if api_socket is not None and name is not None:
        fail("give --api-socket PATH or a sandbox NAME, not both", 2)
    if api_socket is not None:
        return Target(api_socket), args
    if name is None:
        if not args:
            fail("which sandbox? give its NAME (see `slirpy ps`) or --api-socket PATH", 2)
        name, args = args[0], args[1:]
    try:
        rec = registry.lookup(name)
    except registry.RegistryError as e:
        fail(str(e), 1)
    if rec is None:
        fail(f"no running sandbox named {name!r} (see `slirpy ps`)", 1)
    if rec.api_socket is None:
        fail(f"sandbox {name!r} has no API socket (network mode {rec.mode}: slirpy serves no network for it)", 1)
    await_api_socket(rec)
    return Target(rec.api_socket, rec), args


API_SOCKET_WAIT = 10.0


def await_api_socket(rec: registry.SandboxRecord, timeout: float = API_SOCKET_WAIT) -> None:
    """Return once `rec`'s API socket exists, or its process has gone, or after `timeout` s
    (the call that follows then fails with its own message).

    A named run is in `slirpy ps` once its sandbox runs, and its command may run before the
    process serving it has imported its event loop (launch.py, start-up time): its default API
    socket is bound a few tens of ms later.  `slirpy port add NAME ...` right after the run
    started waits for it instead of failing."""
    path = rec.api_socket
    if path is None:
        return
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) and time.monotonic() < deadline and registry.is_alive(rec):
        time.sleep(0.01)


def note_ports(target: Target, entries: list[dict]) -> None:
    """After `port add|rm NAME`: keep a private sandbox's record's ports current (a member's
    are the networks code's to keep)."""
    rec = target.rec
    if rec is not None and rec.mode == "private":
        registry.update(rec.name, rec.pid, ports=entries)


def _holder_running() -> bool | None:
    """Whether the networks holder runs (None: no networks code here, or it cannot say)."""
    try:
        nets: Any = importlib.import_module("slirpy.networks")
    except ImportError:
        return None
    status = getattr(nets, "holder_status", None)
    if status is None:
        return None
    try:
        got = status()
    except Exception:          # whatever the holder's state: ps still lists the sandboxes
        return None
    if isinstance(got, str):                 # "running", "down", "stopped"
        return got == "running"
    return bool(got.get("running")) if isinstance(got, dict) else bool(got)


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _ports_text(ports: list) -> str:
    out = []
    for p in ports:
        if isinstance(p, dict):
            out.append(f"{host_port_text(str(p.get('host_addr', '')), int(p.get('host_port', 0)))}->"
                       f"{p.get('guest_port')}/{p.get('proto', 'tcp')}")
        else:
            out.append(str(p))
    return ",".join(out) or "-"


def _networks_text(rec: registry.SandboxRecord) -> str:
    parts = []
    for net, info in rec.networks.items():
        addrs = [str(info[k]) for k in ("ip", "ip6") if isinstance(info, dict) and info.get(k)]
        parts.append(f"{net}={'/'.join(addrs)}" if addrs else net)
    return ",".join(parts) or "-"


def rows(now: float | None = None) -> list[dict[str, Any]]:
    """Every live sandbox as a JSON-able dict: its record, `age` (seconds) and `status`."""
    now = time.time() if now is None else now
    recs = registry.live()
    holder = _holder_running() if any(r.networks for r in recs) else None
    out = []
    for rec in recs:
        row = rec.to_json()
        row["age"] = round(now - rec.created, 1)
        row["status"] = "network down" if rec.networks and holder is False else "running"
        out.append(row)
    return out


def print_ps(as_json: bool) -> None:
    try:
        table = rows()
    except registry.RegistryError as e:
        fail(str(e), 1)
    if as_json:
        print(json.dumps(table))
        return
    print(f"{'NAME':24} {'PID':>7}  {'MODE':14} {'NETWORKS':28} {'PORTS':30} {'AGE':>5}  STATUS")
    for row in table:
        rec = registry.SandboxRecord.from_json(row)
        print(f"{rec.name:24} {rec.pid:>7}  {rec.mode:14} {_networks_text(rec):28} "
              f"{_ports_text(rec.ports):30} {_age(row['age']):>5}  {row['status']}")
