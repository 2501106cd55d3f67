"""Run inside a fresh `unshare -Urn`: create tap0, configure it one way, print what `ip -j` sees.

Used by test_netconf_ioctl.py: `python tapconf_probe.py ioctl|pyroute2 JSON_KWARGS`.  The
pyroute2 way is the netlink configuration slirpy used before its ioctls (kept here as the
reference the new code must match)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from slirpy import netconf
from slirpy.config import build_net_config
from slirpy.tap import TapDevice


def configure_with_pyroute2(ifname: str, net, txqueuelen: int = 10000, hide_ipv6: bool = False) -> None:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        idx = ipr.link_lookup(ifname=ifname)[0]
        if net.guest_mac is not None:
            ipr.link("set", index=idx, address=":".join(f"{b:02x}" for b in net.guest_mac))
        ipr.link("set", index=idx, mtu=net.mtu)
        ipr.link("set", index=idx, txqlen=txqueuelen)
        netconf.set_ipv6_sysctls(ifname, netconf.ipv6_sysctls(net, hide_ipv6))
        ipr.addr("add", index=idx, address=str(net.guest), prefixlen=net.network.prefixlen)
        if net.ipv6:
            ipr.addr("add", index=idx, address=str(net.guest6), prefixlen=64, flags=0x02)
        ipr.link("set", index=idx, state="up")
        ipr.route("add", dst="0.0.0.0/0", gateway=str(net.gateway), oif=idx)
        if net.ipv6:
            ipr.route("add", dst="::/0", gateway=str(net.gateway6), oif=idx, family=socket.AF_INET6)


def ip_json(*args: str) -> object:
    return json.loads(subprocess.run(["ip", "-j", *args], check=True, capture_output=True, text=True).stdout)


def main() -> None:
    how, kwargs = sys.argv[1], json.loads(sys.argv[2])
    hide = bool(kwargs.pop("hide_ipv6", False))
    if "guest_mac" in kwargs:
        kwargs["guest_mac"] = bytes.fromhex(kwargs["guest_mac"])
    net = build_net_config(**kwargs)
    tap = TapDevice.create("tap0")
    if how == "pyroute2":
        configure_with_pyroute2("tap0", net, hide_ipv6=hide)
    else:
        netconf.configure("tap0", net, hide_ipv6=hide)
    conf = "/proc/sys/net/ipv6/conf/tap0"
    sysctls = {n: open(os.path.join(conf, n)).read().strip()
               for n in ("accept_dad", "accept_ra", "disable_ipv6")} if os.path.isdir(conf) else {}
    print(json.dumps({"addr": ip_json("addr"), "route4": ip_json("-4", "route", "show", "table", "all"),
                      "route6": ip_json("-6", "route", "show", "table", "all"),
                      "link": ip_json("-d", "link", "show", "tap0"), "sysctl": sysctls}))
    tap.close()


if __name__ == "__main__":
    main()
