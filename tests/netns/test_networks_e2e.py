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

from slirpy import nativewaiter
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


def _until(what: str, check, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            out = check()
            if out:
                return out
        except OSError:
            pass
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _whoami_tcp(host: str, port: int) -> tuple[str, int]:
    with socket.create_connection((host, port), timeout=5, source_address=("203.0.113.1", 0)) as s:
        return s.recv(100).decode().strip(), s.getsockname()[1]


def test_p_auto_on_a_member_publishes_what_it_binds_with_the_source_address(world: World) -> None:
    """`-p auto` on a member: its ports appear on the host (TCP and UDP, the client's address
    kept), only its own explicit ports win over them (web's `-p ...:8000` does not), and they
    go away with it."""
    auto = world.start_server("auto1", ["--network", "b", "-p", "auto", "--publish-auto-addr", "198.51.100.1"])
    reply, port = _until("8000/tcp not auto-published", lambda: _whoami_tcp("198.51.100.1", 8000))
    assert reply == f"203.0.113.1 {port}"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind(("203.0.113.1", 0))
        u.settimeout(1)

        def udp() -> str:
            u.sendto(b"who", ("198.51.100.1", 8001))
            return u.recv(100).decode()
        assert _until("8001/udp not auto-published", udp) == f"203.0.113.1 {u.getsockname()[1]}"
    listed = world.slirpy("port", "ls", "auto1")
    assert listed.returncode == 0, listed.stderr
    assert "8000" in listed.stdout and "(auto)" in listed.stdout
    auto.send_signal(signal.SIGTERM)
    auto.wait(30)

    def refused() -> bool:
        try:
            _whoami_tcp("198.51.100.1", 8000)
        except ConnectionRefusedError:
            return True
        return False
    assert _until("8000/tcp still published after the member ended", refused)


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


# ------------------------------------------------------------------ rules: internal, egress, ingress


def serve_whoami(srv: socket.socket, count: int | None = None) -> None:
    """In a thread: answer each of `count` (None: all) connections to `srv` with the client's
    "address port" line, as the connection's other end saw it."""
    import threading

    def loop() -> None:
        n = 0
        while count is None or n < count:
            n += 1
            try:
                conn, peer = srv.accept()
            except OSError:
                return
            conn.sendall(f"{peer[0]} {peer[1]}\n".encode())
            conn.close()
    threading.Thread(target=loop, daemon=True).start()


@pytest.fixture(scope="module")
def host_whoami():
    """TCP whoami servers on 203.0.113.1 and 198.51.100.1 (the test namespace's "internet")."""
    servers = []
    for addr in ("203.0.113.1", "198.51.100.1"):
        srv = socket.create_server((addr, 0))
        servers.append(srv)
        serve_whoami(srv)
    yield {s.getsockname()[0]: s.getsockname()[1] for s in servers}
    for s in servers:
        s.close()


def _counter(world: World, network: str, what: str) -> int:
    """Packets counted by a rule since the holder started (the table is rebuilt as members come
    and go; the router carries the counts over)."""
    return world.inspect(network)["counters"].get(f"{network}: {what}", {}).get("packets", 0)


def test_internal(world: World, host_whoami: dict) -> None:
    assert world.slirpy("network", "create", "--internal", "i").returncode == 0
    world.start_server("inner", ["--network", "i"])
    port = host_whoami["203.0.113.1"]
    assert world.peer(["--network", "i"], "try", "203.0.113.1", str(port)) == {"result": "refused"}
    assert world.peer(["--network", "i"], "try", "inner", "8000") == {"result": "ok"}     # by name, inside
    res = world.run(["--network", "i"], ["sh", "-c", "ping -c1 -W2 203.0.113.1 >/dev/null; echo rc=$?"])
    assert res.stdout.strip() == "rc=1"
    assert _counter(world, "i", "internal") >= 2


def test_egress_deny(world: World, host_whoami: dict) -> None:
    assert world.slirpy("network", "create", "--egress-deny", "198.51.100.0/24", "e").returncode == 0
    denied, allowed = host_whoami["198.51.100.1"], host_whoami["203.0.113.1"]
    assert world.peer(["--network", "e"], "try", "198.51.100.1", str(denied)) == {"result": "refused"}
    assert world.peer(["--network", "e"], "try", "198.51.100.1", "53", "udp") == {"result": "unreachable"}
    out = world.peer(["--network", "e"], "whoami", "203.0.113.1", str(allowed))
    assert out["reply"].startswith("203.0.113.1 ")        # out through slirpy's host sockets
    assert _counter(world, "e", "egress-deny") >= 2


def _tcp_whoami(port: int, source: str) -> str:
    try:
        with socket.create_connection(("203.0.113.1", port), timeout=5, source_address=(source, 0)) as s:
            return s.recv(100).decode().strip() or "closed"
    except ConnectionResetError:
        return "reset"
    except socket.timeout:
        return "timeout"


def _udp_whoami(port: int, source: str) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.bind((source, 0))
        u.settimeout(2)
        u.sendto(b"who", ("203.0.113.1", port))
        try:
            return u.recv(100).decode()
        except socket.timeout:
            return "timeout"


def test_ingress_allow(world: World) -> None:
    assert world.slirpy("network", "create", "--ingress-allow", "198.51.100.0/24", "g").returncode == 0
    world.start_server("guarded", ["--network", "g", "-p", "18090:8000", "-p", "18091:8001/udp"])
    assert _tcp_whoami(18090, "203.0.113.1") in ("reset", "closed")
    reply = _tcp_whoami(18090, "198.51.100.1")
    assert reply.split()[0] == "198.51.100.1"
    assert _udp_whoami(18091, "203.0.113.1") == "timeout"
    assert _udp_whoami(18091, "198.51.100.1").split()[0] == "198.51.100.1"
    assert _counter(world, "g", "ingress-allow") >= 2
    stats = world.slirpy("stats", "--api-socket", str(world.root / "run" / "slirpy" / "holder.sock"))
    assert any(line.startswith("nft.g.ingress-allow ") and int(line.split()[1]) >= 2
               for line in stats.stdout.splitlines()), stats.stdout


# ------------------------------------------------------------------ lifecycle and bad input


def test_two_concurrent_runs_create_the_holder(short_tmp: Path) -> None:
    tmp_path = short_tmp
    w = World(tmp_path)
    assert w.slirpy("network", "create", "c").returncode == 0
    procs = [subprocess.Popen([PY, "-m", "slirpy", "run", "--network", "c", "--", "sh", "-c",
                               "ping -c1 -W5 10.89.0.1 >/dev/null && echo up"], env=w.env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert [o[0].strip() for o in outs] == ["up", "up"]
    # the last member gone, the holder goes too, leaving no file but the definitions
    deadline = time.monotonic() + 15
    run = tmp_path / "run" / "slirpy"
    while {p.name for p in run.iterdir()} - {"lock", "sandboxes", "holder.log"}:
        assert time.monotonic() < deadline, sorted(p.name for p in run.iterdir())
        time.sleep(0.1)
    assert list((run / "sandboxes").iterdir()) == []
    assert [p.name for p in (tmp_path / "data" / "slirpy" / "networks").iterdir()] == ["c.json"]


def test_a_runtime_dir_too_deep_for_the_holders_sockets_is_one_line(short_tmp: Path) -> None:
    deep = short_tmp / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    w = World(deep)
    assert w.slirpy("network", "create", "deep").returncode == 0
    r = w.run(["--network", "deep"], ["true"])
    assert r.returncode == 1 and "too long for a UNIX socket" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (deep / "run" / "slirpy" / "holder.json").exists()


BAD = [
    (["network", "create", "Bad!"], 2, "invalid network name 'Bad!'"),
    (["network", "create", "a"], 1, "network 'a' already exists"),
    (["network", "create", "--subnet", "10.89.0.0/16", "x"], 1, "invalid --subnet 10.89.0.0/16: overlaps 10.89.0.0/24 of network 'a'"),
    (["network", "create", "--subnet", "10.0.2.0/24", "x"], 1, "overlaps 10.0.2.0/24"),
    (["network", "create", "--subnet", "10.9.9.9/24", "x"], 2, "invalid --subnet '10.9.9.9/24'"),
    (["network", "create", "--egress-deny", "nope", "x"], 2, "invalid --egress-deny 'nope'"),
    (["network", "create", "--subnet6", "fd00:1::/64", "x"], 2, "--subnet6 fd00:1::/64 needs --ipv6"),
    (["network", "inspect", "nosuch"], 1, "unknown network 'nosuch'"),
    (["network", "rm", "nosuch"], 1, "unknown network 'nosuch'"),
    (["run", "--network", "nosuch", "--", "true"], 1, "unknown network 'nosuch'"),
    (["run", "--network", "a", "--ip", "10.89.5.5", "--", "true"], 1, "invalid --ip 10.89.5.5: must be a host address of network 'a'"),
    (["run", "--network", "a", "--ip", "10.89.0.10", "--", "true"], 1, "--ip 10.89.0.10 is already in use on network 'a'"),
    (["run", "--network", "a", "--ip", "x", "--", "true"], 2, "invalid --ip 'x'"),
    (["network", "connect", "b", "nobody"], 1, "no running sandbox named 'nobody'"),
]


@pytest.mark.parametrize("args,code,message", BAD, ids=[" ".join(a[:3]) for a, _, _ in BAD])
def test_bad_input(world: World, args: list[str], code: int, message: str) -> None:
    before = sorted(p.name for p in (world.root / "data" / "slirpy" / "networks").iterdir())
    res = world.slirpy(*args)
    assert res.returncode == code, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], res.stderr
    assert sorted(p.name for p in (world.root / "data" / "slirpy" / "networks").iterdir()) == before


def test_connect_refuses_a_private_sandbox(world: World) -> None:
    proc = subprocess.Popen([PY, "-m", "slirpy", "run", "--name", "loner", "--", "sleep", "60"], env=world.env,
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    world.procs.append(proc)
    deadline = time.monotonic() + 30
    while True:
        res = world.slirpy("network", "connect", "a", "loner")
        if "no running sandbox" not in res.stderr or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert res.returncode == 1
    assert "own private network namespace" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_host_loopback_only_for_members_that_ask(world: World) -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    serve_whoami(srv, count=2)
    try:
        assert world.peer(["--network", "a"], "try", "10.0.2.2", str(port)) == {"result": "refused"}
        out = world.peer(["--network", "a", "--allow-host-loopback"], "whoami", "10.0.2.2", str(port))
        assert out["reply"].startswith("127.0.0.1 ")
    finally:
        srv.close()


def test_loopback_client_of_a_published_port(world: World) -> None:
    # a port published at run time on the holder's API socket (guest_addr: the member); a
    # loopback client appears as the gateway, as with a plain run
    web_ip = "10.89.0.10"
    from slirpy.api import request
    reply = request(str(world.root / "run" / "slirpy" / "holder.sock"), {"execute": "add_hostfwd", "arguments": {
        "proto": "tcp", "host_addr": "127.0.0.1", "host_port": WEB_PORT - 10, "guest_port": 8000,
        "guest_addr": web_ip}})
    assert "return" in reply, reply
    fid = reply["return"]["id"]
    with socket.create_connection(("127.0.0.1", WEB_PORT - 10), timeout=5) as s:
        assert s.recv(100).decode().split()[0] == "10.0.2.2"
    request(str(world.root / "run" / "slirpy" / "holder.sock"), {"execute": "remove_hostfwd", "arguments": {"id": fid}})


def test_ipv6_between_and_across_networks(world: World) -> None:
    assert world.slirpy("network", "create", "--ipv6", "--subnet6", "fd89:0:0:66::/64", "six").returncode == 0
    assert world.peer(["--network", "a"], "whoami", "fd89::a", "8000")["reply"].split()[0].startswith("fd89::")
    assert world.peer(["--network", "six"], "try", "fd89::a", "8000") == {"result": "refused"}
    # ICMPv6 administratively prohibited: Linux reports it as EACCES
    assert world.peer(["--network", "six"], "try", "fd89::a", "8001", "udp") == {"result": "prohibited"}
    res = world.run(["--network", "six"], ["sh", "-c", "dig +short @fd89:0:0:66::1 web.a AAAA; "
                                          "dig @fd89:0:0:66::1 web.a AAAA | grep -c NXDOMAIN"])
    assert res.stdout.split() == ["1"], res.stdout


def test_an_idle_member_is_the_waiter_and_its_pid_1(world: World) -> None:
    """What a member costs while it runs: its `slirpy run` (now the native waiter, or a
    bare-interpreter one where that is not built) and its PID 1 (the native waiter's `hold`, or
    `cat`), no supervisor: both are the only children the command does not make."""
    rec = json.loads((world.root / "run" / "slirpy" / "sandboxes" / "web.json").read_text())
    pid, init = rec["pid"], rec["ns_pid"]
    kids = {int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    assert init in kids and len(kids) == 2
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    native = nativewaiter.to_use()
    if native is not None:
        assert os.readlink(f"/proc/{pid}/exe") == os.readlink(f"/proc/{init}/exe") == os.path.realpath(native)
        assert argv[1] == b"wait"
    else:
        assert os.path.basename(os.readlink(f"/proc/{init}/exe")) == "cat"
        assert argv[1:3] == [b"-I", b"-S"] and argv[3].endswith(b"slirpy/sandbox/waiter.py")
    assert "site-packages" not in Path(f"/proc/{pid}/maps").read_text()
