#!/usr/bin/env python3
"""Named networks' numbers (issue 15), printed as a table; never asserts anything.

    .venv/bin/python perf/networks.py [--time S] [--runs N] [--members K] [--json FILE]

Inside helpers/testns (re-executed there when needed), with its own XDG directories:
- member <-> member: iperf3 single stream between two members of one network, both
  directions, against the kernel reference: iperf3 over a plain veth pair into a namespace;
- member -> host: iperf3 from a member to 203.0.113.1, against a plain `slirpy run` doing
  the same (both go through slirpy's userspace stack);
- time to the command's first instruction: `slirpy run --network N` on a running network,
  against a plain `slirpy run` (from Popen to the command writing a FIFO);
- memory: RSS and PSS of every process of the user (routers, keepers, members) before and
  after K more idle members, per member.
Numbers go to perf/NOTES.md by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
HOST = "203.0.113.1"


def slirpy(env: dict, *args: str, **kw: object) -> subprocess.Popen:
    return subprocess.Popen([PY, "-m", "slirpy", *args], env=env, cwd=REPO, **kw)  # type: ignore[call-overload]


def iperf_gbps(out: str) -> float:
    data = json.loads(out)
    return data["end"]["sum_received"]["bits_per_second"] / 1e9


def member_iperf(env: dict, args: list[str], secs: int) -> float:
    res = subprocess.run([PY, "-m", "slirpy", "run", "--network", "n", "--", "iperf3", "-J", "-t", str(secs),
                          *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=secs + 60)
    if res.returncode:
        raise RuntimeError(res.stderr or res.stdout[-500:])
    return iperf_gbps(res.stdout)


def plain_iperf(env: dict, args: list[str], secs: int) -> float:
    res = subprocess.run([PY, "-m", "slirpy", "run", "--", "iperf3", "-J", "-t", str(secs), *args], env=env,
                         cwd=REPO, capture_output=True, text=True, timeout=secs + 60)
    if res.returncode:
        raise RuntimeError(res.stderr or res.stdout[-500:])
    return iperf_gbps(res.stdout)


def veth_reference(secs: int, reverse: bool) -> float:
    ns = subprocess.Popen(["unshare", "-n", "sleep", "600"])
    time.sleep(0.2)
    try:
        subprocess.run(["ip", "link", "add", "pvA", "type", "veth", "peer", "name", "pvB", "netns",
                        f"/proc/{ns.pid}/ns/net"], check=True)
        subprocess.run(["ip", "addr", "add", "192.168.77.1/24", "dev", "pvA"], check=True)
        subprocess.run(["ip", "link", "set", "pvA", "up", "mtu", "65520"], check=True)
        inside = ["nsenter", "-n", "-t", str(ns.pid)]
        subprocess.run(inside + ["sh", "-c", "ip link set lo up; ip link set pvB mtu 65520 up; "
                                 "ip addr add 192.168.77.2/24 dev pvB"], check=True)
        srv = subprocess.Popen(inside + ["iperf3", "-s", "-1"], stdout=subprocess.DEVNULL)
        time.sleep(0.3)
        res = subprocess.run(["iperf3", "-J", "-c", "192.168.77.2", "-t", str(secs)] + (["-R"] if reverse else []),
                             capture_output=True, text=True, timeout=secs + 30)
        srv.wait(10)
        return iperf_gbps(res.stdout)
    finally:
        subprocess.run(["ip", "link", "del", "pvA"], check=False)
        ns.kill()
        ns.wait()


def first_instruction(env: dict, opts: list[str]) -> float:
    with tempfile.TemporaryDirectory() as d:
        fifo = os.path.join(d, "f")
        os.mkfifo(fifo)
        t0 = time.monotonic()
        p = slirpy(env, "run", *opts, "--", "sh", "-c", f"echo 1 > {fifo}", stdout=subprocess.DEVNULL)
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        select.select([fd], [], [], 30)
        dt = time.monotonic() - t0
        os.close(fd)
        p.wait(30)
        return dt


def memory(pids: list[int]) -> tuple[int, int]:
    rss = pss = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            pass
    return rss, pss


def user_pids() -> list[int]:
    me = os.getpid()
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != me]


def med(xs: list[float]) -> str:
    return f"{statistics.median(xs):.3f} ({min(xs):.3f}-{max(xs):.3f})"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--time", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--json")
    a = ap.parse_args(argv)
    if os.environ.get("SLIRPY_TESTNS") != "1":
        testns = str(REPO / "helpers" / "testns")
        os.execv(testns, [testns, PY, str(Path(__file__).resolve()), *argv])
    root = Path(tempfile.mkdtemp())
    env = dict(os.environ, XDG_RUNTIME_DIR=str(root / "run"), XDG_DATA_HOME=str(root / "data"))
    (root / "run").mkdir(mode=0o700)
    subprocess.run([PY, "-m", "slirpy", "network", "create", "n"], env=env, cwd=REPO, check=True)
    host_srv = subprocess.Popen(["iperf3", "-s", "-B", HOST], stdout=subprocess.DEVNULL)
    srv = slirpy(env, "run", "--network", "n", "--name", "srv", "--", "iperf3", "-s", stdout=subprocess.DEVNULL)
    time.sleep(3)
    try:
        out = measure(a, env)
    except Exception:
        log = root / "run" / "slirpy" / "holder.log"
        print(log.read_text()[-3000:] if log.exists() else "no holder.log", file=sys.stderr)
        raise
    finally:
        srv.terminate()
        host_srv.terminate()
    for k, v in out.items():
        print(f"{k:40} {med(v)}")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


def measure(a: argparse.Namespace, env: dict) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for _ in range(a.runs):
        for rev in (False, True):
            tag = "to-server" if not rev else "from-server"
            out.setdefault(f"member-member {tag} Gbit/s", []).append(
                member_iperf(env, ["-c", "srv"] + (["-R"] if rev else []), a.time))
            out.setdefault(f"veth reference {tag} Gbit/s", []).append(veth_reference(a.time, rev))
            out.setdefault(f"member->host {tag} Gbit/s", []).append(
                member_iperf(env, ["-c", HOST] + (["-R"] if rev else []), a.time))
            out.setdefault(f"plain run->host {tag} Gbit/s", []).append(
                plain_iperf(env, ["-c", HOST] + (["-R"] if rev else []), a.time))
        out.setdefault("first instruction, member (s)", []).append(first_instruction(env, ["--network", "n"]))
        out.setdefault("first instruction, plain run (s)", []).append(first_instruction(env, []))
    before = memory(user_pids())
    idle = [slirpy(env, "run", "--network", "n", "--", "sleep", "600", stdout=subprocess.DEVNULL)
            for _ in range(a.members)]
    time.sleep(5)
    after = memory(user_pids())
    out["RSS per idle member (MiB)"] = [(after[0] - before[0]) / a.members / 1024]
    out["PSS per idle member (MiB)"] = [(after[1] - before[1]) / a.members / 1024]
    for p in idle:
        p.terminate()
    for p in idle:
        p.wait(30)
    return out


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
