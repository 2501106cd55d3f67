"""The router <-> plumber channel (networks/plumber.py): JSON lines, and answers that carry
file descriptors (the /proc/PID/net of a member with `-p auto`)."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from pathlib import Path

import pytest

from slirpy.networks.plumber import Plumber, PlumberError
from slirpy.networks.withfds import WithFds


class Work:
    member_pids: set[int] = set()

    def op_echo(self) -> str:
        return "hi"

    def op_open(self, path: str) -> WithFds:
        return WithFds({"path": path}, [os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)])


@pytest.fixture
def plumber():
    from slirpy.networks import plumber as mod
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    events_r, events_w = os.pipe()
    t = threading.Thread(target=mod.serve, args=(theirs, events_w, 0, Work()), daemon=True)
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
