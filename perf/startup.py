"""perf/bench's `startup` workload: time to ready (issue 18), one sample per call.

Variants:
- ``ready-fd``: slirp4netns mode. A target namespace (``unshare -Urn``) exists before the clock
  starts; the sample is the time from starting the network process (``slirpy-slirp4netns`` or
  ``slirp4netns``, both ``-c -r FD PID tap0``) to "1" on the ready fd.
- ``run``: from starting the whole thing to the command's first instruction, the command being
  ``sh -c 'echo 1 >FIFO'`` (the harness waits on the FIFO). slirpy: ``slirpy run -- CMD`` (the
  console script, as a user types it);
  slirp4netns: ``unshare -Urn`` holding CMD back until ``slirp4netns -c -r FD`` is ready (what
  a container engine does); pasta: ``pasta --config-net -- CMD``.
- ``run-no-sandbox``: the same with ``slirpy run --no-sandbox`` (the peers as in ``run``, where
  neither hardens itself either).  A hardened run starts its command only once the serving
  process is hardened, so after its event loop and runtime are imported; without hardening the
  command starts as soon as tap0 is configured.

Timestamps are taken in the harness (time.monotonic around Popen and the wait), so process
creation is in every figure alike.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from perf.benchlib import peer_bin

REPO = Path(__file__).resolve().parent.parent   # cwd of every process started (python -m slirpy)
STARTUP_VARIANTS = ["ready-fd", "run", "run-no-sandbox"]
TIMEOUT = 10.0


class StartupError(RuntimeError):
    pass


def console_script(name: str, *module_args: str) -> list[str]:
    """The console script NAME a user (or Podman, RootlessKit) would exec, next to this Python
    when installed; `python -m slirpy MODULE_ARGS` if it is not (runpy's imports cost ~2 ms more)."""
    script = Path(sys.executable).parent / name
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "slirpy", *module_args]


def slirpy_slirp4netns_argv() -> list[str]:
    return console_script("slirpy-slirp4netns", "slirp4netns")


def _wait_readable(fd: int, what: str) -> None:
    r, _, _ = select.select([fd], [], [], TIMEOUT)
    if not r:
        raise StartupError(f"{what}: nothing within {TIMEOUT:.0f} s")


def _stop(*procs: subprocess.Popen | None) -> None:
    for p in procs:
        if p is None or p.poll() is not None:
            continue
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(5)


def _holder(script: str) -> subprocess.Popen:
    """`unshare -Urn sh -c SCRIPT`, returned once the namespace exists (SCRIPT's first line)."""
    proc = subprocess.Popen(["unshare", "-Urn", "sh", "-c", f"echo up; {script}"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, start_new_session=True, cwd=REPO)
    assert proc.stdout is not None
    _wait_readable(proc.stdout.fileno(), "unshare -Urn")
    if proc.stdout.readline() != b"up\n":
        _stop(proc)
        raise StartupError("unshare -Urn did not start")
    return proc


def _start_net(peer: str, pid: int) -> tuple[subprocess.Popen, int]:
    """Start the network process on `pid`'s namespace with -c -r; (process, ready read fd)."""
    rfd, wfd = os.pipe()
    base = slirpy_slirp4netns_argv() if peer == "slirpy" else [peer_bin("slirp4netns")]
    try:
        proc = subprocess.Popen([*base, "-c", "-r", str(wfd), str(pid), "tap0"], pass_fds=(wfd,),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, cwd=REPO)
    finally:
        os.close(wfd)
    return proc, rfd


def _await_ready(rfd: int) -> None:
    try:
        _wait_readable(rfd, "ready fd")
        if os.read(rfd, 1) != b"1":
            raise StartupError("the network process exited before it was ready")
    finally:
        os.close(rfd)


def sample_ready_fd(peer: str) -> float:
    holder = _holder("exec sleep 60")
    net = None
    try:
        t0 = time.monotonic()
        net, rfd = _start_net(peer, holder.pid)
        _await_ready(rfd)
        return (time.monotonic() - t0) * 1000
    finally:
        _stop(net, holder)


def _fifo(tmp: str) -> tuple[str, int]:
    path = tempfile.mktemp(prefix="startup-", suffix=".fifo", dir=tmp)
    os.mkfifo(path, 0o666)
    return path, os.open(path, os.O_RDONLY | os.O_NONBLOCK)


def sample_run(peer: str, tmp: str, slirpy_options: tuple[str, ...] = ()) -> float:
    path, rfd = _fifo(tmp)
    cmd = f"echo 1 >{path}"
    procs: list[subprocess.Popen | None] = []
    try:
        t0 = time.monotonic()
        if peer == "slirpy":
            procs.append(subprocess.Popen([*console_script("slirpy"), "run", *slirpy_options, "--",
                                           "sh", "-c", cmd],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          start_new_session=True, cwd=REPO))
        elif peer == "pasta":
            procs.append(subprocess.Popen(
                [peer_bin("pasta"), "-f", "-q", "--config-net", "-i", "pst0", "-I", "tap0", "-t", "none",
                 "-u", "none", "-T", "none", "-U", "none", "--", "sh", "-c", cmd],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=REPO))
        else:
            holder = _holder(f"read _go; {cmd}")
            procs.append(holder)
            net, ready = _start_net("slirp4netns", holder.pid)
            procs.append(net)
            _await_ready(ready)
            assert holder.stdin is not None
            holder.stdin.write(b"go\n")
            holder.stdin.flush()
        _wait_readable(rfd, f"{peer}: the command")
        return (time.monotonic() - t0) * 1000
    finally:
        os.close(rfd)
        os.unlink(path)
        _stop(*reversed(procs))


def sample(peer: str, variant: str, tmp: str) -> dict:
    if peer not in ("slirpy", "slirp4netns", "pasta"):
        raise StartupError(f"no startup sample for {peer}")
    if variant == "ready-fd":
        if peer == "pasta":
            raise StartupError("pasta has no ready fd")
        return {"ready_ms": sample_ready_fd(peer)}
    return {"ready_ms": sample_run(peer, tmp, ("--no-sandbox",) if variant == "run-no-sandbox" else ())}


def unavailable(variant: str, peer: str) -> str | None:
    if peer == "pasta" and variant == "ready-fd":
        return "no ready fd"
    if peer in ("slirp4netns", "pasta") and shutil.which(peer_bin(peer)) is None:
        return f"{peer} not installed"
    return None
