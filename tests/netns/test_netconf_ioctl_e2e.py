"""netconf.configure (interface ioctls, ifioctl.py) against the pyroute2 netlink requests it
replaced: both configure a fresh tap0 in their own `unshare -Urn`, and `ip -j` must show the
same addresses, routes (every table), MTU, queue length, flags and IPv6 sysctls, IPv4 and IPv6.

The reference (tests/netns/tapconf_probe.py) is the pyroute2 code slirpy ran before.  Two
differences are expected and asserted, not hidden: default routes added by ioctl carry the
protocol `boot` (ip prints none) instead of `static`, and the IPv6 address has no `nodad`
flag (the interface's accept_dad=0 turns DAD off instead; the address is not tentative: configure
returns once the kernel's deferred DAD work has cleared the flag, netconf.wait_ipv6_ready).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.netns.util import REPO

pytestmark = [pytest.mark.netns]

PROBE = str(REPO / "tests" / "netns" / "tapconf_probe.py")


def probe(how: str, **kwargs: object) -> dict:
    out = subprocess.run(["unshare", "-Urn", sys.executable, PROBE, how, json.dumps(kwargs)],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def tap_mac(seen: dict) -> str:
    return next(link["address"] for link in seen["addr"] if link["ifname"] == "tap0")


def normalized(seen: dict, random_mac: bool) -> str:
    """`seen` as JSON text with the random MAC and the link-local address derived from it replaced."""
    text = json.dumps(seen, sort_keys=True)
    if random_mac:
        mac = tap_mac(seen)
        link_local = next((a["local"] for link in seen["addr"] for a in link.get("addr_info", ())
                           if a["family"] == "inet6" and a["local"].startswith("fe80:")), None)
        text = text.replace(mac, "MAC")
        if link_local is not None:
            text = text.replace(f'"{link_local}"', '"LINK-LOCAL"')
    return text


def pop_expected_differences(ref: dict, new: dict) -> None:
    """Check the two known differences, then remove them from both."""
    for key in ("route4", "route6"):
        for r_ref, r_new in zip(ref[key], new[key]):
            if r_ref.get("dst") == "default":
                assert r_ref.pop("protocol") == "static"
                assert "protocol" not in r_new          # boot: what an ioctl route gets
    for seen, has_nodad in ((ref, True), (new, False)):
        for link in seen["addr"]:
            for a in link.get("addr_info", ()):
                if a.get("scope") == "link":
                    # The kernel makes the link-local address when the link goes up and marks
                    # it ready (accept_dad=0: no DAD) once linkwatch, deferred work, has seen
                    # the carrier: for a moment it can still read tentative, either way.
                    a.pop("tentative", None)
                assert "tentative" not in a and "dadfailed" not in a
                if a["family"] == "inet6" and a["scope"] == "global":
                    assert a.pop("nodad", False) is has_nodad


CASES = {
    "default": {},
    "ipv4-only": {"ipv6": False},
    "ipv4-only-hidden": {"ipv6": False, "hide_ipv6": True},
    "mac-mtu-cidr": {"guest_mac": "02aabbccddee", "mtu": 1500, "cidr": "10.9.0.0/16",
                     "cidr6": "fd12:3456:789a:1::/64"},
    "small-mtu": {"mtu": 576},
}


@pytest.mark.parametrize("case", list(CASES))
def test_ioctls_configure_what_pyroute2_did(case: str) -> None:
    kwargs = CASES[case]
    ref, new = probe("pyroute2", **kwargs), probe("ioctl", **kwargs)
    net = {k: v for k, v in kwargs.items() if k != "hide_ipv6"}
    ipv6 = net.get("ipv6", net.get("mtu", 65520) >= 1280)
    if ipv6:
        pop_expected_differences(ref, new)
    else:
        for key in ("route4",):
            for r in ref[key]:
                if r.get("dst") == "default":
                    assert r.pop("protocol") == "static"
    random_mac = "guest_mac" not in kwargs
    assert normalized(new, random_mac) == normalized(ref, random_mac)


def test_the_probe_sees_what_it_should() -> None:
    # The comparison above could pass on two empty results: check one of them in full.
    seen = probe("ioctl", guest_mac="02aabbccddee", mtu=1500)
    tap = next(link for link in seen["addr"] if link["ifname"] == "tap0")
    assert tap["mtu"] == 1500 and tap["txqlen"] == 10000 and tap["address"] == "02:aa:bb:cc:dd:ee"
    assert "UP" in tap["flags"]
    lo = next(link for link in seen["addr"] if link["ifname"] == "lo")
    assert "UP" in lo["flags"]
    addrs = {(a["local"], a["prefixlen"]) for a in tap["addr_info"] if a["scope"] == "global"}
    assert addrs == {("10.0.2.100", 24), ("fd00::100", 64)}
    defaults = {(r["gateway"], r["dev"]) for r in seen["route4"] + seen["route6"] if r["dst"] == "default"}
    assert defaults == {("10.0.2.2", "tap0"), ("fd00::2", "tap0")}
    assert seen["sysctl"] == {"accept_dad": "0", "accept_ra": "0", "disable_ipv6": "0"}
    hidden = probe("ioctl", ipv6=False, hide_ipv6=True)
    assert hidden["sysctl"]["disable_ipv6"] == "1"
    assert hidden["route6"] == [r for r in hidden["route6"] if r.get("dev") == "lo"]
