"""Member<->member frames on a network's bridge (issue 15, speed): the holder turns br_netfilter's
bridge-nf-call-* off so that switched frames skip the inet table and conntrack, and keeps
anti-spoofing for them in `table bridge slirpy`. Real holder, real nft, as the unprivileged user.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slirpy.networks.nft import nft_binary
from tests.netns.test_networks_e2e import World

PY = sys.executable

# Member B: print the source address of the first UDP datagram on port 9999 (or "timeout").
RECEIVER = """
import socket, sys, pathlib
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 9999))
s.settimeout(20)
pathlib.Path(sys.argv[1]).touch()
try:
    print(s.recvfrom(100)[1][0], flush=True)
except socket.timeout:
    print("timeout", flush=True)
"""

# Member A: a UDP datagram to argv[1]:9999 from the forged source argv[2] (raw socket, with
# the IP header written here), then an ordinary one from its own address.
SENDER = """
import socket, struct, sys
dst, forged = sys.argv[1], sys.argv[2]
payload = b"spoof"
udp = struct.pack("!HHHH", 40000, 9999, 8 + len(payload), 0) + payload
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
                 socket.inet_aton(forged), socket.inet_aton(dst))
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
raw.sendto(ip + udp, (dst, 0))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b"genuine", (dst, 9999))
print("sent", flush=True)
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    w = World(tmp_path_factory.mktemp("bridge"))
    assert w.slirpy("network", "create", "--ipv6", "sw").returncode == 0
    # A member for the module's whole life: without one, the holder goes away IDLE_GRACE after
    # a test's last member exits, and with it the table and counters a test reads right after.
    w.start_server("swkeep", ["--network", "sw", "--ip", "10.89.0.9"])
    yield w
    w.stop()


def _in_holder(world: World, *argv: str) -> str:
    keeper = world.holder()["keeper_pid"]
    res = subprocess.run(["nsenter", "-U", "-n", "--preserve-credentials", "-t", str(keeper), *argv],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr
    return res.stdout


def _start_receiver(world: World, ip: str) -> subprocess.Popen:
    ready = world.root / f"recv-{ip}.ready"
    proc = subprocess.Popen([PY, "-m", "slirpy", "run", "--network", "sw", "--ip", ip, "--", PY, "-c",
                             RECEIVER, str(ready)], env=world.env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    world.procs.append(proc)
    deadline = time.monotonic() + 60
    while not ready.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "receiver not ready"
        time.sleep(0.05)
    return proc


def test_bridged_frames_skip_the_ip_hooks(world: World) -> None:
    recv = _start_receiver(world, "10.89.0.20")
    if not Path("/proc/sys/net/bridge").exists():
        pytest.skip("this kernel has no br_netfilter: bridged frames never meet the IP hooks")
    for name in ("iptables", "ip6tables", "arptables"):
        assert _in_holder(world, "cat", f"/proc/sys/net/bridge/bridge-nf-call-{name}").strip() == "0"
    table = _in_holder(world, nft_binary(), "list", "table", "bridge", "slirpy")
    assert 'iifname "s0v*" ip saddr != 10.89.0.0/24' in table
    recv.kill()


def test_a_forged_source_between_members_is_dropped_and_counted(world: World) -> None:
    recv = _start_receiver(world, "10.89.0.30")
    before = _spoof_count(world)
    res = world.run(["--network", "sw", "--ip", "10.89.0.31"], [PY, "-c", SENDER, "10.89.0.30", "192.0.2.77"])
    assert res.returncode == 0 and res.stdout.strip() == "sent", res.stderr
    out, _ = recv.communicate(timeout=60)
    assert out.strip() == "10.89.0.31"              # the forged datagram never arrived; the genuine one did
    assert _spoof_count(world) >= before + 1


def _spoof_count(world: World) -> int:
    res = world.slirpy("network", "inspect", "sw")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert any(r.get("family") == "bridge" and r.get("comment") == "sw: spoofed source" for r in info["rules"])
    return int(info["counters"].get("sw: spoofed source", {}).get("packets", 0))


def test_members_still_talk_over_ipv4_and_ipv6(world: World) -> None:
    world.start_server("swweb", ["--network", "sw", "--ip", "10.89.0.40"])
    v4 = world.peer(["--network", "sw", "--ip", "10.89.0.41"], "whoami", "10.89.0.40", "8000")
    assert v4["reply"].split()[0] == "10.89.0.41"
    v6 = world.peer(["--network", "sw", "--ip", "10.89.0.42"], "whoami", "fd89::28", "8000")
    assert v6["reply"].split()[0] == "fd89::2a"
