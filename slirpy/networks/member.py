"""A member joining its networks: addresses and registration in the caller (P), then the
veth pairs and the interface configuration inside the member (S, `member_setup`).

P, under the state lock: the holder is found or started, each network's address picked (the
lowest free from .2, or `--ip`), the record registered with its `networks` filled; then, with
the lock released, the router is asked to sync (bridges, nft, routes, names, `-p` ports), so
that everything is in place before the command runs.

S, inside the member's own new network namespace (in the keeper's user namespace, so the
kernel lets it move links between the two): for network i, `eth<i>` + its peer `s<I>v<H>`
(I the network's index, H the host part of the address, so names never collide) are created
with the peer in the keeper's namespace, attached to the bridge and brought up there, then
eth<i> gets its address, MTU and (first network) the default routes via the gateway: the pairs
through iproute2's `ip`, eth<i> with interface ioctls (vethip.py says why not pyroute2; without
`ip`, the pyroute2 code below does it all).
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Callable

from slirpy.networks.defs import NetworkDef

VETH_MTU = 65520
IFA_F_NODAD = 0x02


@dataclass
class Attachment:
    """One network of one member."""
    network: NetworkDef
    ip: str
    ip6: str | None
    iface: str
    aliases: list[str] = field(default_factory=list)
    host_loopback: bool = False

    @property
    def peer(self) -> str:
        host = int(ipaddress.IPv4Address(self.ip)) - int(self.network.net.network_address)
        return f"s{self.network.index}v{host}"

    def record(self) -> dict:
        return {"ip": self.ip, "ip6": self.ip6, "aliases": list(self.aliases), "iface": self.iface,
                "host_loopback": self.host_loopback}


def resolv_text(first: NetworkDef) -> str:
    """The member's resolv.conf: its first network's gateway (nft sends it to slirpy's DNS)."""
    lines = [f"nameserver {first.gateway}"]
    if first.gateway6:
        lines.append(f"nameserver {first.gateway6}")
    return "\n".join(lines) + "\n"


def setup_links(attachments: list[Attachment], keeper_net_fd: int,
                default_route: bool = True) -> list[str]:  # pragma: no cover
    """S: create, move, attach and configure every veth pair (see the module docstring).
    Returns warnings; raises OSError (or pyroute2's NetlinkError without `ip`).

    The pairs through iproute2's `ip` and the member's side with ioctls (vethip.py says why:
    no pyroute2 import before the command runs); without `ip`, all through pyroute2."""
    from slirpy.networks.vethip import configure_member, ip_binary
    ip = ip_binary()
    if ip is None:
        return _setup_links_pyroute2(attachments, keeper_net_fd, default_route)
    member_net = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _in_child(_plumb_with_ip, ip, attachments, keeper_net_fd, member_net)
    finally:
        os.close(member_net)
    gateways = [(a.network.net.prefixlen, a.network.gateway, a.network.gateway6)
                for a in attachments]
    return configure_member(attachments, gateways, VETH_MTU, default_route)


def _plumb_with_ip(ip: str, attachments: list[Attachment], keeper_net_fd: int,
                   member_net_fd: int) -> None:  # pragma: no cover
    """In the keeper's net namespace: stale peers dropped (vethip.drop_stale), then one
    `ip -batch -` creates the pairs (the member's end straight into the member's namespace),
    attaches the peers, up."""
    from slirpy.networks.vethip import drop_stale, exists, keeper_commands, run_batch
    from slirpy.sandbox.libc import CLONE_NEWNET, setns_fd
    setns_fd(keeper_net_fd, CLONE_NEWNET)
    for a in attachments:
        if not exists(a.network.bridge):
            raise OSError(f"network {a.network.name!r}: bridge {a.network.bridge} is missing")
    links = [(a.iface, a.peer, a.network.bridge) for a in attachments]
    drop_stale(ip, [peer for _, peer, _ in links])
    run_batch(ip, keeper_commands(links, member_net_fd, VETH_MTU), pass_fds=(member_net_fd,))


def _setup_links_pyroute2(attachments: list[Attachment], keeper_net_fd: int,
                          default_route: bool) -> list[str]:  # pragma: no cover
    """setup_links without `ip` (iproute2): the same through pyroute2."""
    from pyroute2 import IPRoute
    _in_child(_drop_stale, attachments, keeper_net_fd)
    with IPRoute() as ipr:
        for a in attachments:
            ipr.link("add", ifname=a.iface, kind="veth", peer=a.peer)
            peer = ipr.link_lookup(ifname=a.peer)[0]
            ipr.link("set", index=peer, net_ns_fd=keeper_net_fd)
    _in_child(_attach_peers, attachments, keeper_net_fd)
    return _configure(attachments, default_route)


def _in_child(fn: Callable[..., Any], *args: object) -> Any:  # pragma: no cover
    """fn(*args) in a forked child (holderns.in_child); OSError with its one-line error.

    Used for the work in the keeper's namespace (the child may setns() there without having to
    come back: this process's own /proc/self may already show another PID namespace), and for
    the whole set-up, so that S itself never imports pyroute2 (a member's memory)."""
    from slirpy.networks.holderns import in_child
    return in_child(fn, *args, died="the set-up process died")


def _drop_stale(attachments: list[Attachment], keeper_net_fd: int) -> None:  # pragma: no cover
    """In the keeper's net namespace: delete a peer of our name left by a killed predecessor
    with our address whose namespace the kernel has not torn down yet."""
    import errno

    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    from slirpy.sandbox.libc import CLONE_NEWNET, setns_fd
    setns_fd(keeper_net_fd, CLONE_NEWNET)
    with IPRoute() as ipr:
        for a in attachments:
            for idx in ipr.link_lookup(ifname=a.peer):
                try:
                    ipr.link("del", index=idx)
                except NetlinkError as e:      # the kernel's teardown deleted it first (vethip.drop_stale)
                    if e.code != errno.ENODEV:
                        raise


def _attach_peers(attachments: list[Attachment], keeper_net_fd: int) -> None:  # pragma: no cover
    """In the keeper's net namespace: each peer into its bridge, MTU, up."""
    from pyroute2 import IPRoute

    from slirpy.sandbox.libc import CLONE_NEWNET, setns_fd
    setns_fd(keeper_net_fd, CLONE_NEWNET)
    with IPRoute() as ipr:
        for a in attachments:
            idx = ipr.link_lookup(ifname=a.peer)[0]
            bridge = ipr.link_lookup(ifname=a.network.bridge)
            if not bridge:
                raise OSError(f"network {a.network.name!r}: bridge {a.network.bridge} is missing")
            ipr.link("set", index=idx, mtu=VETH_MTU, master=bridge[0], state="up")


def _configure(attachments: list[Attachment], default_route: bool) -> list[str]:  # pragma: no cover
    from pyroute2 import IPRoute

    from slirpy.netconf import set_ipv6_sysctls
    warnings: list[str] = []
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        for i, a in enumerate(attachments):
            idx = ipr.link_lookup(ifname=a.iface)[0]
            if a.ip6:
                warnings += set_ipv6_sysctls(a.iface, {"accept_dad": "0", "accept_ra": "0"})
            else:
                warnings += set_ipv6_sysctls(a.iface, {"disable_ipv6": "1"})
            ipr.link("set", index=idx, mtu=VETH_MTU)
            ipr.addr("add", index=idx, address=a.ip, prefixlen=a.network.net.prefixlen)
            if a.ip6:
                ipr.addr("add", index=idx, address=a.ip6, prefixlen=64, flags=IFA_F_NODAD)
            ipr.link("set", index=idx, state="up")
            if i == 0 and default_route:
                ipr.route("add", dst="0.0.0.0/0", gateway=a.network.gateway, oif=idx)
                if a.ip6 and a.network.gateway6:
                    ipr.route("add", dst="::/0", gateway=a.network.gateway6, oif=idx,
                              family=socket.AF_INET6)
    return warnings


def member_setup_for(attachments: list[Attachment], keeper_net_fd: int):  # type: ignore[no-untyped-def]
    """The `SandboxOptions.member_setup` callable: runs setup_links in S, one-line errors."""
    def setup() -> list[str]:  # pragma: no cover - runs in S
        from slirpy.sandbox import SandboxError
        try:
            return list(_in_child(setup_links, attachments, keeper_net_fd))
        except Exception as e:          # noqa: BLE001 - NetlinkError, OSError: one line
            raise SandboxError(f"cannot attach to the network: {' '.join(str(e).split())}") from None
    return setup
