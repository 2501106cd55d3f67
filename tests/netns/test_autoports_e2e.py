"""`-p auto` end to end: ports bound inside after the start are published on the host, and
unpublished when closed.

The sandbox runs a small guest that binds and closes sockets when told on its stdin, so
every step happens after slirpy started. Each check waits for its event up to a generous
deadline (the poll is once a second) and prints the measured delay; nothing asserts a time.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.netns.util import HOST_ADDR, REPO, kill_session, slirpy_argv

DEADLINE = 20.0          # seconds: far above the 1 s poll, for a loaded 2-core machine

# The guest: commands on stdin, one per line:
#   tcp PORT ADDR   listen; every client gets "hello PORT\n" and is closed
#   udp PORT ADDR   bind; every datagram is echoed with "echo " in front
#   close PROTO PORT
# each answered with "OK <command>" on stdout once done.
GUEST = r'''
import selectors, socket, sys
sel = selectors.DefaultSelector()
socks = {}
def family(a):
    return socket.AF_INET6 if ":" in a else socket.AF_INET
def on_tcp(s, port):
    c, _ = s.accept()
    c.sendall(b"hello %d\n" % port)
    c.close()
def on_udp(s, port):
    data, peer = s.recvfrom(65536)
    s.sendto(b"echo " + data, peer)
def on_cmd(_s, _p):
    line = sys.stdin.readline()
    if not line:
        sys.exit(0)
    w = line.split()
    if w[0] in ("tcp", "udp"):
        port, addr = int(w[1]), w[2]
        s = socket.socket(family(addr), socket.SOCK_STREAM if w[0] == "tcp" else socket.SOCK_DGRAM)
        if ":" in addr:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind((addr, port))
        if w[0] == "tcp":
            s.listen(16)
        socks[(w[0], port)] = s
        sel.register(s, selectors.EVENT_READ, (on_tcp if w[0] == "tcp" else on_udp, port))
    elif w[0] == "close":
        s = socks.pop((w[1], int(w[2])))
        sel.unregister(s)
        s.close()
    print("OK " + line.strip(), flush=True)
sel.register(sys.stdin, selectors.EVENT_READ, (on_cmd, 0))
print("READY", flush=True)
while True:
    for key, _ in sel.select():
        fn, port = key.data
        fn(key.fileobj, port)
'''


class Guest:
    """`slirpy run OPTIONS -- GUEST`, driven through its stdin."""

    def __init__(self, options: list[str], api: str):
        self.api = api
        args = slirpy_argv(*options, "--api-socket", api) + [sys.executable, "-c", GUEST]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True, cwd=REPO)
        self.stderr = ""
        self.expect("READY")

    def expect(self, line: str, timeout: float = 30.0) -> None:
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        buf = b""
        while not buf.endswith(b"\n"):
            left = deadline - time.monotonic()
            assert left > 0 and select.select([fd], [], [], left)[0], f"no {line!r} from the guest"
            chunk = os.read(fd, 1)
            assert chunk, f"the guest ended before {line!r}: {self.stop()} {self.stderr}"
            buf += chunk
        assert buf.decode().strip() == line

    def do(self, command: str) -> float:
        """Run one guest command; return the monotonic time it was done."""
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        self.expect("OK " + command)
        return time.monotonic()

    def call(self, execute: str) -> dict:
        from slirpy.api import request
        return request(self.api, {"execute": execute})

    def entries(self) -> list[dict]:
        return self.call("list_hostfwd")["entries"]

    def counter(self, name: str) -> int:
        return self.call("stats")["return"]["counters"].get(name, 0)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                kill_session(self.proc)
                self.proc.wait()
        if not self.proc.stderr.closed:
            self.stderr = self.proc.stderr.read().decode(errors="replace")
            for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                f.close()
        return self.proc.returncode


@pytest.fixture
def guest(tmp_path):
    guests: list[Guest] = []

    def start(options: list[str]) -> Guest:
        g = Guest(options, str(tmp_path / f"api{len(guests)}.sock"))
        guests.append(g)
        return g

    yield start
    for g in guests:
        g.stop()


def tcp_hello(addr: str, port: int) -> bytes | None:
    """What a server at addr:port sends before closing; None if refused or reset."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        try:
            s.connect((addr, port))
            data = b""
            while True:
                b = s.recv(100)
                if not b:
                    return data or None       # accepted, then closed by a refusing guest
                data += b
        except (ConnectionRefusedError, ConnectionResetError):
            return None


def udp_echo(addr: str, port: int, payload: bytes) -> bytes | None:
    """The answer to one datagram; None on no answer (within 0.5 s) or port unreachable."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as u:
        u.settimeout(0.5)
        u.connect((addr, port))
        try:
            u.send(payload)
            return u.recv(65536)
        except (TimeoutError, ConnectionRefusedError):
            return None


def wait_for(what: str, check, since: float) -> float:
    """Poll `check()` until true (up to DEADLINE); print and return the delay since `since`."""
    while not check():
        assert time.monotonic() - since < DEADLINE, f"{what}: not within {DEADLINE}s"
        time.sleep(0.05)
    delay = time.monotonic() - since
    print(f"{what}: {delay:.2f} s")
    return delay


def auto_entry(g: Guest, proto: str, port: int) -> dict | None:
    for e in g.entries():
        if e["proto"] == proto and e["host_port"] == port and e.get("auto"):
            return e
    return None


def test_tcp_bound_after_start_is_published_then_unpublished(guest):
    g = guest(["-p", "auto"])
    assert tcp_hello("127.0.0.1", 18500) is None
    g.do("tcp 18501 127.0.0.1")           # loopback inside: never published
    t0 = g.do("tcp 18500 0.0.0.0")
    wait_for("tcp published", lambda: tcp_hello("127.0.0.1", 18500) == b"hello 18500\n", t0)
    e = auto_entry(g, "tcp", 18500)
    assert e == {"id": e["id"], "proto": "tcp", "host_addr": "127.0.0.1", "host_port": 18500,
                 "guest_addr": "10.0.2.100", "guest_port": 18500, "auto": True}
    assert not any(x["host_port"] == 18501 for x in g.entries())     # scanned in the same pass
    assert tcp_hello("127.0.0.1", 18501) is None
    out = subprocess.run([sys.executable, "-m", "slirpy", "port", "ls", "--api-socket", g.api],
                         capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert any("127.0.0.1:18500" in line and line.endswith("(auto)") for line in out.splitlines())
    t1 = g.do("close tcp 18500")
    wait_for("tcp unpublished", lambda: auto_entry(g, "tcp", 18500) is None, t1)
    assert tcp_hello("127.0.0.1", 18500) is None
    assert g.counter("ports.auto.published") == 1 and g.counter("ports.auto.unpublished") == 1


def test_udp_bound_after_start_is_published_then_unpublished(guest):
    g = guest(["-p", "auto/udp"])
    t0 = g.do("udp 18520 ::")             # dual-stack wildcard, as many servers bind
    wait_for("udp published", lambda: udp_echo("127.0.0.1", 18520, b"u1") == b"echo u1", t0)
    assert auto_entry(g, "udp", 18520) is not None
    g.do("tcp 18521 0.0.0.0")             # auto/udp: TCP is not watched
    t1 = g.do("close udp 18520")
    wait_for("udp unpublished", lambda: auto_entry(g, "udp", 18520) is None, t1)
    assert udp_echo("127.0.0.1", 18520, b"u2") is None
    assert tcp_hello("127.0.0.1", 18521) is None
    assert not any(e["proto"] == "tcp" for e in g.entries())


def test_host_port_in_use_is_reported_once_and_the_sandbox_keeps_running(guest):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 18530))
    taken.listen()
    try:
        g = guest(["-p", "auto/tcp"])
        t0 = g.do("tcp 18530 0.0.0.0")
        wait_for("conflict counted", lambda: g.counter("ports.auto.conflict") == 1, t0)
        # Two more ports published afterwards: at least two more scans saw 18530 still bound.
        for port in (18531, 18532):
            t = g.do(f"tcp {port} 0.0.0.0")
            wait_for(f"tcp {port} published", lambda: tcp_hello("127.0.0.1", port) is not None, t)
        assert g.counter("ports.auto.conflict") == 1
        assert auto_entry(g, "tcp", 18530) is None
        assert g.proc.poll() is None
    finally:
        taken.close()
    g.stop()
    lines = [x for x in g.stderr.splitlines() if "cannot publish" in x]
    assert len(lines) == 1 and "127.0.0.1:18530/tcp" in lines[0] and "in use" in lines[0], g.stderr


def test_an_explicit_publish_of_the_same_guest_port_wins(guest):
    g = guest(["-p", "auto", "-p", "127.0.0.1:18541:18540", "-p", "18542:18542"])
    g.do("tcp 18540 0.0.0.0")
    g.do("tcp 18542 0.0.0.0")             # explicit on 0.0.0.0: auto would collide with it
    t0 = g.do("tcp 18543 0.0.0.0")        # bound last: once it is published, the others were seen
    wait_for("tcp 18543 published", lambda: tcp_hello("127.0.0.1", 18543) is not None, t0)
    assert tcp_hello("127.0.0.1", 18541) == b"hello 18540\n"
    assert tcp_hello("127.0.0.1", 18540) is None
    assert tcp_hello("127.0.0.1", 18542) == b"hello 18542\n"       # through the explicit one
    autos = {e["guest_port"] for e in g.entries() if e.get("auto")}
    assert autos == {18543}
    assert g.counter("ports.auto.explicit") == 2 and g.counter("ports.auto.conflict") == 0


@pytest.mark.parametrize("addr, bind", [(HOST_ADDR, "0.0.0.0"), ("::1", "0.0.0.0"), ("::1", "::")],
                         ids=["203.0.113.1", "ipv6-to-ipv4-bind", "ipv6-to-dual-bind"])
def test_publish_auto_addr(guest, addr, bind):
    g = guest(["-p", "auto", "--publish-auto-addr", addr])
    t0 = g.do(f"tcp 18550 {bind}")
    g.do(f"udp 18550 {bind}")
    wait_for("tcp published", lambda: tcp_hello(addr, 18550) == b"hello 18550\n", t0)
    wait_for("udp published", lambda: udp_echo(addr, 18550, b"x") == b"echo x", t0)
    assert tcp_hello("127.0.0.1", 18550) is None
    assert {(e["proto"], e["host_addr"]) for e in g.entries() if e.get("auto")} == {
        ("tcp", addr), ("udp", addr)}
