"""The sandbox's setup conversation: who writes the id maps, and the short poll before a read.

(The whole conversation runs in every netns test that starts a sandbox; --map-subuids, the one
setup where P writes the maps, in tests/hostns/test_map_subuids.py.)"""

from __future__ import annotations

import socket
import time

import pytest

from slirpy.config import NetConfig
from slirpy.sandbox import handoff
from slirpy.sandbox.idmap import maps_itself, parent_maps
from slirpy.sandbox.options import NET_MODES, SandboxOptions


@pytest.mark.parametrize("mode", NET_MODES)
@pytest.mark.parametrize("subuids", [False, True])
def test_who_writes_the_maps(mode, subuids):
    opts = SandboxOptions(argv=["true"], net=NetConfig(), net_mode=mode, map_subuids=subuids)
    joins = mode in ("join", "member")          # these enter a user namespace that has its maps
    assert maps_itself(opts) == (not joins and not subuids)
    assert parent_maps(opts) == (not joins and subuids)
    assert not (maps_itself(opts) and parent_maps(opts))


@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    yield a, b
    a.close()
    b.close()


@pytest.mark.parametrize("peer_goes", [False, True], ids=["message", "peer-gone"])
def test_a_waiting_message_or_a_gone_peer_ends_the_poll_and_is_left_for_the_read(pair, monkeypatch, peer_goes):
    a, b = pair
    monkeypatch.setattr(handoff, "_MAY_SPIN", True)
    if peer_goes:
        b.close()
    else:
        b.sendall(b"release")
    start = time.monotonic()
    handoff.spin_until_readable(a, seconds=30.0)
    assert time.monotonic() - start < 30.0
    assert a.recv(handoff.MSG_MAX) == (b"" if peer_goes else b"release")


def test_with_nothing_to_read_the_poll_ends_after_its_time(pair, monkeypatch):
    a, _ = pair
    monkeypatch.setattr(handoff, "_MAY_SPIN", True)
    start = time.monotonic()
    handoff.spin_until_readable(a, seconds=0.02)
    assert time.monotonic() - start >= 0.02


def test_with_one_usable_cpu_there_is_no_poll(pair, monkeypatch):
    a, _ = pair
    monkeypatch.setattr(handoff, "_MAY_SPIN", False)

    def no_poll():
        raise AssertionError("polled with a single CPU")
    monkeypatch.setattr(handoff.select, "poll", no_poll)
    handoff.spin_until_readable(a, seconds=30.0)


def test_the_cpu_count_decides(monkeypatch):
    monkeypatch.setattr(handoff.os, "sched_getaffinity", lambda pid: {0})
    assert handoff.several_cpus() is False
    monkeypatch.setattr(handoff.os, "sched_getaffinity", lambda pid: {0, 1})
    assert handoff.several_cpus() is True
