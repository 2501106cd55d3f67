"""DHCP at the gateway (issue 17, item 6): busybox `udhcpc` inside a namespace served in
slirp4netns mode without `-c` (the TAP left unconfigured, as for a guest that configures
itself) gets an address in network+15..+30, the router network+2 and the DNS server network+3,
from slirpy as from the real slirp4netns. The address it got then works: configured by hand
(the udhcpc script here only prints what it was given), a TCP download from the outer test
namespace arrives byte-exact.
"""

from __future__ import annotations

import shutil

import pytest

from tests.netns.test_slirp4netns_e2e import REAL_S4N, S4N, slirpy, target  # noqa: F401
from tests.netns.util import HOST_ADDR, expected

BUSYBOX = shutil.which("busybox")
pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_stray_processes"),
              pytest.mark.skipif(BUSYBOX is None, reason="busybox is not installed "
                                 "(helpers/setup-host installs busybox-static)")]

SCRIPT = """#!/bin/sh
[ "$1" = bound ] && echo "LEASE ip=$ip mask=$mask subnet=$subnet router=$router dns=$dns serverid=$serverid lease=$lease"
exit 0
"""
PROGRAMS = {"slirpy": S4N, "slirp4netns": [REAL_S4N or "slirp4netns"]}


@pytest.mark.parametrize("prog", ["slirpy", "slirp4netns"])
def test_udhcpc_gets_an_address_router_and_dns(target, slirpy, host_server, tmp_path, prog):  # noqa: F811
    if prog == "slirp4netns" and REAL_S4N is None:
        pytest.skip("slirp4netns is not installed")
    script = tmp_path / "udhcpc.sh"
    script.write_text(SCRIPT)
    script.chmod(0o755)
    s = slirpy(str(target.pid), "tap0", cmd=PROGRAMS[prog])
    assert s.wait_ready() == b"1"
    target.run("ip", "link", "set", "tap0", "up")
    res = target.run(BUSYBOX, "udhcpc", "-i", "tap0", "-f", "-q", "-n", "-t", "5", "-T", "2",
                     "-s", str(script), timeout=60)
    [line] = [l for l in res.stdout.splitlines() if l.startswith("LEASE ")]
    got = dict(kv.split("=", 1) for kv in line.split()[1:])
    last = int(got["ip"].rsplit(".", 1)[1])
    assert got["ip"].startswith("10.0.2.") and 15 <= last <= 30, got
    assert (got["router"], got["dns"], got["serverid"]) == ("10.0.2.2", "10.0.2.3", "10.0.2.2"), got
    assert got["subnet"] == "255.255.255.0" and int(got["lease"]) > 0, got
    # The address works: TCP from it to the outer test namespace, byte-exact.
    srv = host_server("source", HOST_ADDR, size=100_000, seed=3)
    target.run("ip", "addr", "add", got["ip"] + "/24", "dev", "tap0")
    target.run("ip", "route", "add", "default", "via", got["router"])
    [r] = target.guest_ops([{"op": "download", "host": HOST_ADDR, "port": srv.port}])
    assert r.get("len") == 100_000 and r.get("sha") == expected(100_000, 3), r
