"""Named networks end to end (issue 15): real bridges, veths and nft in a holder namespace,
real members running real tools, as the unprivileged user inside helpers/testns.

One module-scoped world (its own XDG runtime and data directories, so its own holder):
networks `a` (IPv6 too) and `b`; members `web` (on a, alias `www`, ports published),
`db` (on a and b) and `cli` (on b). Every test then starts short-lived members next to them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.netns.util import REPO

NETPEER = str(Path(__file__).resolve().parent / "netpeer.py")
PY = sys.executable
WEB_PORT, WEB_UDP_PORT = 18080, 18081


def bulk_size(request: pytest.FixtureRequest) -> int:
    return (1 << 30) if request.config.getoption("--long") else (256 << 20)


class World:
    def __init__(self, root: Path) -> None:
        self.env = dict(os.environ, XDG_RUNTIME_DIR=str(root / "run"), XDG_DATA_HOME=str(root / "data"))
        (root / "run").mkdir(mode=0o700, exist_ok=True)
        self.root = root
        self.procs: list[subprocess.Popen] = []

    def slirpy(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([PY, "-m", "slirpy", *args], env=self.env, cwd=REPO, capture_output=True,
                              text=True, timeout=timeout)

    def run(self, opts: list[str], cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        return self.slirpy("run", *opts, "--", *cmd, timeout=timeout)

    def peer(self, opts: list[str], *args: str, timeout: float = 300) -> dict:
        res = self.run(opts, [PY, NETPEER, *args], timeout=timeout)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout.strip().splitlines()[-1])

    def start_server(self, name: str, opts: list[str]) -> subprocess.Popen:
        ready = self.root / f"{name}.ready"
        proc = subprocess.Popen([PY, "-m", "slirpy", "run", "--name", name, *opts, "--", PY, NETPEER,
                                 "serve", str(ready)], env=self.env, cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.procs.append(proc)
        deadline = time.monotonic() + 60
        while not ready.exists():
            if proc.poll() is not None:
                raise AssertionError(f"{name} ended: {proc.stderr.read() if proc.stderr else ''}")
            assert time.monotonic() < deadline, f"{name} not ready"
            time.sleep(0.05)
        return proc

    def holder(self) -> dict:
        return json.loads((self.root / "run" / "slirpy" / "holder.json").read_text())

    def status(self) -> str:
        res = subprocess.run([PY, "-c", "from slirpy.networks import holder_status; print(holder_status())"],
                             env=self.env, cwd=REPO, capture_output=True, text=True, timeout=30)
        return res.stdout.strip()

    def inspect(self, name: str) -> dict:
        res = self.slirpy("network", "inspect", name)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    w = World(tmp_path_factory.mktemp("networks"))
    assert w.slirpy("network", "create", "--ipv6", "a").returncode == 0
    assert w.slirpy("network", "create", "b").returncode == 0
    w.start_server("web", ["--network", "a", "--network-alias", "www", "--ip", "10.89.0.10",
                           "-p", f"203.0.113.1:{WEB_PORT}:8000", "-p", f"203.0.113.1:{WEB_UDP_PORT}:8001/udp"])
    w.start_server("db", ["--network", "a", "--network", "b"])
    w.start_server("cli", ["--network", "b"])
    yield w
    w.stop()


def test_members_and_addresses(world: World) -> None:
    a = world.inspect("a")
    members = {m["name"]: m for m in a["members"]}
    assert set(members) == {"web", "db"}
    assert members["web"]["ip"] == "10.89.0.10"
    assert members["web"]["aliases"] == ["www"]
    assert members["db"]["ip"] == "10.89.0.2"          # the lowest free from .2
    assert members["db"]["ip6"] == "fd89::2"
    assert {m["name"] for m in world.inspect("b")["members"]} == {"db", "cli"}
    ls = json.loads(world.slirpy("network", "ls", "--json").stdout)
    assert [(n["name"], n["subnet"], n["members"]) for n in ls] == [("a", "10.89.0.0/24", 2),
                                                                     ("b", "10.89.1.0/24", 2)]


def test_bulk_tcp_both_ways(world: World, request: pytest.FixtureRequest) -> None:
    size = bulk_size(request)
    up = world.peer(["--network", "a"], "upload", "web", str(size), "7")
    assert up["sent"] == up["got"]
    down = world.peer(["--network", "a"], "download", "web", str(size), "8")
    assert down["bytes"] == size and down["got"] == down["expected"]


def test_udp_ping_and_names(world: World) -> None:
    out = world.peer(["--network", "a", "--ip", "10.89.0.50"], "whoami", "web", "8001", "udp")
    assert out == {"reply": "10.89.0.50 " + out["reply"].split()[1]}
    res = world.run(["--network", "a"], ["sh", "-c",
                    "ping -c1 -W2 web >/dev/null && echo ping-ok; ping -6 -c1 -W2 db >/dev/null && echo ping6-ok; "
                    "for n in www web.a db; do getent ahostsv4 $n | head -1; done; getent ahostsv6 web.a | head -1; "
                    "dig +short @10.89.0.1 db.a; dig +short @fd89::1 db.a AAAA"])
    assert res.returncode == 0, res.stderr
    lines = [line.split() for line in res.stdout.splitlines()]
    assert lines == [["ping-ok"], ["ping6-ok"], ["10.89.0.10", "STREAM", "www"], ["10.89.0.10", "STREAM", "web.a"],
                     ["10.89.0.2", "STREAM", "db"], ["fd89::a", "STREAM", "web.a"], ["10.89.0.2"], ["fd89::2"]]


def test_isolation_both_ways(world: World) -> None:
    # b -> a: web's address answers with a TCP reset (nft: isolation), at once
    assert world.peer(["--network", "b"], "try", "10.89.0.10", "8000") == {"result": "refused"}
    assert world.peer(["--network", "b"], "try", "10.89.0.10", "8001", "udp") == {"result": "unreachable"}
    res = world.run(["--network", "b"], ["sh", "-c", "getent hosts web; echo rc=$?; getent hosts web.a; echo rc=$?; "
                                        "dig +short @10.89.1.1 web.a; dig @10.89.1.1 web.a | grep -c NXDOMAIN"])
    assert res.stdout.split() == ["rc=2", "rc=2", "1"], res.stdout
    # a -> b: cli's address likewise
    cli_ip = next(m["ip"] for m in world.inspect("b")["members"] if m["name"] == "cli")
    assert world.peer(["--network", "a"], "try", cli_ip, "8000") == {"result": "refused"}
    # db is on both: it reaches both sides (from a new member on both networks too)
    assert world.peer(["--network", "a", "--network", "b"], "try", cli_ip, "8000") == {"result": "ok"}


def test_outbound_published_port_and_hairpin(world: World) -> None:
    with socket.create_connection(("203.0.113.1", WEB_PORT), source_address=("203.0.113.1", 0)) as s:
        port = s.getsockname()[1]
        assert s.recv(100).decode().strip() == f"203.0.113.1 {port}"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("203.0.113.1", 0))
        u.settimeout(5)
        u.sendto(b"who", ("203.0.113.1", WEB_UDP_PORT))
        assert u.recv(100).decode() == f"203.0.113.1 {u.getsockname()[1]}"
    # hairpin: a member reaches web through the host's published port
    out = world.peer(["--network", "b"], "whoami", "203.0.113.1", str(WEB_PORT))
    assert out["reply"].startswith("203.0.113.1 ")


def test_rm_refused_while_members_run(world: World) -> None:
    res = world.slirpy("network", "rm", "a")
    assert res.returncode == 1
    assert res.stderr.strip().startswith("slirpy: network 'a' has running members")
    assert world.inspect("a")["name"] == "a"


def test_connect_disconnect(world: World) -> None:
    res = world.run(["--network", "b"], ["sh", "-c", "getent hosts webb; echo rc=$?"])
    assert res.stdout.strip() == "rc=2"
    res = world.slirpy("network", "connect", "--alias", "webb", "b", "web")
    assert res.returncode == 0, res.stderr
    web_b = next(m for m in world.inspect("b")["members"] if m["name"] == "web")
    assert web_b["iface"] == "eth1"
    out = world.peer(["--network", "b"], "whoami", "webb", "8000")
    assert out["reply"].startswith("10.89.1.")
    res = world.slirpy("network", "disconnect", "b", "web")
    assert res.returncode == 0, res.stderr
    assert world.peer(["--network", "b"], "try", web_b["ip"], "8000") == {"result": "refused"}
    assert world.peer(["--network", "a"], "try", "web", "8000") == {"result": "ok"}


def test_sigkill_member_is_cleaned(world: World) -> None:
    victim = world.start_server("victim", ["--network", "a"])
    assert any(m["name"] == "victim" for m in world.inspect("a")["members"])
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    deadline = time.monotonic() + 10
    while any(m["name"] == "victim" for m in world.inspect("a")["members"]):
        assert time.monotonic() < deadline, "victim still listed"
        time.sleep(0.1)
    res = world.run(["--network", "a"], ["sh", "-c", "getent hosts victim; echo rc=$?"])
    assert res.stdout.strip() == "rc=2"
    (world.root / "victim.ready").unlink()
    world.start_server("victim", ["--network", "a"])       # the name is free again


def test_sigkill_router(world: World) -> None:
    holder = world.holder()
    os.kill(holder["router_pid"], signal.SIGKILL)
    while world.status() != "down":
        time.sleep(0.05)
    assert all(p.poll() is None for p in world.procs[:3])    # web, db, cli keep running
    # the next run brings the router back: members reach each other and the outside again
    assert world.peer(["--network", "a"], "try", "web", "8000") == {"result": "ok"}
    assert world.status() == "running"
    after = world.holder()
    assert after["keeper_pid"] == holder["keeper_pid"]        # the keeper survived
    assert after["router_pid"] != holder["router_pid"]        # the next run brought a router back
    # and the published ports are back
    with socket.create_connection(("203.0.113.1", WEB_PORT), timeout=5) as s:
        assert s.recv(100).decode().startswith("203.0.113.1 ")
