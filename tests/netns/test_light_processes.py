"""The processes of a light `slirpy run` (`--network none|host|sandbox:NAME`, a network's
member) while its command runs: the `slirpy run` process, now the native waiter (or, where it
is not built or SLIRPY_PURE=1, a bare-interpreter waiter), and the PID namespace's PID 1, the
native waiter's `hold` mode (or `cat`) — no supervisor, no second or third copy of slirpy's
interpreter (issue 15: what an idle member costs).  And that the behaviours the old
supervisor gave still hold: orphans reaped by PID 1, the namespace dying with the command or
with a SIGKILLed `slirpy run`, exit codes 128+N, the record removed at the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from slirpy import nativewaiter
from tests.netns.util import REPO, kill_session, run_slirpy, slirpy_argv

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_stray_processes")]


@pytest.fixture(autouse=True)
def runtime_dir(monkeypatch):
    path = tempfile.mkdtemp(prefix="rt", dir=os.environ.get("TMPDIR"))
    os.chmod(path, 0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", path)
    return path


def _children(pid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return {int(p) for p in f.read().split()}


def _nspid(pid: int) -> list[int]:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return [int(p) for p in line.split()[1:]]
    return []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _start(runtime_dir: str, name: str, mode: str, cmd: list[str]) -> tuple[subprocess.Popen, dict]:
    """Start `slirpy run --network MODE --name NAME -- CMD`; it and its record once the command runs."""
    proc = subprocess.Popen(slirpy_argv("--network", mode, "--name", name) + cmd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            cwd=REPO)
    path = os.path.join(runtime_dir, "slirpy", "sandboxes", f"{name}.json")
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the command did not start"
        try:
            with open(path) as f:
                rec = json.load(f)
            if rec.get("ns_pid") and len(_children(proc.pid)) == 2:
                return proc, rec
        except (OSError, ValueError):
            pass
        time.sleep(0.05)


def _check_lean(pid: int, init: int) -> None:
    """`pid` (the `slirpy run`) is the native waiter and `init` its `hold` mode where the native
    waiter is built (and SLIRPY_PURE unset: nativewaiter.to_use), else a bare interpreter
    running waiter.py and `cat`; never a copy of slirpy's interpreter with its imports."""
    native = nativewaiter.to_use()
    deadline = time.monotonic() + 30
    while True:     # the command runs a moment before its `slirpy run` and PID 1 have exec'd
        argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        init_argv = open(f"/proc/{init}/cmdline", "rb").read().split(b"\0")
        init_exe = os.path.basename(os.readlink(f"/proc/{init}/exe"))
        # (PID 1's cmdline reads empty while it execs; before, it is slirpy's interpreter)
        init_done = init_argv[0] != b"" and init_exe in ("slirpy-waiter", "cat")
        if (argv[1:2] in ([b"wait"], [b"-I"]) and init_done) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if native is not None:
        assert os.readlink(f"/proc/{pid}/exe") == os.path.realpath(native)
        assert argv[1] == b"wait" and init_argv[:2] == [b"slirpy-waiter", b"hold"]
        assert os.readlink(f"/proc/{init}/exe") == os.path.realpath(native)
        assert "python" not in open(f"/proc/{pid}/maps").read()
    else:
        assert argv[1:3] == [b"-I", b"-S"] and argv[3].endswith(b"slirpy/sandbox/waiter.py")
        assert os.path.basename(os.readlink(f"/proc/{init}/exe")) == "cat"
        maps = open(f"/proc/{pid}/maps").read()
        assert "site-packages" not in maps and "_ctypes" not in maps   # nothing but the bare interpreter


@pytest.mark.parametrize("mode", ["none", "host"])
def test_a_running_light_sandbox_is_the_waiter_and_its_pid_1(mode, runtime_dir):
    proc, rec = _start(runtime_dir, "lean", mode, ["sleep", "60"])
    try:
        assert rec["pid"] == proc.pid
        init = rec["ns_pid"]
        kids = _children(proc.pid)
        assert init in kids                          # PID 1 and the command are slirpy's children
        (cmd,) = kids - {init}
        assert _nspid(init)[-1] == 1 and _nspid(cmd)[-1] == 2
        assert "python" not in os.path.basename(os.readlink(f"/proc/{init}/exe"))
        _check_lean(proc.pid, init)
        proc.send_signal(signal.SIGTERM)             # passed on to the command: 128+15
        proc.communicate(timeout=30)
    except BaseException:
        kill_session(proc)
        raise
    assert proc.returncode == 143
    assert not os.path.exists(os.path.join(runtime_dir, "slirpy", "sandboxes", "lean.json"))
    assert not _alive(init) and not _alive(cmd)


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGUSR1, signal.SIGWINCH])
def test_the_waiter_passes_signals_on_and_exits_with_the_commands_code(sig, runtime_dir):
    """A trapped signal: the command decides its own exit code (here 40+N), and the waiter
    returns it; SIGCONT, not trapped, changes nothing on the way."""
    name = signal.Signals(sig).name[3:]
    trap = f"trap 'exit $((40 + {int(sig)}))' {name}; echo ready; while :; do sleep 0.1; done"
    proc, rec = _start(runtime_dir, "relay", "none", ["sh", "-c", trap])
    try:
        _check_lean(proc.pid, rec["ns_pid"])
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGCONT)
        proc.send_signal(sig)
        proc.communicate(timeout=30)
    except BaseException:
        kill_session(proc)
        raise
    assert proc.returncode == 40 + sig
    assert not os.path.exists(os.path.join(runtime_dir, "slirpy", "sandboxes", "relay.json"))


def test_pid_1_reaps_orphans_and_the_namespace_ends_with_the_command(tmp_path):
    # an orphan that exits (reaped by PID 1: no zombie left) and one that would outlive the command
    script = ("(sleep 0.2 &); (sleep 300 &); sleep 1; "
              "for s in /proc/[0-9]*/stat; do read -r l < $s 2>/dev/null && echo \"$l\"; done | "
              "awk '$3 == \"Z\" {z++} END {print \"zombies=\" z+0}'; exit 5")
    r = run_slirpy(["--network", "none"], ["sh", "-c", script], timeout=60)
    assert r.returncode == 5, r.describe()
    assert r.stdout.strip() == "zombies=0"
    # the `sleep 300` orphan is gone: no_stray_processes checks it


def test_a_command_killed_by_a_signal_is_128_plus_n():
    r = run_slirpy(["--network", "none"], ["sh", "-c", "kill -KILL $$"], timeout=60)
    assert r.returncode == 128 + signal.SIGKILL, r.describe()


def test_sigkill_of_slirpy_ends_pid_1_and_the_command(runtime_dir):
    proc, rec = _start(runtime_dir, "victim", "none", ["sleep", "300"])
    init = rec["ns_pid"]
    (cmd,) = _children(proc.pid) - {init}
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while _alive(init) or _alive(cmd):
        assert time.monotonic() < deadline, "PID 1 or the command outlived a SIGKILLed slirpy run"
        time.sleep(0.05)


FALLBACK = """
import sys
from slirpy.config import NetConfig
from slirpy.plainrun import run_light
from slirpy.sandbox import SandboxOptions
from slirpy import nativewaiter
nativewaiter.to_use = lambda: None  # no native waiter and
sys.executable = ""                 # no interpreter to exec: run_light waits in this process
for script in ("exit 4", "kill -KILL $$"):
    print(run_light(SandboxOptions(argv=["sh", "-c", script], net=NetConfig(), net_mode="none")), flush=True)
"""


def test_without_an_interpreter_to_exec_the_light_run_waits_in_process():
    r = subprocess.run([sys.executable, "-c", FALLBACK], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["4", str(128 + signal.SIGKILL)]
