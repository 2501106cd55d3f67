"""The `slirpy` command line as a user meets it: exit codes, error messages, signals,
process clean-up, --stats-file, --cidr, doctor and selfcheck."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid

import pytest

from tests.netns.util import (HOST_ADDR, REPO, expected, find_process, guest_argv, kill_session,
                              run_guest, run_slirpy, slirpy_argv)

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_stray_processes")]

PY = sys.executable


@pytest.mark.parametrize("code", [0, 1, 42, 255])
def test_exit_code_is_passed_through(code):
    r = run_slirpy([], ["sh", "-c", f"exit {code}"], timeout=60)
    assert r.returncode == code, r.describe()


def test_stdin_stdout_stderr_are_the_commands():
    r = run_slirpy([], ["sh", "-c", "read x; echo out:$x; echo err:$x >&2"], input="hello\n",
                   timeout=60)
    assert r.returncode == 0, r.describe()
    assert "out:hello" in r.stdout.splitlines()
    assert "err:hello" in r.stderr.splitlines()


def test_unknown_command_is_127():
    name = "no-such-command-" + uuid.uuid4().hex[:8]
    r = run_slirpy([], [name], timeout=60)
    assert r.returncode == 127, r.describe()
    assert f"slirpy: {name}: command not found" in r.stderr, r.describe()


@pytest.mark.parametrize("option,value,must_mention", [
    ("--mtu", "575", ["575", "576", "65520"]),
    ("--mtu", "65521", ["65521", "576", "65520"]),
    ("--mtu", "jumbo", ["jumbo", "576", "65520"]),
    ("--cidr", "10.0.2.0/26", ["10.0.2.0/26", "1", "25"]),
    ("--cidr", "10.0.2.0/0", ["10.0.2.0/0", "1", "25"]),
    ("--cidr", "not-a-net", ["not-a-net", "25"]),
])
def test_bad_option_is_exit_2_with_one_line(option, value, must_mention, tmp_path):
    marker = tmp_path / "ran"
    r = run_slirpy([option, value], ["touch", str(marker)], timeout=60)
    assert r.returncode == 2, r.describe()
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, "expected exactly one line of error\n" + r.describe()
    for word in must_mention:
        assert word in lines[0], f"{word!r} missing\n" + r.describe()
    assert not marker.exists(), "the command ran despite the bad option"


def test_command_killed_by_signal_gives_128_plus_n():
    marker = "slirpy-test-" + uuid.uuid4().hex
    proc = subprocess.Popen(slirpy_argv() + [PY, "-c", "import time; time.sleep(120)", marker],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        pid = find_process(marker)
        os.kill(pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
    finally:
        kill_session(proc)
        proc.wait()
    assert proc.returncode == 128 + signal.SIGKILL, (proc.returncode, out, err)


@pytest.mark.parametrize("handled", [True, False], ids=["handled", "default-action"])
def test_sigterm_to_slirpy_reaches_the_command(handled):
    """SIGTERM to slirpy is forwarded: a command that handles it exits its own way (status
    passed through); one that does not dies of it (128+15)."""
    marker = "slirpy-test-" + uuid.uuid4().hex
    # The handler writes with os.write: print() from a signal handler can hit the main
    # thread's still-running print() ("reentrant call inside BufferedWriter").
    code = ("import os, signal, sys, time\n"
            "def bye(*a):\n"
            "    os.write(1, b'got SIGTERM\\n'); os._exit(3)\n"
            + ("signal.signal(signal.SIGTERM, bye)\n" if handled else "")
            + "print('ready', flush=True)\n"
            "time.sleep(120)\n")
    proc = subprocess.Popen(slirpy_argv() + [PY, "-c", code, marker],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "ready"     # the handler is installed
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        kill_session(proc)
        out, err = proc.communicate()
        pytest.fail(f"slirpy did not exit within 30 s of SIGTERM\n{out}\n{err}")
    finally:
        kill_session(proc)
        proc.wait()
    if handled:
        assert "got SIGTERM" in out and proc.returncode == 3, (proc.returncode, out, err)
    else:
        assert proc.returncode == 128 + signal.SIGTERM, (proc.returncode, out, err)


def test_no_processes_survive_the_command():
    """The command exits leaving background children; slirpy must not leave them (or
    itself) behind.  The no_stray_processes fixture checks the whole process table."""
    marker = "slirpy-orphan-" + uuid.uuid4().hex
    r = run_slirpy([], ["sh", "-c", f"{PY} -c 'import time; time.sleep(300)' {marker} & "
                                    f"{PY} -c 'import time; time.sleep(300)' {marker} & exit 0"],
                   timeout=60)
    assert r.returncode == 0, r.describe()


def test_stats_file(tmp_path, host_server):
    stats = tmp_path / "stats.json"
    srv = host_server("source", size=1 << 20, seed=3)
    r = run_slirpy(["--stats-file", str(stats)],
                   guest_argv([{"op": "download", "host": HOST_ADDR, "port": srv.port},
                               {"op": "download", "host": HOST_ADDR, "port": srv.port}]))
    assert r.guest_results() == [{"len": 1 << 20, "sha": expected(1 << 20, 3)}] * 2
    data = json.loads(stats.read_text())
    counters = data["counters"]
    assert all(isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in counters.items())
    assert counters["tcp.flows.opened"] >= 2
    assert all("." in k for k in counters), list(counters)


def test_custom_cidr(host_server):
    srv = host_server("sink")
    opts = ["--cidr", "10.99.0.0/16", "--mtu", "1500"]
    info, up = run_guest(opts, [{"op": "ifinfo"},
                                {"op": "upload", "host": HOST_ADDR, "port": srv.port,
                                 "size": 1 << 20, "seed": 4}])
    assert info["addr"] == "10.99.0.100" and info["mtu"] == 1500, info
    assert up["server"] == {"len": 1 << 20, "sha": expected(1 << 20, 4)}


def test_python_m_slirpy_and_help():
    r = subprocess.run([PY, "-m", "slirpy", "--help"], capture_output=True, text=True,
                       timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stderr
    for sub in ("run", "doctor", "selfcheck"):
        assert sub in r.stdout


def test_doctor():
    r = subprocess.run([PY, "-m", "slirpy", "doctor"], capture_output=True, text=True,
                       timeout=60, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr


def test_selfcheck():
    r = subprocess.run([PY, "-m", "slirpy", "selfcheck"], capture_output=True, text=True,
                       timeout=180, cwd=REPO, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
