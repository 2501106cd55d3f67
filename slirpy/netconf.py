"""Network configuration inside the sandbox: lo, the TAP interface, its address and default route.

Runs in the sandbox child, inside the new network namespace, before any event loop exists
(pyroute2's synchronous ``IPRoute`` over netlink; it starts no threads).
"""

from __future__ import annotations

import os

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from slirpy.config import NetConfig


class NetconfError(Exception):
    """Configuring an interface failed; str() is one line naming the step and the kernel's reason."""


def _mac_str(mac: bytes) -> str:
    if len(mac) != 6:
        raise NetconfError(f"invalid guest MAC {mac.hex()!r}: must be 6 bytes")
    return ":".join(f"{b:02x}" for b in mac)


def configure(ifname: str, net: NetConfig, txqueuelen: int = 10000) -> None:
    """Bring lo up; give `ifname` MTU, txqueuelen, MAC, guest address; up; default route via gateway."""
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
            step = f"add address {net.guest}/{net.network.prefixlen} to {ifname}"
            ipr.addr("add", index=idx, address=str(net.guest), prefixlen=net.network.prefixlen)
            step = f"bring {ifname} up"
            ipr.link("set", index=idx, state="up")
            step = f"add default route via {net.gateway}"
            ipr.route("add", dst="0.0.0.0/0", gateway=str(net.gateway), oif=idx)
    except NetconfError:
        raise
    except NetlinkError as exc:
        code = exc.code if isinstance(exc.code, int) else 0
        reason = os.strerror(code) if code > 0 else str(exc)
        raise NetconfError(f"cannot {step}: {reason}") from None
    except OSError as exc:
        raise NetconfError(f"cannot {step}: {exc.strerror or exc}") from None


def _index(ipr: IPRoute, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise NetconfError(f"no interface named {ifname!r} in this network namespace")
    return found[0]
