"""`run --network` and `network connect` in the caller: pick the addresses, register or
update the member's record (under the state lock), then ask the router to sync.

Kept apart from member.py (which runs inside the member) so that the caller's side reads as
one short sequence; every refusal is a `DefError` line, the caller exits with its status.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from slirpy import registry
from slirpy.networks import defs as _defs
from slirpy.networks import holder, members as _members, paths
from slirpy.networks.defs import DefError
from slirpy.networks.member import Attachment
from slirpy.networks.state import HolderState


@dataclass
class NetRequest:
    """One `--network NAME` of a run (or a `network connect`)."""
    network: str
    ip: str | None = None


def plan(requests: list[NetRequest], aliases: list[str], host_loopback: bool,
         live: list[_members.Member], first_iface: int = 0) -> list[Attachment]:
    """The attachments for `requests` given the live members (no I/O but reading definitions)."""
    seen: set[str] = set()
    out = []
    for i, req in enumerate(requests):
        if req.network in seen:
            raise DefError(f"--network {req.network} given twice", usage=True)
        seen.add(req.network)
        d = _defs.require(req.network)
        ip = _defs.pick_ip(d, _members.used_ips(live, d.name), req.ip)
        out.append(Attachment(d, ip, _defs.ip6_for(d, ip), f"eth{first_iface + i}", list(aliases),
                              host_loopback))
    return out


def check_aliases(aliases: list[str]) -> list[str]:
    return [_defs.check_name(a, "--network-alias").lower() for a in aliases]


def register_member(name: str | None, requests: list[NetRequest], aliases: list[str],
                    host_loopback: bool, publish: list[str], hostname: str | None, pid: int | None = None,
                    auto_publish: dict | None = None
                    ) -> tuple[registry.SandboxRecord, HolderState, list[Attachment]]:
    """Under the lock: the holder (started if needed), the addresses, the record. Then sync.
    Raises DefError / holder.HolderError / registry.RegistryError (one line each)."""
    with registry.state_lock():
        state = holder.ensure_holder()
        live = _members.from_records(registry.live())
        atts = plan(requests, aliases, host_loopback, live)
        rec = registry.claim(name, pid or os.getpid(), mode=_members.MEMBER_MODE,
                             api_socket=paths.holder_socket(),
                             networks={a.network.name: a.record() for a in atts}, ports=list(publish),
                             auto_publish=auto_publish)
        if rec.hostname != (hostname or rec.name):
            rec.hostname = hostname or rec.name
            registry.update(rec.name, rec.pid, hostname=rec.hostname)
    try:
        sync_or_fail(name)
    except BaseException:
        registry.unregister(rec.name, rec.pid)
        raise
    return rec, state, atts


def sync_or_fail(name: str | None = None) -> None:
    """Ask the router to sync; a port of `name` that could not be published is an error."""
    reply = holder.request("sync")
    errors = reply.get("port_errors", {}) if isinstance(reply, dict) else {}
    if name is not None and name in errors:
        raise DefError(f"cannot publish: {errors[name]}")
