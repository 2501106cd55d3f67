"""A member's set-up (`slirpy run --network`, issue 15) imports no pyroute2 (~130 ms) on its way to
the command: the veth pairs go through iproute2's `ip`, the member's side through ioctls
(slirpy/networks/vethip.py).  Checked by running the real member.setup_links in a fresh
`unshare -Urn` (the "keeper", with a bridge) and a network namespace unshared from it (the
"member"), with pyroute2 made unimportable (sys.modules["pyroute2"] = None, inherited by the
forked children): the set-up succeeds only if nothing on its path imports it.  The same probe
with `ip` hidden (the pyroute2 fallback) must fail, so the check can fail.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.unit.test_startup_imports import loaded_heavy_modules

PROBE = r"""
import json, os, subprocess, sys
HIDE_IP = sys.argv[1] == "hide-ip"
subprocess.run(["ip", "link", "add", "sbr3", "type", "bridge"], check=True)
subprocess.run(["ip", "link", "set", "sbr3", "up"], check=True)
sys.modules["pyroute2"] = None          # any import of it raises ImportError, here and in children
from slirpy.networks.defs import NetworkDef
from slirpy.networks import member, vethip
from slirpy.sandbox.libc import CLONE_NEWNET, setns_fd, unshare
if HIDE_IP:
    vethip.ip_binary = lambda *a: None
keeper = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
unshare(CLONE_NEWNET)
net = NetworkDef(name="t", index=3, subnet="10.89.3.0/24", gateway="10.89.3.1",
                 subnet6="fd89:0:0:3::/64", gateway6="fd89:0:0:3::1")
att = member.Attachment(network=net, ip="10.89.3.5", ip6="fd89:0:0:3::5", iface="eth0")
try:
    warnings = member.setup_links([att], keeper)
except Exception as e:
    print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
    sys.exit(0)
addr = json.loads(subprocess.run(["ip", "-j", "addr", "show", "eth0"], capture_output=True,
                                 text=True, check=True).stdout)
setns_fd(keeper, CLONE_NEWNET)
peer = json.loads(subprocess.run(["ip", "-j", "link", "show", att.peer], capture_output=True,
                                 text=True, check=True).stdout)
print(json.dumps({"warnings": warnings, "addr": addr, "peer": peer}))
"""


def run_probe(mode: str) -> dict:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip")
    res = subprocess.run(["unshare", "-Urn", sys.executable, "-c", PROBE, mode], capture_output=True,
                         text=True, timeout=60)
    if res.returncode != 0 and res.stderr.startswith("unshare:"):
        pytest.skip(f"no user namespace here: {res.stderr.strip()}")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_member_setup_runs_without_pyroute2() -> None:
    out = run_probe("ip")
    assert "error" not in out, out["error"]
    [link] = out["addr"]
    assert link["mtu"] == 65520 and "UP" in link["flags"]
    assert {(a["local"], a["prefixlen"]) for a in link["addr_info"] if a["scope"] == "global"} == \
        {("10.89.3.5", 24), ("fd89:0:0:3::5", 64)}
    [peer] = out["peer"]
    assert peer["master"] == "sbr3" and peer["mtu"] == 65520 and "UP" in peer["flags"]


def test_the_probe_fails_when_the_path_imports_pyroute2() -> None:
    out = run_probe("hide-ip")                  # the fallback imports pyroute2
    assert "ImportError" in out.get("error", "") or "pyroute2" in out.get("error", ""), out


def test_member_modules_import_no_pyroute2() -> None:
    probe = ("import sys, json, slirpy.networks.member, slirpy.networks.vethip, slirpy.networks.run\n"
             "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in HEAVY)))")
    assert "pyroute2" not in loaded_heavy_modules(probe)


def test_keeper_batch_names_every_device_with_its_keyword() -> None:
    # `ip` takes a bare word that is a prefix of a keyword for the keyword ("a" is "address"):
    # every device is named with `name`/`dev` (stale peers are drop_stale's, before this batch)
    from slirpy.networks import vethip
    assert vethip.keeper_commands([("eth0", "s0v2", "sbr0"), ("eth1", "s1v3", "sbr1")], 7, 65520) == [
        "link add name s0v2 mtu 65520 type veth peer name eth0 mtu 65520 netns /proc/self/fd/7",
        "link set dev s0v2 master sbr0 up",
        "link add name s1v3 mtu 65520 type veth peer name eth1 mtu 65520 netns /proc/self/fd/7",
        "link set dev s1v3 master sbr1 up",
    ]


class FakeKeeper:
    """vethip.exists and run_batch for drop_stale: devices present, and which of them the
    kernel's own teardown deletes first (before our `link del` gets there)."""

    def __init__(self, present: set[str], torn_down: set[str] = frozenset()) -> None:
        self.present = set(present)
        self.torn_down = set(torn_down)
        self.batches: list[tuple[list[str], bool]] = []

    def exists(self, name: str) -> bool:
        return name in self.present

    def run_batch(self, ip: str, commands: list[str], pass_fds: tuple[int, ...] = (), force: bool = False) -> None:
        self.batches.append((commands, force))
        self.present -= self.torn_down               # the teardown wins the race
        failed = []
        for cmd in commands:
            name = cmd.split()[-1]
            if name in self.present and name != "stuck0":
                self.present.discard(name)
            elif name not in self.present:
                failed.append(f'Cannot find device "{name}"')
            else:
                failed.append("Operation not supported")
        if failed:
            raise OSError("ip: " + "; ".join(failed))


@pytest.mark.parametrize("present, torn_down, left, raises", [
    (set(), set(), set(), False),                               # nothing stale: no `ip` at all
    ({"s0v2"}, set(), set(), False),                            # ours to delete
    ({"s0v2", "s1v3"}, {"s0v2"}, set(), False),                 # one gone first: not an error
    ({"s0v2", "stuck0"}, {"s0v2"}, {"stuck0"}, True),           # one that stays: an error
])
def test_drop_stale_forgives_what_the_kernel_deleted_first(monkeypatch: pytest.MonkeyPatch, present,
                                                           torn_down, left, raises) -> None:
    from slirpy.networks import vethip
    keeper = FakeKeeper(present, torn_down)
    monkeypatch.setattr(vethip, "exists", keeper.exists)
    monkeypatch.setattr(vethip, "run_batch", keeper.run_batch)
    peers = ["s0v2", "s1v3", "stuck0"]
    if raises:
        with pytest.raises(OSError, match="Operation not supported"):
            vethip.drop_stale("/usr/sbin/ip", peers)
    else:
        vethip.drop_stale("/usr/sbin/ip", peers)
    assert keeper.present == left
    assert keeper.batches == ([([f"link del dev {p}" for p in peers if p in present], True)] if present else [])


STALE_PROBE = r"""
import json, subprocess, sys
from slirpy.networks import vethip
subprocess.run(["ip", "link", "add", "name", "s0v7", "type", "veth", "peer", "name", "m0v7"], check=True)
looked = []
real = vethip.exists
def exists(name):           # s1v7 "existed" at the first look, then the kernel tore it down
    looked.append(name)
    return name == "s1v7" and looked.count(name) == 1 or real(name)
vethip.exists = exists
ip = vethip.ip_binary()
vethip.drop_stale(ip, ["s0v7", "s1v7"])
left = [l["ifname"] for l in json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True, text=True).stdout)]
try:
    vethip.drop_stale(ip, ["lo"])                 # a device that stays: its failure is reported
    refused = None
except OSError as e:
    refused = str(e)
print(json.dumps({"left": left, "refused": refused}))
"""


def test_drop_stale_with_the_real_ip() -> None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip")
    res = subprocess.run(["unshare", "-Urn", sys.executable, "-c", STALE_PROBE], capture_output=True,
                         text=True, timeout=60)
    if res.returncode != 0 and res.stderr.startswith("unshare:"):
        pytest.skip(f"no user namespace here: {res.stderr.strip()}")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["left"] == ["lo"]                        # both ends of the stale pair are gone
    assert out["refused"] is not None and out["refused"].startswith("ip: RTNETLINK answers: "), out
