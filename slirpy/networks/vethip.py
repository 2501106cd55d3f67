"""A member's veth pairs through iproute2's `ip -batch -`, and its side configured with ioctls.

Why not pyroute2 here: a member's set-up runs on the critical path of `slirpy run --network`
(before the command's first instruction), and importing pyroute2 costs more than everything
else that path does (perf/NOTES.md, "Member set-up without pyroute2").  Creating a veth pair,
moving one end into another namespace and enslaving it to a bridge are netlink-only requests
(no ioctl exists for them), so they go to the real `ip` (iproute2, the maintained tool; one
process, a few ms, commands on its stdin).  The member's own side (addresses, MTU, up, lo,
default routes) uses the kernel's interface ioctls of slirpy/ifioctl.py, as tap0 does, and the
IPv6 sysctls of netconf.py (DAD off through accept_dad=0, so the address is never tentative:
the ioctl cannot set IFA_F_NODAD).  Without `ip` the caller keeps its pyroute2 code.

Everything here runs in forked children of the sandbox supervisor S, inside the member's new
network namespace (in the keeper's user namespace) and its new PID namespace, whose /proc is
the namespace's own: a forked child has a pid there, so /proc/self/fd/N names its fds.
"""

from __future__ import annotations

import os
import socket
from typing import Protocol, Sequence

from slirpy.netconf import IP_PATHS, set_ipv6_sysctls

OUTPUT_MAX = 4096


class Link(Protocol):
    """What this module needs of a member's attachment (member.Attachment)."""
    iface: str
    ip: str
    ip6: str | None

    @property
    def peer(self) -> str: ...


def ip_binary(paths: tuple[str, ...] = IP_PATHS) -> str | None:
    return next((p for p in paths if os.access(p, os.X_OK)), None)


def run_batch(ip: str, commands: list[str], pass_fds: tuple[int, ...] = (), force: bool = False) -> None:
    """`ip -batch -` with `commands` on its stdin, in this process's namespaces; `pass_fds`
    stay open in it (same numbers). OSError with ip's own message, one line, on failure.
    `force`: `ip -force`, which goes on after a failed command (and still fails at the end)."""
    for fd in pass_fds:
        os.set_inheritable(fd, True)
    in_r, in_w = os.pipe2(os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    argv = [ip, *(["-force"] if force else []), "-batch", "-"]
    try:
        pid = os.posix_spawn(ip, argv, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"},
                             file_actions=[(os.POSIX_SPAWN_DUP2, in_r, 0),
                                           (os.POSIX_SPAWN_DUP2, out_w, 1),
                                           (os.POSIX_SPAWN_DUP2, out_w, 2)])
    except OSError as e:
        for fd in (in_r, in_w, out_r, out_w):
            os.close(fd)
        raise OSError(f"cannot run {ip}: {e.strerror or e}") from None
    os.close(in_r)
    os.close(out_w)
    try:
        os.write(in_w, "".join(c + "\n" for c in commands).encode())   # a few hundred bytes
    except OSError:
        pass                    # ip died early: its status and output say why
    finally:
        os.close(in_w)
    with os.fdopen(out_r, "rb") as f:
        out = f.read(OUTPUT_MAX).decode(errors="replace")
    status = os.waitpid(pid, 0)[1]
    if os.waitstatus_to_exitcode(status) != 0:
        lines = [ln.strip() for ln in out.splitlines() if ln.strip()]
        raise OSError(f"ip: {'; '.join(lines) if lines else f'status {status}'}")


def exists(ifname: str) -> bool:
    try:
        socket.if_nametoindex(ifname)
        return True
    except OSError:
        return False


def drop_stale(ip: str, peers: list[str]) -> None:
    """Delete the peers of these names that exist in this (the keeper's) namespace: a killed
    predecessor's with our address, whose namespace the kernel has not torn down yet.  The
    kernel may finish that teardown, deleting the pair itself, at any moment, even between our
    look and our `link del`: so a failed delete is an error only if the device is still there
    (`ip -force` tries every delete)."""
    stale = [p for p in peers if exists(p)]
    if not stale:
        return
    try:
        run_batch(ip, [f"link del dev {p}" for p in stale], force=True)
    except OSError:
        if any(exists(p) for p in stale):
            raise


def keeper_commands(links: list[tuple[str, str, str]], member_net_fd: int, mtu: int) -> list[str]:
    """The batch run in the keeper's namespace for (iface, peer, bridge) triples, once
    `drop_stale` has run: the pair created with `iface` in the member's namespace (open at
    `member_net_fd`: iproute2 opens a netns argument that contains '/' as a path), the peer
    enslaved to its bridge and up."""
    cmds = []
    for iface, peer, bridge in links:
        cmds.append(f"link add name {peer} mtu {mtu} type veth peer name {iface} mtu {mtu} "
                    f"netns /proc/self/fd/{member_net_fd}")
        cmds.append(f"link set dev {peer} master {bridge} up")
    return cmds


def configure_member(links: Sequence[Link], gateways: Sequence[tuple[int, str, str | None]], mtu: int,
                     default_route: bool) -> list[str]:
    """The member's side, with ioctls: lo up; per link the IPv6 sysctls, MTU, address(es) with
    the prefix lengths in `gateways` (prefixlen4, gateway4, gateway6), up; default routes via
    the first link's gateways. Returns warnings; OSError names the step."""
    from slirpy.ifioctl import Interfaces
    warnings: list[str] = []
    step = "open a socket for interface ioctls"
    try:
        with Interfaces() as ifs:
            step = "bring lo up"
            ifs.set_up("lo")
            for i, (a, (plen, gw, gw6)) in enumerate(zip(links, gateways)):
                sysctls = {"accept_dad": "0", "accept_ra": "0"} if a.ip6 else {"disable_ipv6": "1"}
                warnings += set_ipv6_sysctls(a.iface, sysctls)
                step = f"find {a.iface}"
                idx = ifs.index(a.iface)
                step = f"set {a.iface} MTU {mtu}"
                ifs.set_mtu(a.iface, mtu)
                step = f"add address {a.ip}/{plen} to {a.iface}"
                ifs.add_addr4(a.iface, a.ip, _netmask(plen))
                if a.ip6:
                    step = f"add address {a.ip6}/64 to {a.iface}"
                    ifs.add_addr6(idx, a.ip6, 64)
                step = f"bring {a.iface} up"
                ifs.set_up(a.iface)
                if i == 0 and default_route:
                    step = f"add default route via {gw}"
                    ifs.add_default4(a.iface, gw)
                    if a.ip6 and gw6:
                        step = f"add default route via {gw6}"
                        ifs.add_default6(idx, gw6)
    except (OSError, ValueError) as e:
        raise OSError(f"cannot {step}: {getattr(e, 'strerror', None) or e}") from None
    return warnings


def _netmask(prefixlen: int) -> str:
    bits = (0xFFFFFFFF << (32 - prefixlen)) & 0xFFFFFFFF if prefixlen else 0
    return socket.inet_ntoa(bits.to_bytes(4, "big"))
