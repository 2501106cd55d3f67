"""Named networks of sandboxes (issue 15): Docker's user-defined bridge networks, rootless.

One holder per user: a KEEPER process holds a user + network namespace in which each
network is a kernel bridge and each member's network namespace hangs off it by a veth pair;
nft in that namespace isolates the networks and applies their rules. A ROUTER (an ordinary
slirpy runtime) serves the holder's tap0 as every network's uplink: members' packets reach it
with their own addresses, their names are answered by its DNS forwarder, their published
ports are its listeners. Member-to-member traffic never leaves the kernel.

Modules: `paths` (files), `defs` (definitions, addresses), `nft` (the ruleset), `holderns`
(the keeper, code inside its namespaces), `state` (holder.json), `holder` (find/start it,
ask it), `router` (the router process, hardened), `plumber` and `plumbing` (its unhardened
helper: registry, keeper, bridges, nft, members' exits), `members` (what the records say),
`join` (a member's caller side), `member` (inside the member), `runtime_change`
(connect/disconnect), `cli`.
Importing this package imports nothing heavy: `slirpy ps` asks `holder_status()`.
"""

from __future__ import annotations


def holder_status() -> str:
    """"running", "down" (the router is gone, members have no way out), or "stopped"."""
    from slirpy.networks.holder import holder_status as _status
    return _status()


def run_member(**kwargs: object) -> int:
    """`slirpy run --network NAME...` (called by slirpy/named.py): see networks.run."""
    from slirpy.networks.run import run_member as _run
    return _run(**kwargs)  # type: ignore[arg-type]


__all__ = ["holder_status", "run_member"]
