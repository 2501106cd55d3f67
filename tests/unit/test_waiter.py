"""The light run's last form, without namespaces, in both builds: slirpy/sandbox/waiter.py on a
bare interpreter and the native waiter (slirpy/sandbox/waiter.c, `slirpy-waiter wait`).  A
driver forks the three children a waiter waits for (a supervisor that exits at once, a command,
a PID 1 reading the keep pipe: `cat`, or `slirpy-waiter hold`), writes the sandbox's registry
record as `slirpy run` does, and execs the waiter, as plainrun does."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from slirpy import nativewaiter
from slirpy.sandbox import waiter
from slirpy.sandbox.command import FORWARDED_SIGNALS

WAITER = Path(waiter.__file__).with_name("waiter.py")
NATIVE = nativewaiter.binary_path()
ROOT = str(Path(nativewaiter.__file__).resolve().parents[1])    # the directory holding slirpy/

DRIVER = textwrap.dedent("""
    import json, os, signal, sys
    kind, program, script, xdg, record_pid, root, name = sys.argv[1:8]
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGHUP,
                                              signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH,
                                              signal.SIGCONT})
    keep_r, keep_w = os.pipe()
    init = os.fork()
    if init == 0:
        os.close(keep_w)
        os.dup2(keep_r, 0)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        if kind == "native":
            os.execv(program, ["slirpy-waiter", "hold"])
        os.execv("/bin/cat", ["cat"])
    os.close(keep_r)
    sup = os.fork()
    if sup == 0:
        os._exit(0)
    cmd = os.fork()
    if cmd == 0:            # as command.exec_command: the forwarded signals to their defaults
        os.close(keep_w)
        for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        os.execv("/bin/sh", ["sh", "-c", script])
    os.set_inheritable(keep_w, True)
    pids = [str(sup), str(cmd), str(init), str(keep_w)]
    record, rundir = "-", os.path.join(xdg, "slirpy")
    if xdg != "-":          # the record `slirpy run` would have written (registry.py's layout)
        record, sandboxes = name, os.path.join(rundir, "sandboxes")
        os.mkdir(rundir, 0o700)
        os.mkdir(sandboxes, 0o700)
        pid = os.getpid() if record_pid == "own" else int(record_pid)
        with open(os.path.join(sandboxes, name + ".json"), "w") as f:
            json.dump({"name": name, "pid": pid, "start_time": 1, "ns_pid": init}, f)
        for suffix in (".lock", ".sock"):
            open(os.path.join(sandboxes, name + suffix), "w").close()
    os.write(1, b"%d\\n" % init)
    if kind == "native":
        os.execv(program, [program, "wait", *pids, record, os.path.join(rundir, "sandboxes"),
                           os.path.join(rundir, "lock")])
    os.execv(sys.executable, [sys.executable, "-I", "-S", program, *pids, record, root])
""")


def _kinds() -> list[object]:
    """The Python waiter always; the native one where it is built, and always in a compiled
    pass of helpers/test (which builds it: a missing binary fails there)."""
    built = os.access(NATIVE, os.X_OK)
    must = os.environ.get("SLIRPY_EXPECT_BUILD") == "compiled"
    skip = pytest.mark.skipif(not built and not must, reason="the native waiter is not built (no C compiler?)")
    return ["python", pytest.param("native", marks=skip)]


KINDS = _kinds()


def _drive(kind: str, script: str, sig: int | None = None, xdg: str = "-",
           record_pid: str = "own", name: str = "rec") -> tuple[int, int]:
    program = NATIVE if kind == "native" else str(WAITER)
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, kind, program, script, xdg, record_pid, ROOT, name],
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "XDG_RUNTIME_DIR": xdg})
    assert proc.stdout is not None
    lines = [proc.stdout.readline().strip() for _ in range(1 if sig is None else 2)]
    init = int(next((line for line in lines if line.isdigit()), f"no pid in {lines}"))
    if sig is not None:
        assert "ready" in lines            # the command's trap is set: signal the waiter
        proc.send_signal(sig)
    proc.wait(timeout=30)
    return proc.returncode, init


def _gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().rsplit(")")[1][:3]


def test_the_waiter_forwards_the_signal_set_the_supervisor_forwards():
    assert waiter.FORWARDED == FORWARDED_SIGNALS


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("script,code", [("exit 3", 3), ("kill -KILL $$", 128 + signal.SIGKILL),
                                         ("kill -TERM $$", 128 + signal.SIGTERM)])
def test_exit_code_of_the_command_and_pid_1_ended(kind, script, code):
    rc, init = _drive(kind, script)
    assert rc == code
    assert _gone(init)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sig", sorted(FORWARDED_SIGNALS))
def test_each_forwarded_signal_sent_to_the_waiter_reaches_the_command(kind, sig):
    name = signal.Signals(sig).name.removeprefix("SIG")
    rc, _ = _drive(kind, f"trap 'exit 7' {name}; echo ready; while :; do sleep 0.1; done", sig)
    assert rc == 7


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["rec", "pid"])      # a sandbox called "pid": its name is no key
def test_the_record_is_removed_at_the_end_when_it_is_ours(kind, name, tmp_path):
    rc, _ = _drive(kind, "exit 0", xdg=str(tmp_path), name=name)
    assert rc == 0
    assert sorted(os.listdir(tmp_path / "slirpy" / "sandboxes")) == []


@pytest.mark.parametrize("kind", KINDS)
def test_another_runs_record_is_left_alone(kind, tmp_path):
    rc, _ = _drive(kind, "exit 0", xdg=str(tmp_path), record_pid="1")
    assert rc == 0
    sandboxes = tmp_path / "slirpy" / "sandboxes"
    assert sorted(os.listdir(sandboxes)) == ["rec.json", "rec.lock", "rec.sock"]
    assert json.loads((sandboxes / "rec.json").read_text())["pid"] == 1


@pytest.mark.skipif(not os.access(NATIVE, os.X_OK), reason="the native waiter is not built")
@pytest.mark.parametrize("argv", [[], ["wait", "1"], ["wait", "x", "2", "3", "4", "-", "-", "-"], ["nap"]])
def test_the_native_waiter_refuses_bad_arguments(argv):
    r = subprocess.run([NATIVE, *argv], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and r.stderr.startswith("slirpy-waiter: ")


def test_the_waiter_imports_nothing_but_os_signal_and_sys_at_module_level():
    tree = ast.parse(WAITER.read_text())
    top = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            top.add(node.module or "")
    assert top == {"__future__", "os", "signal", "sys"}
