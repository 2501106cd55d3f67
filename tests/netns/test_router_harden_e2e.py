"""The networks' router is hardened like `slirpy run` (issue 17 item 3, for issue 15's holder):
what the kernel shows of it (`Seccomp:`, `NoNewPrivs:`, capabilities in /proc/PID/status, its
mount view through /proc/PID/root), its unhardened plumber child doing the plumbing, a network
that still works through the hardened router (names, member to member, outbound, a published
port, a member's exit), a dead plumber stopping the router, and the debug switch.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.netns.test_networks_e2e import World
from tests.netns.util import proc_status as status

pytestmark = pytest.mark.netns

PORT = 18180
CAP_NET_BIND_SERVICE = 1 << 10
TIMEOUT = 60.0


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return True


def wait_for(pred, what: str):
    deadline = time.monotonic() + TIMEOUT
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def whoami_server():
    """A TCP server on 203.0.113.1 (the test namespace's "internet") telling clients their address."""
    srv = socket.create_server(("203.0.113.1", 0))

    def loop() -> None:
        while True:
            try:
                conn, peer = srv.accept()
            except OSError:
                return
            conn.sendall(f"{peer[0]}\n".encode())
            conn.close()
    threading.Thread(target=loop, daemon=True).start()
    yield srv.getsockname()[1]
    srv.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    w = World(tmp_path_factory.mktemp("rh"))
    assert w.slirpy("network", "create", "--ipv6", "h").returncode == 0
    w.start_server("hweb", ["--network", "h", "-p", f"203.0.113.1:{PORT}:8000"])
    yield w
    w.stop()


def _router(world: World) -> int:
    return int(world.holder()["router_pid"])


def _expected_root(world: World) -> list[str]:
    """etc, run and the top of the runtime directory's path (holder.sock, holder-ctl.sock)."""
    top = str(world.root / "run").strip("/").split("/")[0]
    return sorted({"etc", "run", top})


def test_router_is_hardened(world: World) -> None:
    pid = _router(world)
    st = status(pid)
    assert (st["Seccomp"], st["NoNewPrivs"]) == ("2", "1"), st
    assert [int(st[k], 16) for k in ("CapEff", "CapPrm", "CapBnd")] == [CAP_NET_BIND_SERVICE] * 3, st
    assert sorted(os.listdir(f"/proc/{pid}/root/")) == _expected_root(world)
    runtime = f"/proc/{pid}/root{world.root / 'run' / 'slirpy'}"
    assert {"holder.sock", "holder-ctl.sock"} <= set(os.listdir(runtime))
    # the plumber: its only child living on, unhardened, with the full mount view
    plumbers = children(pid)
    assert len(plumbers) == 1, plumbers
    pst = status(plumbers[0])
    assert (pst["Seccomp"], pst["NoNewPrivs"]) == ("0", "0"), pst
    assert "usr" in os.listdir(f"/proc/{plumbers[0]}/root/")


def test_network_works_through_the_hardened_router(world: World, whoami_server: int) -> None:
    pid = _router(world)
    # by name and member to member (DNS answered by the hardened router, bridge in the kernel)
    assert world.peer(["--network", "h"], "try", "hweb", "8000") == {"result": "ok"}
    # outbound through the router: the server sees the test namespace's side
    out = world.peer(["--network", "h"], "whoami", "203.0.113.1", str(whoami_server))
    assert out == {"reply": "203.0.113.1"}, out
    # the published port (added by the router after hardening): the member sees the client
    with socket.create_connection(("203.0.113.1", PORT), timeout=5) as s:
        assert s.recv(100).decode().startswith("203.0.113.1 ")
    # rules and counters come from the plumber through the router
    assert "counters" in world.inspect("h")
    assert _router(world) == pid and status(pid)["Seccomp"] == "2"    # still the same router


def test_member_exit_is_noticed(world: World) -> None:
    extra = world.start_server("hextra", ["--network", "h"])
    wait_for(lambda: world.peer(["--network", "h"], "try", "hextra", "8000") == {"result": "ok"}, "hextra")
    os.killpg(extra.pid, signal.SIGKILL)
    extra.wait()
    # the plumber saw its pidfd, the router synced: its name is gone
    wait_for(lambda: world.peer(["--network", "h"], "try", "hextra", "8000") != {"result": "ok"},
             "hextra's name to go")
    assert world.peer(["--network", "h"], "try", "hweb", "8000") == {"result": "ok"}


def test_dead_plumber_stops_the_router(world: World) -> None:
    before = world.holder()
    router = before["router_pid"]
    (plumber,) = children(router)
    os.kill(plumber, signal.SIGKILL)
    wait_for(lambda: gone(router), "the router to stop")
    assert world.status() == "down"
    assert world.procs[0].poll() is None                     # the member keeps running
    # the next run starts router and plumber again for the same keeper
    assert world.peer(["--network", "h"], "try", "hweb", "8000") == {"result": "ok"}
    after = world.holder()
    assert after["keeper_pid"] == before["keeper_pid"] and after["router_pid"] != router
    assert status(after["router_pid"])["Seccomp"] == "2"
    with socket.create_connection(("203.0.113.1", PORT), timeout=5) as s:   # ports put back
        assert s.recv(100).decode().startswith("203.0.113.1 ")


def test_debug_switch_and_lifecycle(short_tmp: Path) -> None:
    tmp_path = short_tmp
    w = World(tmp_path)
    w.env["SLIRPY_HOLDER_NO_SANDBOX"] = "1"
    assert w.slirpy("network", "create", "d").returncode == 0
    proc = w.start_server("dweb", ["--network", "d"])
    try:
        pid, keeper = int(w.holder()["router_pid"]), int(w.holder()["keeper_pid"])
        (plumber,) = children(pid)
        st = status(pid)
        assert (st["Seccomp"], st["NoNewPrivs"]) == ("0", "0"), st
        assert "usr" in os.listdir(f"/proc/{pid}/root/")
        assert w.peer(["--network", "d"], "try", "dweb", "8000") == {"result": "ok"}
    finally:
        w.stop()
    assert proc.poll() is not None
    # the last member gone: router, plumber and keeper end, leaving no file but the definitions
    run = tmp_path / "run" / "slirpy"
    wait_for(lambda: not ({p.name for p in run.iterdir()} - {"lock", "sandboxes", "holder.log"}),
             "the holder's files to go")
    wait_for(lambda: gone(pid) and gone(plumber) and gone(keeper), "router, plumber and keeper to end")
    holder_log = (run / "holder.log").read_text()
    assert "runs unhardened" in holder_log, holder_log
    assert not list((run / "sandboxes").iterdir())
