"""What the networks know of their members, derived from the registry's records.

A member is a `slirpy run --network` (registry mode "network"); its record's `networks` maps
each network name to {"ip", "ip6", "aliases", "iface", "host_loopback"}, its `ports` lists
the `-p` specs (text) the router publishes for it and `auto_publish` its `-p auto`. From the live records and the definitions
this module computes, without I/O, everything the router applies: the bridges, the nft
members, the routed prefixes and the DNS name views.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from slirpy.networks.defs import NetworkDef
from slirpy.networks.nft import MemberAddr

MEMBER_MODE = "network"
MAX_VIEWS = 4096
MAX_NAMES = 256


@dataclass
class Member:
    name: str
    pid: int
    networks: dict[str, dict] = field(default_factory=dict)
    ports: list[str] = field(default_factory=list)
    ns_pid: int | None = None               # a process in its namespaces (its PID 1), once started
    auto_publish: dict | None = None        # `-p auto`: {"protos": [...], "host_addr": ...}

    def addresses(self) -> list[str]:
        out = []
        for info in self.networks.values():
            out.append(info["ip"])
            if info.get("ip6"):
                out.append(info["ip6"])
        return out


def from_records(records: list) -> list[Member]:
    """The members among registry records (SandboxRecord)."""
    return [Member(r.name, r.pid, dict(r.networks), [str(p) for p in r.ports], r.ns_pid,
                   r.auto_publish)
            for r in records if r.mode == MEMBER_MODE and r.networks]


def used_ips(members: list[Member], network: str) -> set[str]:
    return {m.networks[network]["ip"] for m in members if network in m.networks}


def active(defs: list[NetworkDef], members: list[Member]) -> list[NetworkDef]:
    """The networks that have at least one member (their bridges exist)."""
    names = {n for m in members for n in m.networks}
    return [d for d in defs if d.name in names]


def bridges(active_defs: list[NetworkDef]) -> list[dict]:
    return [{"bridge": d.bridge, "gateway": d.gateway, "prefixlen": d.net.prefixlen,
             "gateway6": d.gateway6} for d in active_defs]


def nft_members(members: list[Member]) -> list[MemberAddr]:
    return [MemberAddr(net, info["ip"], info.get("ip6"), bool(info.get("host_loopback")))
            for m in members for net, info in m.networks.items()]


def routed(active_defs: list[NetworkDef]) -> list[str]:
    out = [d.subnet for d in active_defs]
    out += [d.subnet6 for d in active_defs if d.subnet6]
    return out


def name_views(members: list[Member], defs: list[NetworkDef]) -> tuple[dict[str, dict[str, list[str]]], list[str]]:
    """(views, domains): for each address of each member, the names it may resolve — every
    member (itself included) sharing a network with it, as NAME, ALIAS and NAME.NETWORK — and
    the network names (foreign `X.NET` is answered NXDOMAIN, never forwarded upstream)."""
    known = {d.name for d in defs}
    per_net: dict[str, dict[str, list[str]]] = {}
    for m in members:
        for net, info in m.networks.items():
            if net not in known:
                continue
            addrs = [info["ip"]] + ([info["ip6"]] if info.get("ip6") else [])
            table = per_net.setdefault(net, {})
            for name in [m.name, *info.get("aliases", []), f"{m.name}.{net}"]:
                key = name.lower().rstrip(".")
                if len(table) < MAX_NAMES or key in table:
                    table.setdefault(key, [])
                    table[key] += [a for a in addrs if a not in table[key]]
    views: dict[str, dict[str, list[str]]] = {}
    for m in members:
        view: dict[str, list[str]] = {}
        for net in m.networks:
            for name, addrs in per_net.get(net, {}).items():
                view.setdefault(name, [])
                view[name] += [a for a in addrs if a not in view[name]]
        for addr in m.addresses():
            if len(views) < MAX_VIEWS:
                views[addr] = view
    return views, sorted(known)


def port_specs(member: Member) -> list[tuple[str, str]]:
    """(spec text, guest address) for each of the member's `-p` ports: its first network's IP."""
    if not member.networks:
        return []
    first = next(iter(member.networks.values()))
    return [(spec, first["ip"]) for spec in member.ports]


def is_member_addr(addr: str | None, members: list[Member]) -> bool:
    if addr is None:
        return False
    try:
        ip = str(ipaddress.ip_address(addr))
    except ValueError:
        return False
    return any(ip in m.addresses() for m in members)
