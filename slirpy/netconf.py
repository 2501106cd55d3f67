"""Network configuration inside the sandbox: lo, the TAP interface, its addresses and default routes.

Runs in the sandbox child, inside the new network namespace, before any event loop exists
(pyroute2's synchronous ``IPRoute`` over netlink; it starts no threads).

IPv6 (when `NetConfig.ipv6`): before the link goes up, the interface's sysctls get
``accept_dad=0`` (no duplicate address detection: nobody else is on this link, and DAD would
keep every address, the link-local one too, tentative for a second after start) and
``accept_ra=0`` (the address and route are set here, statically: without it the guest would
also form a second SLAAC address from slirpy's Router Advertisements, and pick either as its
source). Then guest6/64 with IFA_F_NODAD, and a default route via gateway6. A guest that
configures itself (no ``-c`` in slirp4netns mode) still gets all of that from the RAs.

IPv6 off: nothing IPv6 is configured; with `hide_ipv6` (what ``slirpy run --no-ipv6`` asks)
the interface gets ``disable_ipv6=1``, so the guest has no IPv6 on it at all (no link-local
address, no router solicitations for slirpy to drop) and its resolver, seeing no IPv6
address, asks for A records only.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

from slirpy.config import NetConfig

if TYPE_CHECKING:  # pragma: no cover
    from pyroute2 import IPRoute

IFA_F_NODAD = 0x02
IPV6_CONF = "/proc/sys/net/ipv6/conf"


class NetconfError(Exception):
    """Configuring an interface failed; str() is one line naming the step and the kernel's reason."""


def _mac_str(mac: bytes) -> str:
    if len(mac) != 6:
        raise NetconfError(f"invalid guest MAC {mac.hex()!r}: must be 6 bytes")
    return ":".join(f"{b:02x}" for b in mac)


def ipv6_sysctls(net: NetConfig, hide_ipv6: bool = False) -> dict[str, str]:
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
    problems = []
    for name, value in values.items():
        try:
            with open(os.path.join(base, name), "w") as f:
                f.write(value)
        except OSError as e:
            problems.append(f"cannot set net.ipv6.conf.{ifname}.{name}={value}: {e.strerror or e}")
    return problems


def configure(ifname: str, net: NetConfig, txqueuelen: int = 10000, *,
              hide_ipv6: bool = False) -> list[str]:
    """Bring lo up; give `ifname` MTU, txqueuelen, MAC, the IPv6 sysctls, the guest addresses;
    up; default routes via the gateways. Returns warnings (IPv6 sysctls that could not be
    set); raises NetconfError for anything else.

    pyroute2 is imported here, not at module level: importing it takes ~120 ms, and doing
    that in the forked child lets the parent import its event loop meanwhile (start-up)."""
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    step = "open netlink socket"
    try:
        with IPRoute() as ipr:
            step = "find lo"
            lo = _index(ipr, "lo")
            step = "bring lo up"
            ipr.link("set", index=lo, state="up")
            step = f"find {ifname}"
            idx = _index(ipr, ifname)
            if net.guest_mac is not None:
                step = f"set {ifname} MAC address"
                ipr.link("set", index=idx, address=_mac_str(net.guest_mac))
            step = f"set {ifname} MTU {net.mtu}"
            ipr.link("set", index=idx, mtu=net.mtu)
            step = f"set {ifname} txqueuelen {txqueuelen}"
            ipr.link("set", index=idx, txqlen=txqueuelen)
            warnings = set_ipv6_sysctls(ifname, ipv6_sysctls(net, hide_ipv6))
            with_ipv6 = net.ipv6 and os.path.isdir(os.path.join(IPV6_CONF, ifname))
            if net.ipv6 and not with_ipv6:
                warnings.append(f"this kernel has no IPv6 (no {IPV6_CONF}/{ifname}): the "
                                "sandbox gets IPv4 only")
            step = f"add address {net.guest}/{net.network.prefixlen} to {ifname}"
            ipr.addr("add", index=idx, address=str(net.guest), prefixlen=net.network.prefixlen)
            if with_ipv6:
                step = f"add address {net.guest6}/64 to {ifname}"
                ipr.addr("add", index=idx, address=str(net.guest6), prefixlen=64, flags=IFA_F_NODAD)
            step = f"bring {ifname} up"
            ipr.link("set", index=idx, state="up")
            step = f"add default route via {net.gateway}"
            ipr.route("add", dst="0.0.0.0/0", gateway=str(net.gateway), oif=idx)
            if with_ipv6:
                step = f"add default route via {net.gateway6}"
                ipr.route("add", dst="::/0", gateway=str(net.gateway6), oif=idx,
                          family=socket.AF_INET6)
    except NetconfError:
        raise
    except NetlinkError as exc:
        code = exc.code if isinstance(exc.code, int) else 0
        reason = os.strerror(code) if code > 0 else str(exc)
        raise NetconfError(f"cannot {step}: {reason}") from None
    except OSError as exc:
        raise NetconfError(f"cannot {step}: {exc.strerror or exc}") from None
    return warnings


def _index(ipr: IPRoute, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise NetconfError(f"no interface named {ifname!r} in this network namespace")
    return found[0]
