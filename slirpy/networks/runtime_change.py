"""`network connect` / `network disconnect` on a running member.

The member's network namespace lives in the keeper's user namespace, so a child that joins
that user namespace and the member's net namespace (through the record's `ns_pid`) can add a
veth pair exactly as the member's own set-up did, or delete one. A sandbox in a private user
namespace of its own (a plain `slirpy run`) cannot be given a veth into the keeper's: refused.
"""

from __future__ import annotations

import os

from slirpy import registry
from slirpy.networks import defs as _defs
from slirpy.networks import holder, holderns, members as _members
from slirpy.networks.defs import DefError
from slirpy.networks.join import NetRequest, plan, sync_or_fail
from slirpy.networks.member import Attachment


def _member(sandbox: str) -> registry.SandboxRecord:
    rec = registry.lookup(sandbox)
    if rec is None:
        raise DefError(f"no running sandbox named {sandbox!r} (`slirpy ps` lists them)")
    if rec.mode != _members.MEMBER_MODE:
        raise DefError(f"sandbox {sandbox!r} has its own private network namespace (mode "
                       f"{rec.mode}): only sandboxes started with --network can be connected")
    if not rec.ns_pid:
        raise DefError(f"sandbox {sandbox!r} is still starting; try again")
    return rec


def _free_iface(rec: registry.SandboxRecord) -> str:
    used = {info.get("iface") for info in rec.networks.values()}
    return next(f"eth{i}" for i in range(64) if f"eth{i}" not in used)


def _add_link(att: Attachment, keeper_pid: int) -> None:  # pragma: no cover - in the child
    from slirpy.networks.member import setup_links
    fd = os.open(f"/proc/{keeper_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setup_links([att], fd, default_route=False)
    finally:
        os.close(fd)


def _del_link(iface: str) -> None:  # pragma: no cover - in the child
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=iface)
        if found:
            ipr.link("del", index=found[0])


def connect(network: str, sandbox: str, ip: str | None, aliases: list[str]) -> None:
    aliases = [_defs.check_name(a, "--alias").lower() for a in aliases]
    with registry.state_lock():
        rec = _member(sandbox)
        if network in rec.networks:
            raise DefError(f"sandbox {sandbox!r} is already on network {network!r}")
        state = holder.ensure_holder()
        live = _members.from_records(registry.live())
        first = next(iter(rec.networks.values()), {})
        att = plan([NetRequest(network, ip)], aliases, bool(first.get("host_loopback")), live)[0]
        att.iface = _free_iface(rec)
        registry.update(rec.name, rec.pid, networks={**rec.networks, network: att.record()})
    try:
        sync_or_fail()
        holderns.in_namespaces(state.keeper_pid, rec.ns_pid or 0, _add_link, att, state.keeper_pid)
    except BaseException:
        registry.update(rec.name, rec.pid, networks=rec.networks)
        sync_or_fail()
        raise


def disconnect(network: str, sandbox: str) -> None:
    with registry.state_lock():
        rec = _member(sandbox)
        if network not in rec.networks:
            raise DefError(f"sandbox {sandbox!r} is not on network {network!r}")
        if len(rec.networks) == 1:
            raise DefError(f"network {network!r} is the last network of {sandbox!r}; "
                           "a member keeps at least one")
        state = holder.ensure_holder()
        iface = rec.networks[network].get("iface") or ""
        rest = {k: v for k, v in rec.networks.items() if k != network}
        registry.update(rec.name, rec.pid, networks=rest)
    holderns.in_namespaces(state.keeper_pid, rec.ns_pid or 0, _del_link, iface)
    sync_or_fail()
