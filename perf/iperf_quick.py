#!/usr/bin/env python3
"""Quick single-stream iperf3 throughput: slirpy next to slirp4netns.

Cells: direction (sandbox->host = "up", host->sandbox = "down", i.e. iperf3 -R) x MTU
(1500, 65520) x implementation; `--runs` runs per cell (default 3), reported as
median/min/max Gbit/s as measured by the iperf3 receiver, plus the slirpy/slirp4netns ratio of
medians.

Everything runs inside helpers/testns (the script re-executes itself there when needed): the
iperf3 server listens on 203.0.113.1 in that outer namespace, which is "the host" for both
sandboxes.

- slirpy:      python -m slirpy run --mtu N -- iperf3 -c 203.0.113.1 ...
- slirp4netns: a `unshare -Urn` namespace holding `sleep`, `slirp4netns --configure --mtu=N
               --disable-host-loopback PID tap0`, and the iperf3 client run in it via nsenter.

Usage:  python perf/iperf_quick.py [--runs 3] [--time 5] [--mtu 1500 --mtu 65520]
                                   [--only slirpy|slirp4netns] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TESTNS = REPO / "helpers" / "testns"
SERVER_ADDR = "203.0.113.1"


def in_testns() -> bool:
    if os.environ.get("SLIRPY_TESTNS") != "1":
        return False
    if sorted(n for _, n in socket.if_nameindex()) != ["lo"]:
        return False
    with socket.socket() as s:
        try:
            s.bind((SERVER_ADDR, 0))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind((SERVER_ADDR, 0))
        return s.getsockname()[1]


class IperfServer:
    def __init__(self):
        self.port = free_port()
        self.proc = subprocess.Popen(["iperf3", "-s", "-B", SERVER_ADDR, "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection((SERVER_ADDR, self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("iperf3 server did not start")

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)


def client_argv(port: int, seconds: int, reverse: bool) -> list[str]:
    argv = ["iperf3", "-c", SERVER_ADDR, "-p", str(port), "-t", str(seconds), "-J"]
    if reverse:
        argv.append("-R")
    return argv


def parse_gbps(out: str) -> float:
    data = json.loads(out)
    if "error" in data:
        raise RuntimeError(f"iperf3: {data['error']}")
    return data["end"]["sum_received"]["bits_per_second"] / 1e9


def run_slirpy(mtu: int, port: int, seconds: int, reverse: bool) -> float:
    argv = [sys.executable, "-m", "slirpy", "run", "--mtu", str(mtu), "--",
            *client_argv(port, seconds, reverse)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, cwd=REPO)
    if r.returncode != 0:
        raise RuntimeError(f"slirpy run failed ({r.returncode}): {r.stderr.strip()[-500:]} "
                           f"{r.stdout.strip()[-300:]}")
    return parse_gbps(r.stdout)


def run_slirp4netns(mtu: int, port: int, seconds: int, reverse: bool) -> float:
    holder = subprocess.Popen(["unshare", "-Urn", "--map-root-user", "sleep", "infinity"])
    slirp = None
    try:
        # Wait until the holder is in its own network namespace before attaching.
        my_ns = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{holder.pid}/ns/net") == my_ns:
            if time.monotonic() > deadline:
                raise RuntimeError("unshare did not start")
            time.sleep(0.01)
        rfd, wfd = os.pipe()
        slirp = subprocess.Popen(["slirp4netns", "--configure", f"--mtu={mtu}",
                                  "--disable-host-loopback", f"--ready-fd={wfd}",
                                  str(holder.pid), "tap0"],
                                 pass_fds=(wfd,), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE)
        os.close(wfd)
        with os.fdopen(rfd, "rb") as ready:
            if ready.read(1) != b"1":
                raise RuntimeError("slirp4netns did not become ready: "
                                   + slirp.stderr.read().decode(errors="replace")[-500:])
        r = subprocess.run(["nsenter", "-t", str(holder.pid), "-U", "-n", "--preserve-credentials",
                            *client_argv(port, seconds, reverse)],
                           capture_output=True, text=True, timeout=seconds + 60)
        if r.returncode != 0:
            raise RuntimeError(f"iperf3 via slirp4netns failed: {r.stderr.strip()} {r.stdout[-300:]}")
        return parse_gbps(r.stdout)
    finally:
        if slirp is not None:
            slirp.terminate()
            slirp.wait(10)
        holder.kill()
        holder.wait(10)


RUNNERS = {"slirpy": run_slirpy, "slirp4netns": run_slirp4netns}


def fmt(values: list[float]) -> str:
    if not values:
        return "failed"
    return f"{statistics.median(values):6.2f} ({min(values):.2f}-{max(values):.2f})"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--time", type=int, default=5, help="seconds per iperf3 run")
    ap.add_argument("--mtu", type=int, action="append", help="repeatable; default 1500 and 65520")
    ap.add_argument("--only", choices=sorted(RUNNERS), action="append")
    ap.add_argument("--json", help="also write the raw numbers here")
    args = ap.parse_args(argv)

    if not in_testns():
        testns = str(TESTNS)
        os.execv(testns, [testns, sys.executable, str(Path(__file__).resolve()), *argv])

    for tool in ("iperf3", "slirp4netns", "unshare", "nsenter"):
        if shutil.which(tool) is None:
            print(f"missing {tool}: run sudo helpers/setup-host", file=sys.stderr)
            return 1
    impls = args.only or ["slirpy", "slirp4netns"]
    mtus = args.mtu or [1500, 65520]
    directions = [("up", False), ("down", True)]
    results: dict[str, list[float]] = {}
    errors: dict[str, str] = {}
    server = IperfServer()
    try:
        for mtu in mtus:
            for dname, reverse in directions:
                for impl in impls:
                    key = f"{impl}/{dname}/{mtu}"
                    results[key] = []
                    for i in range(args.runs):
                        try:
                            gbps = RUNNERS[impl](mtu, server.port, args.time, reverse)
                        except (RuntimeError, subprocess.TimeoutExpired, ValueError, KeyError) as e:
                            errors[key] = str(e)
                            print(f"  {key} run {i + 1}: FAILED: {e}", file=sys.stderr)
                            continue
                        results[key].append(gbps)
                        print(f"  {key} run {i + 1}: {gbps:.2f} Gbit/s", file=sys.stderr)
    finally:
        server.close()

    print(f"\niperf3 single stream, {args.time} s per run, {args.runs} runs per cell; "
          f"Gbit/s median (min-max) at the receiver; kernel {os.uname().release}, "
          f"{os.cpu_count()} CPUs")
    header = f"{'direction':<16}{'MTU':>6}  " + "".join(f"{i:>22}" for i in impls)
    if len(impls) == 2:
        header += f"{'ratio':>10}"
    print(header)
    for mtu in mtus:
        for dname, _ in directions:
            label = "sandbox->host" if dname == "up" else "host->sandbox"
            row = f"{label:<16}{mtu:>6}  "
            cells = [results.get(f"{i}/{dname}/{mtu}", []) for i in impls]
            row += "".join(f"{fmt(c):>22}" for c in cells)
            if len(impls) == 2:
                if all(cells):
                    row += f"{statistics.median(cells[0]) / statistics.median(cells[1]):>9.2f}x"
                else:
                    row += f"{'-':>10}"
            print(row)
    if len(impls) == 2:
        print(f"ratio = {impls[0]} / {impls[1]} (medians)")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "errors": errors,
                                               "time": args.time, "runs": args.runs}, indent=1))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
