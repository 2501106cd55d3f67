"""Network configuration inside the sandbox: lo, the TAP interface, its addresses and default routes.

Runs in the sandbox child, inside the new network namespace, before any event loop exists, with
the kernel's interface ioctls (slirpy/ifioctl.py says why not pyroute2: start-up time).

IPv6 (when `NetConfig.ipv6`): before the link goes up, the interface's sysctls get
``accept_dad=0`` (no duplicate address detection: nobody else is on this link, and DAD would
keep every address, the link-local one too, tentative for a second after start) and
``accept_ra=0`` (the address and route are set here, statically: without it the guest would
also form a second SLAAC address from slirpy's Router Advertisements, and pick either as its
source). Then guest6/64 (no DAD: accept_dad=0 already), and a default route via gateway6.
The kernel still adds that address tentative and clears the flag from deferred work (the DAD
worker, which waits for the RTNL lock: a namespace being torn down elsewhere holds it for
milliseconds); a tentative address is no source address, so a command's first IPv6 connect would
fail with EADDRNOTAVAIL. configure() therefore returns only once a socket can bind to the
address (`wait_ipv6_ready`): at once, nearly always. A guest that configures itself (no ``-c``
in slirp4netns mode) still gets all of that from the RAs.

IPv6 off: nothing IPv6 is configured; with `hide_ipv6` (what ``slirpy run --no-ipv6`` asks)
the interface gets ``disable_ipv6=1``, so the guest has no IPv6 on it at all (no link-local
address, no router solicitations for slirpy to drop) and its resolver, seeing no IPv6
address, asks for A records only.
"""

from __future__ import annotations

import errno
import os
import socket
import time

from slirpy.ifioctl import Interfaces

TYPE_CHECKING = False   # typing's, without importing typing on the way to the ready fd (quickready.py)
if TYPE_CHECKING:  # pragma: no cover
    import ipaddress
    from typing import Callable, Protocol

    class TapNetwork(Protocol):
        """What configuring the TAP reads of its network: a config.NetConfig is one.  A protocol,
        so that slirp4netns mode can configure its TAP before it imports config.py (quickready.py)."""

        @property
        def mtu(self) -> int: ...
        @property
        def offload(self) -> bool: ...
        @property
        def guest_mac(self) -> bytes | None: ...
        @property
        def network(self) -> ipaddress.IPv4Network: ...
        @property
        def guest(self) -> ipaddress.IPv4Address: ...
        @property
        def gateway(self) -> ipaddress.IPv4Address: ...
        @property
        def ipv6(self) -> bool: ...
        @property
        def guest6(self) -> ipaddress.IPv6Address: ...
        @property
        def gateway6(self) -> ipaddress.IPv6Address: ...


IPV6_CONF = "/proc/sys/net/ipv6/conf"


class NetconfError(Exception):
    """Configuring an interface failed; str() is one line naming the step and the kernel's reason."""


def _mac(mac: bytes) -> bytes:
    if len(mac) != 6:
        raise NetconfError(f"invalid guest MAC {mac.hex()!r}: must be 6 bytes")
    return mac


def ipv6_sysctls(net: TapNetwork, hide_ipv6: bool = False) -> dict[str, str]:
    """The per-interface IPv6 sysctls set before the link goes up (names under conf/IFNAME/)."""
    if net.ipv6:
        return {"accept_dad": "0", "accept_ra": "0"}
    return {"disable_ipv6": "1"} if hide_ipv6 else {}


def set_ipv6_sysctls(ifname: str, values: dict[str, str], root: str = IPV6_CONF) -> list[str]:
    """Write `values` under root/IFNAME/; the problems, one line each (none: an empty list).
    Without root/IFNAME (a kernel without IPv6) there is nothing to set."""
    base = os.path.join(root, ifname)
    if not values or not os.path.isdir(base):
        return []
    return _write_sysctls([(os.path.join(base, name), f"net.ipv6.conf.{ifname}.{name}", value)
                           for name, value in values.items()])


def _write_sysctls(items: list[tuple[str, str, str]]) -> list[str]:
    """Write each (path, dotted name, value); the problems, one line each."""
    problems = []
    for path, name, value in items:
        try:
            with open(path, "w") as f:
                f.write(value)
        except OSError as e:
            problems.append(f"cannot set {name}={value}: {e.strerror or e}")
    return problems


# What the guest's kernel may hold for a neighbour it is still resolving (the gateway's ARP or
# NDP answer), per interface, instead of the kernel's 208 KiB. The command of `slirpy run` and a
# slirp4netns-mode guest may send as soon as the interface is up, before slirpy serves it
# (launch.releases_early, the ready fd): the gateway is then unresolved until slirpy answers, and
# a full queue drops its oldest frames: the first datagrams a command sends.
UNRES_QLEN_BYTES = 4 << 20
NEIGH_ROOT = "/proc/sys/net"


def set_unres_qlen(ifname: str, ipv6: bool, value: int = UNRES_QLEN_BYTES,
                   root: str = NEIGH_ROOT) -> list[str]:
    """neigh/IFNAME/unres_qlen_bytes of IPv4 (and IPv6) = `value`; problems as warnings."""
    return _write_sysctls([(os.path.join(root, family, "neigh", ifname, "unres_qlen_bytes"),
                            f"net.{family}.neigh.{ifname}.unres_qlen_bytes", str(value))
                           for family in (("ipv4", "ipv6") if ipv6 else ("ipv4",))])


TXQUEUELEN = 10000
IP_PATHS = ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip")
NSENTER_PATHS = ("/usr/bin/nsenter", "/bin/nsenter")


def set_txqueuelen(ifname: str, qlen: int, ip_paths: tuple[str, ...] = IP_PATHS,
                   in_namespaces_of: int | None = None) -> list[str]:
    """`ip link set dev IFNAME txqueuelen QLEN`; the problem, if any, as a one-line warning.
    `in_namespaces_of` PID: run it in that process's user and net namespaces (`nsenter`), and
    in no new PID namespace, where it would take the pid the command should get.

    Its ioctl (SIOCSIFTXQLEN) needs CAP_NET_ADMIN in the initial user namespace, and the other
    ways need netlink or a sysfs of this network namespace: iproute2's `ip` does it through
    netlink in a few ms.  Only a performance setting (the queue the guest fills while slirpy
    is busy): without it the kernel's default (500 for a TAP) stays."""
    return start_txqueuelen(ifname, qlen, ip_paths, in_namespaces_of)()


def start_txqueuelen(ifname: str, qlen: int, ip_paths: tuple[str, ...] = IP_PATHS,
                     in_namespaces_of: int | None = None) -> Callable[[], list[str]]:
    """set_txqueuelen in two halves: start `ip` and return at once; the function returned
    waits for it and gives the warnings (call it exactly once).  `slirpy run` lets the
    command start in between: the queue length is no reason to hold it back."""
    ip = next((p for p in ip_paths if os.access(p, os.X_OK)), None)
    what = f"cannot set {ifname} txqueuelen {qlen}"
    if ip is None:
        return lambda: [f"{what}: no `ip` command (iproute2) in {', '.join(ip_paths)}"]
    argv = [ip, "link", "set", "dev", ifname, "txqueuelen", str(qlen)]
    if in_namespaces_of is not None:
        nsenter = next((p for p in NSENTER_PATHS if os.access(p, os.X_OK)), None)
        if nsenter is None:
            return lambda: [f"{what}: no `nsenter` command (util-linux) in {', '.join(NSENTER_PATHS)}"]
        argv = [nsenter, "-t", str(in_namespaces_of), "-U", "-n", "--preserve-credentials", *argv]
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = os.posix_spawn(argv[0], argv,
                             {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"},
                             file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                                           (os.POSIX_SPAWN_DUP2, err_w, 1),
                                           (os.POSIX_SPAWN_DUP2, err_w, 2)])
    except OSError as e:
        os.close(err_r)
        failed = f"{what}: cannot run {argv[0]}: {e.strerror or e}"
        return lambda: [failed]
    finally:
        os.close(err_w)

    def finish() -> list[str]:
        with os.fdopen(err_r, "rb") as f:
            out = f.read(4096).decode(errors="replace").strip()
        status = os.waitpid(pid, 0)[1]
        if os.waitstatus_to_exitcode(status) != 0:
            return [f"{what}: {argv[0]} failed: {out.splitlines()[-1] if out else f'status {status}'}"]
        return []
    return finish


def configure(ifname: str, net: TapNetwork, txqueuelen: int | None = TXQUEUELEN, *,
              hide_ipv6: bool = False) -> list[str]:
    """Bring lo up; give `ifname` MTU, txqueuelen (None: the caller sets it later, with
    `set_txqueuelen`), MAC, the IPv6 sysctls, the neighbour queue (`set_unres_qlen`), the guest
    addresses; up; default routes via the gateways; then waits for the IPv6 address to be
    usable (`wait_ipv6_ready`). Returns warnings (sysctls or the queue length that could not
    be set, an IPv6 address still tentative); raises NetconfError for anything else.

    With the interface ioctls of ifioctl.py, not pyroute2: this runs on the critical path of
    start-up, where importing pyroute2 would cost more than all the rest."""
    step = "open a socket for interface ioctls"
    try:
        with Interfaces() as ifs:
            step = "bring lo up"
            ifs.set_up("lo")
            step = f"find {ifname}"
            idx = _index(ifs, ifname)
            if net.guest_mac is not None:
                step = f"set {ifname} MAC address"
                ifs.set_mac(ifname, _mac(net.guest_mac))
            step = f"set {ifname} MTU {net.mtu}"
            ifs.set_mtu(ifname, net.mtu)
            warnings = set_ipv6_sysctls(ifname, ipv6_sysctls(net, hide_ipv6))
            if txqueuelen is not None:
                warnings += set_txqueuelen(ifname, txqueuelen)
            with_ipv6 = net.ipv6 and os.path.isdir(os.path.join(IPV6_CONF, ifname))
            if net.ipv6 and not with_ipv6:
                warnings.append(f"this kernel has no IPv6 (no {IPV6_CONF}/{ifname}): the "
                                "sandbox gets IPv4 only")
            warnings += set_unres_qlen(ifname, with_ipv6)
            step = f"add address {net.guest}/{net.network.prefixlen} to {ifname}"
            ifs.add_addr4(ifname, str(net.guest), str(net.network.netmask))
            if with_ipv6:
                step = f"add address {net.guest6}/64 to {ifname}"
                ifs.add_addr6(idx, str(net.guest6), 64)
            step = f"bring {ifname} up"
            ifs.set_up(ifname)
            step = f"add default route via {net.gateway}"
            ifs.add_default4(ifname, str(net.gateway))
            if with_ipv6:
                step = f"add default route via {net.gateway6}"
                ifs.add_default6(idx, str(net.gateway6))
        if with_ipv6:
            warnings += wait_ipv6_ready(str(net.guest6))
    except NetconfError:
        raise
    except (OSError, ValueError) as exc:
        raise NetconfError(f"cannot {step}: {getattr(exc, 'strerror', None) or exc}") from None
    return warnings


IPV6_READY_TIMEOUT = 2.0


def wait_ipv6_ready(address: str, timeout: float = IPV6_READY_TIMEOUT) -> list[str]:
    """Return once `address` can be a source address: binding a socket to it works (the kernel
    refuses a tentative address with EADDRNOTAVAIL).  The problem as a warning if it still cannot
    after `timeout` seconds.  A bind, not /proc/net/if_inet6: the sandbox's supervisor has no
    /proc/self in its new PID namespace's /proc."""
    deadline = None
    pause = 0.0005
    while True:
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
                s.bind((address, 0))
            return []
        except OSError as e:
            if e.errno != errno.EADDRNOTAVAIL:
                return [f"cannot bind to the IPv6 address {address}: {e.strerror or e}"]
        now = time.monotonic()
        if deadline is None:
            deadline = now + timeout
        elif now >= deadline:
            return [f"the IPv6 address {address} is still tentative after {timeout:g} s: the "
                    "command's first IPv6 connections may fail"]
        time.sleep(pause)
        pause = min(pause * 2, 0.02)


def _index(ifs: Interfaces, ifname: str) -> int:
    try:
        return ifs.index(ifname)
    except OSError as exc:
        if exc.errno == errno.ENODEV:
            raise NetconfError(f"no interface named {ifname!r} in this network namespace") from None
        raise
