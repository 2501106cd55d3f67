"""slirpy.exitnow: the console scripts' exit without the interpreter's teardown.

Each case runs in a child interpreter (os._exit would end pytest's own process): what was
written to stdout and stderr still arrives, the status is the one asked for, and the teardown
is skipped (an atexit handler, which the teardown would run, never prints).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """\
import atexit, sys
from slirpy.exitnow import exit_now
atexit.register(lambda: print("teardown ran"))
sys.stdout.write("partial line on a pipe")     # buffered: no newline, no flush
print("to stderr", file=sys.stderr, end="")
exit_now({code})
"""


def run_probe(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROBE.format(code=code)], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("code, status", [("0", 0), ("3", 3), ("None", 0), ("256 + 7", 7)])
def test_the_status_and_the_buffered_output_survive_and_the_teardown_is_skipped(code, status):
    r = run_probe(code)
    assert r.returncode == status
    assert r.stdout == "partial line on a pipe"
    assert r.stderr == "to stderr"


def test_a_message_exits_as_sys_exit_does():
    r = run_probe("'slirpy: failed'")
    assert r.returncode == 1
    assert r.stderr == "to stderrslirpy: failed\n"
    assert r.stdout == "partial line on a pipeteardown ran\n"      # sys.exit: the normal teardown


def test_a_closed_stdout_does_not_stop_the_exit():
    probe = ("import os, sys\nfrom slirpy.exitnow import exit_now\n"
             "sys.stdout.write('x' * 10)\nos.close(1)\nexit_now(5)\n")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert r.returncode == 5
