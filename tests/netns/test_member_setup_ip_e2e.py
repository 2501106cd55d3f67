"""A member's set-up through `ip -batch` + interface ioctls (slirpy/networks/vethip.py) against the
pyroute2 code it replaced (member._setup_links_pyroute2, still the fallback without `ip`): the
same member (one IPv6 network, one IPv4-only network, same addresses) started both ways, and
`ip -j` inside must show the same addresses, routes (every table), MTU, flags and IPv6 sysctls.

Two differences are expected and asserted, not hidden (as for tap0, test_netconf_ioctl_e2e.py):
the default routes added by ioctl carry the protocol `boot` (ip prints none) instead of
`static`, and the IPv6 address has no `nodad` flag (accept_dad=0 turns DAD off instead; the
address is not tentative).  Real holder, real `ip`, as the unprivileged user.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.netns.test_netconf_ioctl_e2e import pop_expected_differences
from tests.netns.test_networks_e2e import World
from tests.netns.util import REPO

pytestmark = [pytest.mark.netns]

# Inside the member: what the kernel says about its interfaces, as one JSON object.
DUMP = r"""
import json, subprocess
def ipj(*a):
    return json.loads(subprocess.run(["ip", "-j", *a], capture_output=True, text=True, check=True).stdout or "[]")
sysctl = {}
for dev in ("eth0", "eth1"):
    for name in ("accept_dad", "accept_ra", "disable_ipv6"):
        with open(f"/proc/sys/net/ipv6/conf/{dev}/{name}") as f:
            sysctl[f"{dev}.{name}"] = f.read().strip()
print(json.dumps({"addr": ipj("addr"), "route4": ipj("-4", "route", "show", "table", "all"),
                  "route6": ipj("-6", "route", "show", "table", "all"),
                  "link": ipj("-d", "link"), "sysctl": sysctl}))
"""

# `slirpy run`, with the pyroute2 fallback forced (as on a machine without iproute2's `ip`).
WITHOUT_IP = ("import sys, slirpy.networks.vethip as v\n"
              "v.ip_binary = lambda *a: None\n"
              "from slirpy.cli import main\n"
              "sys.argv = ['slirpy', *sys.argv[1:]]\n"
              "main()\n")

VOLATILE = ("ifindex", "link_index", "address", "broadcast", "perm_address", "link_netnsid",
            "preferred_life_time", "valid_life_time", "txqueuelen", "num_tx_queues",
            "num_rx_queues", "gso_max_size", "gso_max_segs", "gro_max_size", "tso_max_size",
            "tso_max_segs", "gso_ipv4_max_size", "gro_ipv4_max_size", "operstate", "linkmode")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    w = World(tmp_path_factory.mktemp("memberip"))
    assert w.slirpy("network", "create", "--ipv6", "m6").returncode == 0
    assert w.slirpy("network", "create", "m4").returncode == 0
    yield w
    w.stop()


def member_dump(world: World, with_ip: bool) -> dict:
    opts = ["run", "--network", "m6", "--ip", "10.89.0.7", "--network", "m4", "--ip", "10.89.1.9",
            "--", sys.executable, "-c", DUMP]
    head = [sys.executable, "-m", "slirpy"] if with_ip else [sys.executable, "-c", WITHOUT_IP]
    res = subprocess.run([*head, *opts], env=world.env, cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def scrub(value: object, link_local: set[str]) -> object:
    """Drop what differs between two runs of the same set-up (MACs, indexes, lifetimes...)."""
    if isinstance(value, dict):
        return {k: scrub(v, link_local) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [scrub(v, link_local) for v in value]
    if isinstance(value, str) and value in link_local:
        return "LINK-LOCAL"
    return value


def link_locals(seen: dict) -> set[str]:
    return {a["local"] for link in seen["addr"] for a in link.get("addr_info", ())
            if a["family"] == "inet6" and a["local"].startswith("fe80:")}


def test_member_interfaces_as_with_pyroute2(world: World) -> None:
    new = member_dump(world, with_ip=True)
    ref = member_dump(world, with_ip=False)
    # what both must show, stated once (not only "the same as the other")
    addrs = {link["ifname"]: {(a["local"], a["prefixlen"]) for a in link.get("addr_info", ())
                              if a.get("scope") == "global"} for link in new["addr"]}
    assert addrs["eth0"] == {("10.89.0.7", 24), ("fd89:0:0:0::7", 64)} or \
        addrs["eth0"] == {("10.89.0.7", 24), ("fd89::7", 64)}
    assert addrs["eth1"] == {("10.89.1.9", 24)}
    mtus = {link["ifname"]: link["mtu"] for link in new["link"]}
    assert mtus["eth0"] == mtus["eth1"] == 65520
    for link in new["link"]:
        assert "UP" in link["flags"], link
    defaults4 = [r for r in new["route4"] if r.get("dst") == "default"]
    assert [(r["gateway"], r["dev"]) for r in defaults4] == [("10.89.0.1", "eth0")]
    defaults6 = [r for r in new["route6"] if r.get("dst") == "default"]
    assert [(r["gateway"], r["dev"]) for r in defaults6] == [("fd89::1", "eth0")]
    assert new["sysctl"]["eth0.accept_dad"] == "0" and new["sysctl"]["eth0.accept_ra"] == "0"
    assert new["sysctl"]["eth1.disable_ipv6"] == "1"
    # then everything else, field by field, against the pyroute2 set-up
    pop_expected_differences(ref, new)
    assert json.dumps(scrub(new, link_locals(new)), sort_keys=True, indent=1) == \
        json.dumps(scrub(ref, link_locals(ref)), sort_keys=True, indent=1)
