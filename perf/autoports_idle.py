"""Idle cost of `-p auto`: CPU of slirpy's process with N listening sockets in the sandbox.

Run inside the outer test namespace: `helpers/testns .venv/bin/python perf/autoports_idle.py
[--seconds 60] [--counts 10,1000]`. For every N, with and without `-p auto`: start
`slirpy run` whose command opens N TCP listeners on 0.0.0.0 (and N UDP sockets), wait until
they are all published (with -p auto), then read utime+stime of slirpy's process
(/proc/PID/stat) over `--seconds`. Also times one scan of the sandbox's tables (the poll's
parsing and reading, in this process). Prints one line per cell; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import timeit
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from slirpy.api import request  # noqa: E402
from slirpy.autoports import AutoPorts  # noqa: E402
from slirpy.config import AutoPublish  # noqa: E402

GUEST = r'''
import resource, socket, sys, time
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
n = int(sys.argv[1]); keep = []
for i in range(n):
    t = socket.socket(); t.bind(("0.0.0.0", 20000 + i)); t.listen(); keep.append(t)
    u = socket.socket(type=socket.SOCK_DGRAM); u.bind(("0.0.0.0", 20000 + i)); keep.append(u)
print("READY", flush=True)
time.sleep(100000)
'''

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS       # utime, stime


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(x) for x in f.read().split()]


def cell(n: int, auto: bool, seconds: float, tmp: str) -> str:
    api = os.path.join(tmp, f"api-{n}-{auto}.sock")
    args = [sys.executable, "-m", "slirpy", "run", "--api-socket", api,
            "--limit", "max_udp_flows=4096"] + (["-p", "auto"] if auto else []) + \
        ["--", sys.executable, "-c", GUEST, str(n)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, cwd=REPO, start_new_session=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"READY"
        deadline = time.monotonic() + 120
        want = 2 * n if auto else 0
        while len(request(api, {"execute": "list_hostfwd"})["entries"]) < want:
            assert time.monotonic() < deadline, "ports not all published"
            time.sleep(0.5)
        time.sleep(2)                   # let the publication burst settle
        scan_us = ""
        if auto:
            sandbox_pid = children(proc.pid)[0]
            scanner = AutoPorts(_Ports(), AutoPublish(), sandbox_pid, defaultdict(int))  # type: ignore[arg-type]
            k = 20
            scan_us = f", one scan {timeit.timeit(scanner.scan, number=k) / k * 1e6:.0f} us"
        c0 = cpu_seconds(proc.pid)
        time.sleep(seconds)
        used = cpu_seconds(proc.pid) - c0
        return (f"N={n:5d} -p auto {'on ' if auto else 'off'}: {used:.2f} s CPU in {seconds:.0f} s "
                f"({100 * used / seconds:.2f} %){scan_us}")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


class _Ports:
    guest_addr = "10.0.2.100"
    guest_addr6 = "fd00::100"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--counts", default="10,1000")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in a.counts.split(",")):
            for auto in (False, True):
                print(cell(n, auto, a.seconds, tmp), flush=True)


if __name__ == "__main__":
    main()
