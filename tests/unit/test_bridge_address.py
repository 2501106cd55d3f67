"""A network's bridge keeps its MAC address while members' veths come and go (holderns).

A bridge created without an address follows the lowest MAC of its ports; the members' ARP
entries for their gateway then went stale at random (holderns.bridge_address says more). The
probe runs sync_bridges in a fresh `unshare -Urn` namespace and adds and removes a port whose
MAC is lower than the bridge's."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from slirpy.networks.holderns import bridge_address

PROBE = r"""
import json, subprocess
from slirpy.networks.holderns import sync_bridges
def mac(name):
    return json.loads(subprocess.run(["ip", "-j", "link", "show", name], capture_output=True, text=True,
                                     check=True).stdout)[0]["address"]
sync_bridges([{"bridge": "sbr3", "gateway": "10.89.3.1", "prefixlen": 24, "gateway6": None}])
seen = [mac("sbr3")]
for cmd in (["link", "add", "s3v9", "address", "02:00:00:00:00:01", "type", "veth", "peer", "name", "m3v9"],
            ["link", "set", "s3v9", "master", "sbr3", "up"]):
    subprocess.run(["ip", *cmd], check=True)
seen.append(mac("sbr3"))
subprocess.run(["ip", "link", "del", "s3v9"], check=True)
seen.append(mac("sbr3"))
print(json.dumps(seen))
"""


def test_bridge_addresses_are_fixed_locally_administered_and_distinct():
    assert bridge_address("sbr0") == "02:73:6c:62:00:00"
    assert bridge_address("sbr258") == "02:73:6c:62:01:02"
    assert len({bridge_address(f"sbr{i}") for i in range(300)}) == 300
    first = int(bridge_address("sbr7").split(":")[0], 16)
    assert first & 0x02 and not first & 0x01            # locally administered, unicast


def test_the_bridge_keeps_its_address_as_ports_come_and_go():
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip")
    pytest.importorskip("pyroute2")
    res = subprocess.run(["unshare", "-Urn", sys.executable, "-c", PROBE], capture_output=True, text=True,
                         timeout=60)
    if res.returncode != 0 and res.stderr.startswith("unshare:"):
        pytest.skip(f"no user namespace here: {res.stderr.strip()}")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == [bridge_address("sbr3")] * 3
