"""The Stack as a router for a subnet behind the guest (issue 15), end to end, without the
networks code: inside a `slirpy run --allow-host-loopback` sandbox a shell script builds an
inner network namespace by hand (`unshare -n`, a veth pair, ip_forward) and routes
10.89.5.0/24 to it; the test then calls set_routes / set_names / add_hostfwd over the API and
shows, from the inner namespace: TCP, UDP and ping to a 203.0.113.1 server (TCP and ping over
IPv6 too); a published port whose inner server sees the client's real address (TCP and UDP,
and TCP over IPv6); DNS names answered per
querier, NXDOMAIN for a foreign network's name, other names forwarded upstream, over UDP and
TCP; and the fallback from a silent (UDP) or refusing (TCP) first nameserver to the second."""

from __future__ import annotations

import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
import time

import pytest

from slirpy import api
from tests.netns.test_dns_e2e import DnsServer
from tests.netns.util import HOST6_ADDR, HOST_ADDR, HOST_ADDR2, REPO, kill_session, slirpy_argv

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_stray_processes")]

INNER = "10.89.5.2"
INNER6 = "fd89:0:0:5::2"
PEER = "10.89.5.3"

# The sandbox's command: build the inner namespace, then run the inner client on "go".
SCRIPT = r'''
set -e
D=$1
echo 1 > /proc/sys/net/ipv4/ip_forward
echo 1 > /proc/sys/net/ipv6/conf/all/forwarding
unshare -n sleep 600 &
INNER=$!
while [ "$(readlink /proc/$INNER/ns/net)" = "$(readlink /proc/self/ns/net)" ]; do sleep 0.05; done
ip link add v0 type veth peer name eth0 netns /proc/$INNER/ns/net
ip addr add 10.89.5.1/24 dev v0
ip addr add fd89:0:0:5::1/64 dev v0 nodad
ip link set v0 up
nsenter -n -t $INNER sh -c 'ip link set lo up && ip addr add 10.89.5.2/24 dev eth0 &&
    ip addr add fd89:0:0:5::2/64 dev eth0 nodad &&
    ip link set eth0 up && ip route add default via 10.89.5.1 &&
    ip -6 route add default via fd89:0:0:5::1'
nsenter -n -t $INNER "$PY" "$D/inner_server.py" &
SERVER=$!
touch "$D/ready"
while [ ! -e "$D/go" ]; do sleep 0.05; done
nsenter -n -t $INNER "$PY" "$D/inner_client.py" inner > "$D/inner.json"
"$PY" "$D/inner_client.py" sandbox > "$D/sandbox.json"
touch "$D/done"
while [ ! -e "$D/finish" ]; do sleep 0.05; done
kill $SERVER $INNER
'''

# In the inner namespace: TCP 8080 and UDP 8081 answer with the peer address they saw.
INNER_SERVER = r'''
import socket, threading
def tcp(family=socket.AF_INET, addr="0.0.0.0"):
    s = socket.socket(family); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((addr, 8080)); s.listen(8)
    while True:
        c, peer = s.accept()
        c.sendall(("peer=%s:%d" % peer[:2]).encode()); c.close()
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 8081))
    while True:
        data, peer = s.recvfrom(100)
        s.sendto(("peer=%s:%d" % peer).encode(), peer)
threading.Thread(target=udp, daemon=True).start()
threading.Thread(target=tcp, args=(socket.AF_INET6, "::"), daemon=True).start()
tcp()
'''

# The client, run in the inner namespace ("inner") and in the sandbox itself ("sandbox").
INNER_CLIENT = r'''
import json, socket, subprocess, sys
HOST, TCP_PORT, UDP_PORT, HOST6 = "%(host)s", %(tcp)d, %(udp)d, "%(host6)s"
def dig(name, qtype="A", *opts, server="10.0.2.3"):
    p = subprocess.run(["dig", "+time=4", "+tries=1", *opts, "@" + server, name, qtype],
                       capture_output=True, text=True)
    status = [l.split("status: ")[1].split(",")[0] for l in p.stdout.splitlines() if "status: " in l]
    answers = [l.split()[-1] for l in p.stdout.splitlines()
               if l and not l.startswith(";") and "\tIN\t" in l]
    return {"status": status[0] if status else "none", "answers": answers}
out = {"who": sys.argv[1]}
if sys.argv[1] == "inner":
    c = socket.create_connection((HOST, TCP_PORT), timeout=10)
    c.sendall(b"hello"); out["tcp"] = c.recv(100).decode(); c.close()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5)
    u.sendto(b"hello", (HOST, UDP_PORT)); out["udp"] = u.recv(100).decode()
    out["ping"] = subprocess.run(["ping", "-c", "1", "-W", "5", HOST], capture_output=True).returncode
    out["ping6"] = subprocess.run(["ping", "-6", "-c", "1", "-W", "5", HOST6], capture_output=True).returncode
    c = socket.create_connection((HOST6, TCP_PORT), timeout=10)
    c.sendall(b"hello"); out["tcp6"] = c.recv(100).decode(); c.close()
    out["db6.over6"] = dig("db", "AAAA", server="fd00::3")
    out["db"] = dig("db"); out["db.back"] = dig("db.back"); out["web.front"] = dig("web.front")
    out["db6"] = dig("db", "AAAA"); out["a.test"] = dig("a.test")
    out["dns_tcp"] = [dig("db", "A", "+tcp"), dig("web.front", "A", "+tcp"), dig("a.test", "A", "+tcp")]
else:
    out["db.back"] = dig("db.back"); out["web.front"] = dig("web.front")
print(json.dumps(out))
'''


class SeenServer:
    """TCP and UDP on HOST_ADDR: each answers with the peer address it saw."""

    def __init__(self):
        class Tcp(socketserver.BaseRequestHandler):
            def handle(self):
                self.request.recv(100)
                self.request.sendall(("seen=%s" % self.client_address[0]).encode())

        class Udp(socketserver.BaseRequestHandler):
            def handle(self):
                _, sock = self.request
                sock.sendto(("seen=%s" % self.client_address[0]).encode(), self.client_address)

        class Tcp6Server(socketserver.ThreadingTCPServer):
            address_family = socket.AF_INET6

        self.tcp = socketserver.ThreadingTCPServer((HOST_ADDR, 0), Tcp)
        self.udp = socketserver.ThreadingUDPServer((HOST_ADDR, 0), Udp)
        self.ports = (self.tcp.server_address[1], self.udp.server_address[1])
        self.tcp6 = Tcp6Server((HOST6_ADDR, self.ports[0]), Tcp)
        for srv in (self.tcp, self.udp, self.tcp6):
            srv.daemon_threads = True
            threading.Thread(target=srv.serve_forever, daemon=True).start()

    def close(self):
        for srv in (self.tcp, self.udp, self.tcp6):
            srv.shutdown()
            srv.server_close()


class SilentNameserver:
    """UDP port 53 that takes queries and never answers (nor refuses)."""

    def __init__(self, addr: str):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((addr, 53))
        self.sock.settimeout(0.2)
        self.queries = 0
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop:
            try:
                self.sock.recv(4096)
                self.queries += 1
            except socket.timeout:
                pass

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


def wait_for(path, proc, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"sandbox ended before {what}: {proc.returncode}\n{out}\n{err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} after {timeout}s")
        time.sleep(0.05)


def call(sock: str, execute: str, **arguments) -> dict:
    return api.request(sock, {"execute": execute, "arguments": arguments})


def test_routed_subnet_behind_the_sandbox(tmp_path):
    seen = SeenServer()
    silent = SilentNameserver(HOST_ADDR2)
    answering = DnsServer(HOST_ADDR)
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {HOST_ADDR2}\nnameserver {HOST_ADDR}\n")
    (tmp_path / "inner_server.py").write_text(INNER_SERVER)
    (tmp_path / "inner_client.py").write_text(
        INNER_CLIENT % {"host": HOST_ADDR, "tcp": seen.ports[0], "udp": seen.ports[1], "host6": HOST6_ADDR})
    sock, stats = str(tmp_path / "api.sock"), tmp_path / "stats.json"
    argv = slirpy_argv("--allow-host-loopback", "--api-socket", sock, "--resolv-conf", str(resolv),
                       "--stats-file", str(stats)) + ["sh", "-c", SCRIPT, "script", str(tmp_path)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, cwd=REPO, env={**os.environ, "PY": sys.executable})
    try:
        wait_for(tmp_path / "ready", proc, "inner namespace")
        assert call(sock, "set_routes", prefixes=["10.89.5.0/24", "fd89:0:0:5::/64"]) == {"return": {}}
        assert call(sock, "set_names", views={
            INNER: {"db": [PEER, "fd89:0:0:5::3"], "db.back": [PEER]},
            INNER6: {"db": ["fd89:0:0:5::6"]},
            "10.0.2.100": {"web.front": ["10.0.2.100"]}}, domains=["front", "back"]) == {"return": {}}
        tcp_fwd = socket.socket()
        tcp_fwd.bind((HOST_ADDR, 0))
        tcp_port = tcp_fwd.getsockname()[1]
        tcp_fwd.close()
        assert "return" in call(sock, "add_hostfwd", proto="tcp", host_addr=HOST_ADDR, host_port=tcp_port,
                                guest_addr=INNER, guest_port=8080)
        assert "return" in call(sock, "add_hostfwd", proto="udp", host_addr=HOST_ADDR, host_port=tcp_port,
                                guest_addr=INNER, guest_port=8081)
        assert "return" in call(sock, "add_hostfwd", proto="tcp", host_addr=HOST6_ADDR, host_port=tcp_port,
                                guest_addr=INNER6, guest_port=8080)
        (tmp_path / "go").touch()
        wait_for(tmp_path / "done", proc, "inner client", timeout=90)
        inner = json.loads((tmp_path / "inner.json").read_text())
        own = json.loads((tmp_path / "sandbox.json").read_text())
        # A published port of the inner namespace: its server sees this client's address.
        with socket.create_connection((HOST_ADDR, tcp_port), timeout=10, source_address=(HOST_ADDR, 0)) as c:
            tcp_reply = c.recv(100).decode()
            tcp_client = c.getsockname()
        with socket.create_connection((HOST6_ADDR, tcp_port), timeout=10) as c:
            tcp6_reply = c.recv(100).decode()
            tcp6_client = c.getsockname()[:2]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind((HOST_ADDR, 0))
            u.settimeout(10)
            u.sendto(b"x", (HOST_ADDR, tcp_port))
            udp_reply = u.recv(100).decode()
            udp_client = u.getsockname()
        (tmp_path / "finish").touch()
        out, err = proc.communicate(timeout=60)
    finally:
        kill_session(proc)
        seen.close()
        silent.close()
        answering.close()
    assert proc.returncode == 0, f"{out}\n{err}"
    # Outbound from the inner namespace, routed with its own source address to slirpy.
    assert inner["tcp"] == f"seen={HOST_ADDR}" and inner["udp"] == f"seen={HOST_ADDR}", inner
    assert inner["ping"] == 0 and inner["ping6"] == 0, inner
    assert inner["tcp6"] == f"seen={HOST6_ADDR}", inner
    # Published ports reach the inner server from the real client address and port.
    assert tcp_reply == "peer=%s:%d" % tcp_client and udp_reply == "peer=%s:%d" % udp_client
    assert tcp6_reply == "peer=%s:%d" % tcp6_client, (tcp6_reply, tcp6_client)
    # Names per querier; NXDOMAIN for a foreign network's names; others upstream.
    assert inner["db"] == {"status": "NOERROR", "answers": [PEER]}, inner
    assert inner["db6"] == {"status": "NOERROR", "answers": ["fd89:0:0:5::3"]}, inner
    assert inner["db6.over6"] == {"status": "NOERROR", "answers": ["fd89:0:0:5::6"]}, inner
    assert inner["db.back"] == {"status": "NOERROR", "answers": [PEER]}, inner
    assert inner["web.front"]["status"] == "NXDOMAIN", inner
    assert own["web.front"] == {"status": "NOERROR", "answers": ["10.0.2.100"]}, own
    assert own["db.back"]["status"] == "NXDOMAIN", own
    assert inner["a.test"] == {"status": "NOERROR", "answers": ["192.0.2.10"]}, inner
    # The same over TCP (the first nameserver refuses TCP: the second answers).
    assert inner["dns_tcp"] == [{"status": "NOERROR", "answers": [PEER]}, {"status": "NXDOMAIN", "answers": []},
                            {"status": "NOERROR", "answers": ["192.0.2.10"]}], inner
    assert answering.seen("tcp", "a.test") == 1 and answering.seen("tcp", "db") == 0
    assert silent.queries >= 1 and answering.seen("udp", "a.test") >= 1
    assert answering.seen("udp", "db") == answering.seen("udp", "web.front") == 0
    c = json.loads(stats.read_text())["counters"]
    assert c["dns.upstream.fallback"] >= 1 and c["dns.names.answered"] == 6, c
    assert c["dns.upstream.tcp.connect_failed"] == 1 and c["dns.names.nxdomain"] == 3 and "ipv4.rx.drop.bad_src" not in c, c


def test_a_refusing_first_nameserver_is_skipped_at_once_and_a_lone_one_still_refuses(tmp_path):
    """Nothing listens on the first nameserver: its ICMP port unreachable (read from the error
    queue, with the query it is about) sends the query to the second at once. When every
    nameserver refuses, the guest hears "connection refused", as from a single upstream."""
    answering = DnsServer(HOST_ADDR)
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {HOST_ADDR2}\nnameserver {HOST_ADDR}\n")
    dead = tmp_path / "dead.conf"
    dead.write_text(f"nameserver {HOST_ADDR2}\nnameserver 198.51.100.1\n")
    stats = tmp_path / "stats.json"
    try:
        res = subprocess.run(
            slirpy_argv("--resolv-conf", str(resolv), "--stats-file", str(stats))
            + ["sh", "-c", f"dig +short +time=5 +tries=1 a.test; cp {dead} {resolv}; "
                           f"dig +time=5 +tries=1 which.test; echo RC=$?"],
            capture_output=True, text=True, timeout=60, cwd=REPO)
    finally:
        answering.close()
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith("192.0.2.10\n"), res.stdout + stats.read_text()
    assert "RC=9" in res.stdout and "refused" in res.stdout.lower(), res.stdout
    c = json.loads(stats.read_text())["counters"]
    assert c["dns.upstream.refused"] >= 2 and c["dns.upstream.fallback"] >= 1, c
    assert c["dns.upstream.timeout"] >= 1 and answering.seen("udp", "a.test") == 1, c
