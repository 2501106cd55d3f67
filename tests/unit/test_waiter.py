"""slirpy/sandbox/waiter.py, the light run's last form, without namespaces: a driver forks the
three children it waits for (a supervisor that exits at once, a command, a `cat` reading the
keep pipe as PID 1 does) and execs the waiter on a bare interpreter, as plainrun does."""

from __future__ import annotations

import ast
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from slirpy.sandbox import waiter
from slirpy.sandbox.command import FORWARDED_SIGNALS

WAITER = Path(waiter.__file__).with_name("waiter.py")

DRIVER = textwrap.dedent("""
    import os, signal, sys
    waiter, script = sys.argv[1], sys.argv[2]
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, signal.SIGTERM})
    keep_r, keep_w = os.pipe()
    init = os.fork()
    if init == 0:
        os.close(keep_w)
        os.dup2(keep_r, 0)
        os.execv("/bin/cat", ["cat"])
    os.close(keep_r)
    sup = os.fork()
    if sup == 0:
        os._exit(0)
    cmd = os.fork()
    if cmd == 0:
        os.close(keep_w)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        os.execv("/bin/sh", ["sh", "-c", script])
    os.set_inheritable(keep_w, True)
    os.write(1, b"%d\\n" % init)
    os.execv(sys.executable, [sys.executable, "-I", "-S", waiter, str(sup), str(cmd), str(init), str(keep_w),
                              "-", "/nonexistent"])
""")


def _drive(script: str, sig: int | None = None) -> tuple[int, int]:
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(WAITER), script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines = [proc.stdout.readline().strip() for _ in range(1 if sig is None else 2)]
    init = int(next((line for line in lines if line.isdigit()), f"no pid in {lines}"))
    if sig is not None:
        assert "ready" in lines            # the command's trap is set: signal the waiter
        proc.send_signal(sig)
    proc.wait(timeout=30)
    return proc.returncode, init


def test_the_waiter_forwards_the_signal_set_the_supervisor_forwards():
    assert waiter.FORWARDED == FORWARDED_SIGNALS


@pytest.mark.parametrize("script,code", [("exit 3", 3), ("kill -KILL $$", 128 + signal.SIGKILL)])
def test_exit_code_of_the_command_and_pid_1_ended(script, code):
    rc, init = _drive(script)
    assert rc == code
    assert not Path(f"/proc/{init}").exists() or "Z" in Path(f"/proc/{init}/stat").read_text().rsplit(")")[1][:3]


def test_a_signal_sent_to_the_waiter_reaches_the_command():
    rc, _ = _drive("trap 'exit 7' TERM; echo ready; while :; do sleep 0.1; done", signal.SIGTERM)
    assert rc == 7


def test_the_waiter_imports_nothing_but_os_signal_and_sys_at_module_level():
    tree = ast.parse(WAITER.read_text())
    top = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            top.add(node.module or "")
    assert top == {"__future__", "os", "signal", "sys"}
