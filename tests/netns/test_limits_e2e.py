"""Limits under a real `slirpy run` (issue 7 part 5): SYN flood from inside the sandbox, and
slow readers on either side with slirpy's RSS sampled from /proc/PID/status.

SYN flood: raw SYNs (rawframes.py, AF_PACKET on tap0) to a host port that never completes a
handshake: a listener whose accept queue is full, so the host kernel drops the SYNs of
slirpy's connects. `net.ipv4.tcp_syn_retries` of the outer test namespace is lowered to 1 for
the test (restored after), so those connects fail with ETIMEDOUT after ~3 s and the table
can drain within the test. slirpy's RLIMIT_NOFILE soft limit is raised to the hard limit for
it (slirpy raises it itself too), so that Limits.max_half_open (1024) binds; the default-limit
case is its own test. The throughput of a download running alongside, with and
without the flood, is printed (run with -s), never asserted.

Slow reader: one side stops reading for a few seconds while the other pushes 128 MiB
(1 GiB with --long); slirpy's RSS must stay within START + 64 MiB (a memory bound, not a
timing); the curve is printed.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from .util import HOST_ADDR, REPO, expected, kill_session, pattern, slirpy_argv

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_stray_processes")]

RAW = str(Path(__file__).resolve().parent / "rawframes.py")
MiB = 1 << 20
MAX_HALF_OPEN = 1024            # Limits.max_half_open default
RSS_BOUND = 64 * MiB


def rss_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class Slirpy:
    """`slirpy run OPTIONS -- python rawframes.py SPEC`, with RSS sampling of the slirpy
    process (the parent runs the event loop; the sandbox is its child)."""

    def __init__(self, options: list[str], spec: dict, *, nofile: int | None = None, timeout: float = 240):
        self.tmp = tempfile.TemporaryDirectory()
        self.stats_path = Path(self.tmp.name) / "stats.json"
        args = slirpy_argv(*options, "--stats-file", str(self.stats_path)) + [sys.executable, RAW, json.dumps(spec)]

        def preexec():
            if nofile is not None:
                soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
                resource.setrlimit(resource.RLIMIT_NOFILE, (min(nofile, hard), hard))

        self.args = args
        self.timeout = timeout
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     stdin=subprocess.DEVNULL, start_new_session=True, cwd=REPO,
                                     preexec_fn=preexec)
        self.samples: list[tuple[float, int]] = []
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while self.proc.poll() is None:
            r = rss_of(self.proc.pid)
            if r is not None:
                self.samples.append((time.monotonic() - self.t0, r))
            time.sleep(0.05)

    def wait(self) -> tuple[dict, dict]:
        try:
            out, err = self.proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            kill_session(self.proc)
            out, err = self.proc.communicate()
            raise AssertionError(f"slirpy did not finish in {self.timeout}s\n{err[-3000:]}")
        self._sampler.join()
        desc = f"exit {self.proc.returncode}\n--- stdout\n{out[-3000:]}\n--- stderr\n{err[-3000:]}"
        assert self.proc.returncode == 0, desc
        lines = [l for l in out.splitlines() if l.startswith("{")]
        assert lines, desc
        assert self.stats_path.exists(), "no stats file\n" + desc
        result = json.loads(lines[-1]), json.loads(self.stats_path.read_text())
        self.tmp.cleanup()
        return result


# --------------------------------------------------------------------------- SYN flood

class BlackholePort:
    """A listener with a full accept queue: the kernel drops further SYNs to it, so a
    connect() from slirpy stays in SYN-SENT until the host's SYN retries run out."""

    def __init__(self):
        self.lsock = socket.socket()
        self.lsock.bind((HOST_ADDR, 0))
        self.lsock.listen(0)
        self.port = self.lsock.getsockname()[1]
        self.fillers = []
        for _ in range(2):          # backlog 0 still queues one; a second connect proves it is full
            c = socket.socket()
            c.setblocking(False)
            try:
                c.connect((HOST_ADDR, self.port))
            except BlockingIOError:
                pass
            self.fillers.append(c)
        # Wait until the accept queue really holds a connection (a listener's tcpi_unacked is
        # its accept queue length), rather than sleeping and hoping.
        deadline = time.monotonic() + 10
        while struct.unpack_from("I", self.lsock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104), 24)[0] < 1:
            assert time.monotonic() < deadline, "the blackhole's accept queue did not fill"
            time.sleep(0.01)

    def close(self):
        for c in self.fillers:
            c.close()
        self.lsock.close()


@pytest.fixture
def short_host_syn_retries():
    path = "/proc/sys/net/ipv4/tcp_syn_retries"
    old = Path(path).read_text().strip()
    Path(path).write_text("1\n")
    try:
        yield
    finally:
        Path(path).write_text(old + "\n")


def flood_run(source_port: int, flood_port: int | None, *, nofile: int | None):
    # One guest op (rawframes.op_flood_download): the download connects first (the cap
    # refuses *new* connections; it protects established ones), then the flood fills the cap
    # and keeps refilling it; only once slirpy has refused a flood SYN with RST (the cap is
    # full) is the download read, and the op counts what the flood did while it was read.
    # At the end it waits for every flood flow to drain (host connect timed out, ~3 s).
    op = {"op": "flood_download", "host": HOST_ADDR, "port": source_port}
    if flood_port is not None:
        op.update(flood_port=flood_port, burst=2 * MAX_HALF_OPEN)
    return Slirpy(["--mtu", "1500"], {"ops": [op, {"op": "tap_stats"}]}, nofile=nofile).wait()


def test_syn_flood_half_open_capped_drains_and_transfer_is_byte_exact(host_server, short_host_syn_retries):
    size = 128 * MiB + 3
    src = host_server("source", size=size, seed=90)
    hole = BlackholePort()
    try:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        base_out, _ = flood_run(src.port, None, nofile=hard)
        out, stats = flood_run(src.port, hole.port, nofile=hard)
    finally:
        hole.close()
    base, tap = base_out["ops"][0], out["ops"][1]
    dl = out["ops"][0]
    assert base["len"] == size and base["sha"] == expected(size, 90), base
    assert dl.get("len") == size and dl.get("sha") == expected(size, 90), dl
    c = stats["counters"]
    flows = stats["flows"]
    flood_flows = c.get("tcp.flows.opened", 0) - 1            # minus the download
    print(f"\nSYN flood: {dl['syn_total']} SYNs ({dl['syn_before_read']} before the read, "
          f"{dl['syn_during_read']} during it; cap full after {dl['cap_seconds']:.2f}s); download of "
          f"{size >> 20} MiB {base['seconds']:.2f}s alone, {dl['seconds']:.2f}s under flood "
          f"(throughput ratio {base['seconds'] / dl['seconds']:.2f}); RSTs seen {dl['rst_before_read']} "
          f"before / {dl['rst_during_read']} during the read, {dl['rst_total']} in all; flows opened by "
          f"the flood {flood_flows}, refused at the half-open cap {c.get('tcp.rx.drop.half_open_limit', 0)}, "
          f"host connects timed out {c.get('tcp.connect.unreachable', 0)}, drained in "
          f"{dl['drain_seconds']:.1f}s ({dl['icmp_unreachable']} ICMP unreachables seen, sniffer "
          f"drops {dl['sniff_drops']}); tap0 {tap}")
    # the flood filled the cap before the transfer was read: more SYNs than the cap, and
    # slirpy refused one of them with RST
    assert dl["syn_before_read"] > MAX_HALF_OPEN, dl
    assert dl["cap_reached"] and dl["rst_before_read"] > 0, dl
    # and held it full while the transfer ran: SYNs went on, and were refused, during the read
    assert dl["syn_during_read"] > 0 and dl["rst_during_read"] > 0, dl
    # SYNs beyond the cap were refused (RST) and counted; every RST we saw was one of them
    assert c.get("tcp.rx.drop.half_open_limit", 0) >= dl["rst_total"] > 0, c
    assert c.get("tcp.tx.rst", 0) >= c["tcp.rx.drop.half_open_limit"]
    # every flood flow ended when its host connect timed out (ETIMEDOUT -> ICMP), none leaked
    assert c.get("tcp.connect.unreachable", 0) == flood_flows, c
    # and the table drained: nothing half-open or open at exit
    # (the download's own flow may still be in TIME-WAIT, 2 s, when a quick drain ends the run)
    assert flows["tcp_half_open"] == 0 and flows["tcp"] == flows["tcp_time_wait"] <= 1, flows


def test_syn_flood_under_the_default_fd_limit_never_hits_emfile():
    """With the soft RLIMIT_NOFILE slirpy was started with (1024 for an ordinary user here),
    1100 half-open flows to a blackhole need more fds than it may open. No host connect may
    fail with EMFILE: slirpy should raise its soft limit to the hard one, or keep its flow
    caps below RLIMIT_NOFILE minus a margin (issue 7 part 5). The host's SYN retries take
    ~127 s, so within this run no connect can fail for any other reason."""
    hole = BlackholePort()
    try:
        slirpy = Slirpy(["--mtu", "1500"], {"ops": [
            {"op": "syn_flood", "host": HOST_ADDR, "port": hole.port, "count": 1100, "await_last_rst": 30.0},
            {"op": "sleep", "seconds": 1.0},        # room for a (wrong) late connect failure
        ]}, nofile=1024, timeout=60)
        out, stats = slirpy.wait()
    finally:
        hole.close()
    c = stats["counters"]
    assert out["ops"][0]["sent"] == 1100
    # slirpy had handled every SYN (the last one, over the cap, drew its RST) before we looked
    assert out["ops"][0]["last_refused"] is True, out
    assert c.get("tcp.connect.unreachable", 0) == 0, {k: v for k, v in c.items() if "tcp" in k}


# --------------------------------------------------------------------------- slow readers

class SlowSink:
    """Accept one connection, read nothing for `stall` seconds, then read to EOF and reply
    with {"len", "sha"}."""

    def __init__(self, stall: float):
        self.stall = stall
        self.sock = socket.socket()
        self.sock.bind((HOST_ADDR, 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.result: dict = {}
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
            time.sleep(self.stall)
            h = hashlib.sha256()
            n = 0
            buf = bytearray(1 << 20)
            while True:
                k = conn.recv_into(buf)
                if not k:
                    break
                n += k
                h.update(memoryview(buf)[:k])
            self.result = {"len": n, "sha": h.hexdigest()}
            conn.sendall(json.dumps(self.result).encode() + b"\n")

    def close(self) -> None:
        self.sock.close()


def rss_report(samples: list[tuple[float, int]], label: str) -> tuple[int, int]:
    assert len(samples) >= 10, samples
    start = samples[min(5, len(samples) - 1)][1]        # after start-up (imports, sandbox)
    peak = max(r for _, r in samples)
    step = max(1, len(samples) // 20)
    curve = " ".join(f"{t:.1f}s:{r / MiB:.0f}" for t, r in samples[::step])
    print(f"\n{label}: RSS start {start / MiB:.1f} MiB, peak {peak / MiB:.1f} MiB "
          f"(+{(peak - start) / MiB:.1f}); curve (MiB) {curve}")
    return start, peak


def guest_stops_reading(host_server, size: int, stall: float):
    src = host_server("source", size=size, seed=93)
    s = Slirpy(["--mtu", "65520"], {"ops": [
        {"op": "slow_download", "host": HOST_ADDR, "port": src.port, "stall": stall}]})
    out, _ = s.wait()
    assert out["ops"][0] == {"len": size, "sha": expected(size, 93)}, out
    start, peak = rss_report(s.samples, f"guest stops reading {size >> 20} MiB for {stall}s")
    assert peak - start < RSS_BOUND


def host_stops_reading(size: int, stall: float):
    sink = SlowSink(stall)
    try:
        s = Slirpy(["--mtu", "65520"], {"ops": [
            {"op": "upload", "host": HOST_ADDR, "port": sink.port, "size": size, "seed": 94}]})
        out, _ = s.wait()
    finally:
        sink.close()
    r = out["ops"][0]
    assert r.get("server") == {"len": size, "sha": expected(size, 94)}, r
    start, peak = rss_report(s.samples, f"host stops reading {size >> 20} MiB for {stall}s")
    assert peak - start < RSS_BOUND


def test_guest_stops_reading_rss_stays_bounded(host_server):
    guest_stops_reading(host_server, 128 * MiB, 3.0)


def test_host_stops_reading_rss_stays_bounded():
    host_stops_reading(128 * MiB, 3.0)


@pytest.mark.long
def test_guest_stops_reading_1gib_rss_stays_bounded(host_server):
    guest_stops_reading(host_server, 1 << 30, 10.0)


@pytest.mark.long
def test_host_stops_reading_1gib_rss_stays_bounded():
    host_stops_reading(1 << 30, 10.0)
