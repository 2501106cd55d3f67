"""The router <-> plumber channel (networks/plumber.py): JSON lines, and answers that carry
file descriptors (the /proc/PID/net of a member with `-p auto`)."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from slirpy.networks.plumber import Plumber, PlumberError
from slirpy.networks.withfds import WithFds


class Work:
    def __init__(self) -> None:
        self.member_pids: set[int] = set()
        self.slow_started = threading.Event()
        self.slow_may_end = threading.Event()

    def op_echo(self) -> str:
        return "hi"

    def op_watch(self, pid: int) -> None:
        self.member_pids = {pid}

    def op_slow(self) -> None:
        self.slow_started.set()
        self.slow_may_end.wait(10)

    def op_forget(self) -> None:
        self.member_pids = set()

    def op_open(self, path: str) -> WithFds:
        return WithFds({"path": path}, [os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)])


@pytest.fixture
def work() -> Work:
    return Work()


@pytest.fixture
def plumber(work: Work):
    from slirpy.networks import plumber as mod
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    events_r, events_w = os.pipe()
    t = threading.Thread(target=mod.serve, args=(theirs, events_w, 0, work), daemon=True)
    t.start()
    yield Plumber(0, ours, events_r)
    ours.close()
    t.join(5)
    assert not t.is_alive()
    for fd in (events_r, events_w):
        os.close(fd)
    theirs.close()


def test_an_answer_carries_the_fd_it_names(plumber: Plumber, tmp_path: Path) -> None:
    value, fds = asyncio.run(plumber.call_fds("open", path=str(tmp_path)))
    assert value == {"path": str(tmp_path)} and len(fds) == 1
    try:
        assert os.path.samestat(os.fstat(fds[0]), os.stat(tmp_path))
    finally:
        os.close(fds[0])
    assert asyncio.run(plumber.call("echo")) == "hi"          # the channel is still in step


def test_a_failed_op_sends_no_fd_and_one_line(plumber: Plumber, tmp_path: Path) -> None:
    with pytest.raises(PlumberError, match="No such file"):
        asyncio.run(plumber.call_fds("open", path=str(tmp_path / "missing")))
    with pytest.raises(PlumberError, match="unexpected keyword"):
        asyncio.run(plumber.call_fds("echo", path="x"))
    with pytest.raises(PlumberError, match="unknown op"):
        asyncio.run(plumber.call_fds("nope"))
    assert asyncio.run(plumber.call("echo")) == "hi"


def _lines(sock: socket.socket, n: int) -> list[bytes]:
    data = b""
    sock.settimeout(10)
    while data.count(b"\n") < n:
        chunk = sock.recv(4096)
        assert chunk, "the plumber closed the channel"
        data += chunk
    return data.splitlines()


def test_a_member_that_exits_as_a_request_forgets_it_is_not_a_crash(plumber: Plumber,
                                                                    work: Work) -> None:
    """One poll() round sees the channel readable (a request that makes the plumber stop
    watching a member) and that member's pidfd readable (it exited): the plumber handles the
    exit first and goes on answering (it used to unregister the closed pidfd twice: KeyError)."""
    child = subprocess.Popen(["sleep", "60"])
    try:
        sock = plumber.sock
        sock.sendall(b'{"op": "watch", "args": {"pid": %d}}\n' % child.pid)
        assert _lines(sock, 1) == [b'{"ok": null}']
        sock.sendall(b'{"op": "slow"}\n')       # while it works: the member exits, a request comes
        assert work.slow_started.wait(10)
        child.send_signal(signal.SIGKILL)
        child.wait()
        sock.sendall(b'{"op": "forget"}\n')
        work.slow_may_end.set()                  # the next poll() round sees both at once
        assert _lines(sock, 2) == [b'{"ok": null}'] * 2
        assert select.select([plumber.events_fd], [], [], 10)[0], "the exit was not reported"
        assert os.read(plumber.events_fd, 16) == b"m"     # the exit was reported once
        assert asyncio.run(plumber.call("echo")) == "hi"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
