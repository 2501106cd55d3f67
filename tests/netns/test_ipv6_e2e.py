"""IPv6 end to end through `slirpy run` (issue 16): the guest kernel's IPv6 on tap0
(fd00::100/64, default route via fd00::2), real peers on the outer test namespace's lo
(2001:db8::1 and 2001:db8:1::1, see helpers/testns), real tools (ping -6, curl -6, dig,
iperf3 -6, ncat -6), byte-exact sha256 checks on both ends.

TCP runs the matrix MTU 1500/65520 x offload on/off with 64 MiB each way plus the edge sizes
around the IPv6 MSS (MTU - 60); the rest runs where the data path differs. Counters come from
--stats-file where they prove a path was taken (the stack answered, or the host proxied).
Published ports, a host without IPv6, slirp4netns mode and hostile frames have their own
test_ipv6_*_e2e.py files.
"""

from __future__ import annotations

import contextlib
import errno
import http.server
import json
import re
import shlex
import socket
import socketserver
import subprocess
import sys
import threading
import time

import pytest

from tests.netns.test_dns_e2e import DnsServer
from tests.netns.util import (DNS_ADDR, DNS6_ADDR, GATEWAY6_ADDR, GUEST_ADDR, GUEST6_ADDR,
                              HOST_ADDR, HOST6_ADDR, HOST6_ADDR2, expected, guest_argv,
                              pattern, read_counters, run_guest, run_slirpy, unused_port)

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_stray_processes")]

CONFIGS = [
    pytest.param(("--mtu", "1500"), id="mtu1500"),
    pytest.param(("--mtu", "65520"), id="mtu65520"),
    pytest.param(("--mtu", "1500", "--no-offload"), id="mtu1500-nooffload"),
    pytest.param(("--mtu", "65520", "--no-offload"), id="mtu65520-nooffload"),
]
MiB = 1 << 20
BIG = 64 * MiB
UNROUTED6 = "2001:db8:ffff::1"      # in 2001:db8::/32 but not on lo: testns has no route there


def mtu_of(options) -> int:
    return int(options[options.index("--mtu") + 1])


def sh(*lines: str) -> list[str]:
    return ["sh", "-c", "\n".join(lines)]


def guest_ops_cmd(ops: list[dict]) -> str:
    """Shell words running util.py's guest side (prints one JSON line starting with '[')."""
    return shlex.join(guest_argv(ops))


def last_json_list(stdout: str) -> list:
    lines = [l for l in stdout.splitlines() if l.startswith("[")]
    assert lines, stdout
    return json.loads(lines[-1])


# --------------------------------------------------------------------------- the test namespace

def test_testns_gives_lo_ipv6_test_addresses_and_icmpv6_echo_sockets():
    """helpers/testns: 2001:db8::1 and 2001:db8:1::1 are local, and unprivileged ICMPv6 echo
    sockets work (ping_group_range covers them): what slirpy's ping -6 proxy needs."""
    for addr in (HOST6_ADDR, HOST6_ADDR2, "::1"):
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind((addr, 0))
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_ICMPV6) as s:
        s.settimeout(5)
        s.sendto(b"\x80\x00\x00\x00\x00\x00\x00\x07ping6", (HOST6_ADDR, 0))
        reply = s.recv(100)
    assert reply[0] == 129 and reply[8:] == b"ping6", reply      # an echo reply, our data


# --------------------------------------------------------------------------- configuration

@pytest.mark.parametrize("options", CONFIGS[:2])
def test_guest_has_fd00_100_and_a_default_route_via_fd00_2(options):
    res = run_slirpy(options, sh("grep '^nameserver' /etc/resolv.conf",
                                 guest_ops_cmd([{"op": "if6info"}, {"op": "ifinfo"}])), timeout=60)
    assert res.returncode == 0, res.describe()
    info6, info4 = last_json_list(res.stdout)
    assert info4["addr"] == GUEST_ADDR and info4["mtu"] == mtu_of(options)
    ours = [a for a in info6["addrs"] if a["addr"] == GUEST6_ADDR]
    assert ours == [{"addr": GUEST6_ADDR, "plen": 64, "scope": 0, "tentative": False}], info6
    routes = {r["dst"]: r["via"] for r in info6["routes"]}
    assert routes.get("::/0") == GATEWAY6_ADDR, info6
    assert routes.get("fd00::/64") == "::", info6
    # the sandbox's resolv.conf lists the IPv6 DNS address after the IPv4 one
    servers = re.findall(r"^nameserver (\S+)", res.stdout, re.M)
    assert servers == [DNS_ADDR, DNS6_ADDR], res.describe()


# --------------------------------------------------------------------------- TCP

@pytest.mark.parametrize("options", CONFIGS)
def test_tcp_both_ways_byte_exact(options, host_server, tmp_path):
    """Edge sizes around the IPv6 MSS and 64 MiB, guest->host and host->guest."""
    mss = mtu_of(options) - 60
    sizes = [0, 1, mss - 1, mss, mss + 1]
    sink = host_server("sink", HOST6_ADDR)
    sources = [host_server("source", HOST6_ADDR, size=n, seed=n + 7) for n in sizes]
    big = host_server("source", HOST6_ADDR, size=BIG + 3, seed=61)
    stats = tmp_path / "stats.json"
    ops = ([{"op": "upload", "host": HOST6_ADDR, "port": sink.port, "size": n, "seed": n} for n in sizes]
           + [{"op": "upload", "host": HOST6_ADDR, "port": sink.port, "size": BIG + 1, "seed": 60}]
           + [{"op": "download", "host": HOST6_ADDR, "port": s.port} for s in sources]
           + [{"op": "download", "host": HOST6_ADDR, "port": big.port}])
    results = run_guest((*options, "--stats-file", str(stats)), ops, timeout=240)
    ups, downs = results[:len(sizes) + 1], results[len(sizes) + 1:]
    for n, seed, r in zip([*sizes, BIG + 1], [*sizes, 60], ups):
        assert r.get("server") == {"len": n, "sha": expected(n, seed)}, (n, r)
    for n, r in zip(sizes, downs):
        assert r == {"len": n, "sha": expected(n, n + 7)}, (n, r)
    assert downs[-1] == {"len": BIG + 3, "sha": expected(BIG + 3, 61)}
    conns = sink.wait_results(len(sizes) + 1)
    assert all(c.error is None and c.peer[0] == HOST6_ADDR for c in conns), conns
    c = read_counters(stats)
    assert c["tcp.flows.opened"] == 2 * len(sizes) + 2, c
    # at MTU 1500 with offloads, host->guest data went out as GSO_TCPV6 super-frames (at 65520
    # a super-frame is rarely over one MSS); without offloads, never
    if "--no-offload" in options:
        assert c.get("tcp.tx.gso_frames", 0) == 0, c
    elif mtu_of(options) == 1500:
        assert c.get("tcp.tx.gso_frames", 0) > 0, c


@pytest.mark.long
@pytest.mark.parametrize("options", CONFIGS[:3])
def test_tcp_1gib_both_ways(options, host_server):
    """--long: 1 GiB each way over IPv6, byte-exact."""
    size = 1 << 30
    sink = host_server("sink", HOST6_ADDR)
    source = host_server("source", HOST6_ADDR, size=size + 1, seed=91)
    up, down = run_guest(options, [
        {"op": "upload", "host": HOST6_ADDR, "port": sink.port, "size": size + 3, "seed": 90},
        {"op": "download", "host": HOST6_ADDR, "port": source.port}], timeout=900)
    assert up.get("server") == {"len": size + 3, "sha": expected(size + 3, 90)}, up
    assert down == {"len": size + 1, "sha": expected(size + 1, 91)}, down


def test_refused_port_fails_at_once():
    """A closed IPv6 host port must give the guest ECONNREFUSED (a RST), not a timeout."""
    with unused_port(HOST6_ADDR) as closed:
        (r,) = run_guest((), [{"op": "connect", "host": HOST6_ADDR,
                               "port": closed.getsockname()[1], "timeout": 30}])
    assert r["error"] == errno.errorcode[errno.ECONNREFUSED], r


def test_second_host_address(host_server):
    """IPv6 flows go to whatever address the guest dials, not to one fixed host."""
    a = host_server("source", HOST6_ADDR, size=MiB, seed=1)
    b = host_server("source", HOST6_ADDR2, size=MiB, seed=2)
    results = run_guest((), [{"op": "download", "host": HOST6_ADDR, "port": a.port},
                             {"op": "download", "host": HOST6_ADDR2, "port": b.port}])
    assert results == [{"len": MiB, "sha": expected(MiB, 1)}, {"len": MiB, "sha": expected(MiB, 2)}]
    assert a.wait_results(1)[0].peer[0] == HOST6_ADDR
    assert b.wait_results(1)[0].peer[0] == HOST6_ADDR2


def test_outbound_addr6_binds_the_ipv6_host_sockets(host_server):
    """--outbound-addr6: slirpy's IPv6 host sockets leave from the chosen address."""
    srv = host_server("source", HOST6_ADDR, size=1000, seed=3)
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as u:
        u.bind((HOST6_ADDR, 0))
        u.settimeout(60)
        seen = []

        def answer():
            data, peer = u.recvfrom(100)
            seen.append(peer[0])
            u.sendto(data, peer)

        t = threading.Thread(target=answer, daemon=True)
        t.start()
        down, udp = run_guest(("--outbound-addr6", HOST6_ADDR2), [
            {"op": "download", "host": HOST6_ADDR, "port": srv.port},
            {"op": "udp_echo", "host": HOST6_ADDR, "port": u.getsockname()[1], "sizes": [10]}])
        t.join(10)
    assert down == {"len": 1000, "sha": expected(1000, 3)}
    assert udp["echoed"] == [True], udp
    assert srv.wait_results(1)[0].peer[0] == HOST6_ADDR2
    assert seen == [HOST6_ADDR2]


# --------------------------------------------------------------------------- UDP

class UdpEchoServer6:
    def __init__(self, addr=HOST6_ADDR):
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((addr, 0))
        self.port = self.sock.getsockname()[1]
        self.peers: set = set()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while True:
            try:
                data, peer = self.sock.recvfrom(70000)
            except OSError:
                return
            if peer is None:        # close() ran while recvfrom was waiting: the fd is gone
                return
            self.peers.add(peer[:2])
            try:
                self.sock.sendto(data, peer)
            except OSError:
                pass

    def close(self):
        self.sock.close()


@pytest.fixture
def udp6_echo():
    srv = UdpEchoServer6()
    yield srv
    srv.close()


@pytest.mark.parametrize("options", CONFIGS[:3])
def test_udp_both_ways_and_port_unreachable(options, udp6_echo, tmp_path):
    """Datagrams of 1, 1400 and the largest unfragmented size (MTU - 48) are echoed
    byte-exact; a closed port answers ECONNREFUSED (the host's ICMPv6 port unreachable,
    relayed by slirpy)."""
    closed = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    closed.bind((HOST6_ADDR, 0))
    port = closed.getsockname()[1]
    closed.close()
    sizes = [1, 1400, mtu_of(options) - 48]
    stats = tmp_path / "stats.json"
    echo, refused = run_guest((*options, "--stats-file", str(stats)), [
        {"op": "udp_echo", "host": HOST6_ADDR, "port": udp6_echo.port, "sizes": sizes},
        {"op": "udp_refused", "host": HOST6_ADDR, "port": port}])
    assert echo["echoed"] == [True, True, True], (sizes, echo)
    assert echo["local"] == GUEST6_ADDR, echo
    assert len(udp6_echo.peers) == 1 and next(iter(udp6_echo.peers))[0] == HOST6_ADDR
    assert refused == {"outcome": "ECONNREFUSED"}, refused
    c = read_counters(stats)
    assert c["udp.flows.opened"] == 2 and c["udp.host.error"] >= 1, c


# --------------------------------------------------------------------------- ping -6

def test_ping6_gateway_dns_and_host(tmp_path):
    stats = tmp_path / "stats.json"
    script = sh(f"ping -6 -c 3 -i 0.2 -W 2 {HOST6_ADDR}; echo rc=$?",
                f"ping -6 -c 2 -i 0.2 -W 2 {GATEWAY6_ADDR}; echo rc=$?",
                f"ping -6 -c 2 -i 0.2 -W 2 {DNS6_ADDR}; echo rc=$?",
                f"ping -6 -c 1 -W 5 {UNROUTED6}; echo rc=$?")
    res = run_slirpy(("--mtu", "1500", "--stats-file", str(stats)), script, timeout=60)
    assert res.returncode == 0, res.describe()
    host, rc_host, gw, rc_gw, dns, rc_dns, unrouted, rc_unrouted, _ = re.split(r"rc=(\d+)\n", res.stdout)
    assert (rc_host, rc_gw, rc_dns) == ("0", "0", "0"), res.describe()
    # iputils ping matches replies on its identifier and sequence: wrong ones are not printed
    seqs = re.findall(rf"bytes from {re.escape(HOST6_ADDR)}: icmp_seq=(\d+)", host)
    assert sorted(map(int, seqs)) == [1, 2, 3] and "3 received" in host, res.describe()
    assert "2 received" in gw and f"from {GATEWAY6_ADDR}:" in gw, res.describe()
    assert "2 received" in dns and f"from {DNS6_ADDR}:" in dns, res.describe()
    # no route on the host: the guest is told so (ICMPv6 destination unreachable), no reply
    assert rc_unrouted == "1" and "bytes from" not in unrouted, res.describe()
    assert "Destination unreachable" in unrouted, res.describe()
    c = read_counters(stats)
    assert c.get("icmpv6.tx.echo_reply.proxied") == 3, c
    assert c.get("icmpv6.tx.echo_reply") == 4, c           # gateway and DNS, answered by the stack


# --------------------------------------------------------------------------- curl -6

class Http6Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True


def http6_server(size: int, seed: int):
    """GET /blob -> `size` pattern bytes; records each client's address."""
    clients: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            clients.append(self.client_address[0])
            self.send_response(200 if self.path == "/blob" else 404)
            self.send_header("Content-Length", str(size if self.path == "/blob" else 0))
            self.end_headers()
            if self.path == "/blob":
                for chunk in pattern(size, seed):
                    self.wfile.write(chunk)

        def log_message(self, *args):
            pass

    srv = Http6Server((HOST6_ADDR, 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, clients


def test_curl6_from_a_host_http_server():
    size = 3 * MiB + 17
    srv, clients = http6_server(size, 42)
    try:
        url = f"http://[{HOST6_ADDR}]:{srv.server_address[1]}/blob"
        res = run_slirpy((), sh(f"curl -6 -g -sS --max-time 60 -o - {url} | sha256sum",
                                f"curl -6 -g -sS --max-time 60 -o /dev/null -w 'code=%{{http_code}} "
                                f"remote=%{{remote_ip}} local=%{{local_ip}}\\n' {url}"), timeout=90)
    finally:
        srv.shutdown()
        srv.server_close()
    assert res.returncode == 0, res.describe()
    assert res.stdout.split()[0] == expected(size, 42), res.describe()
    assert f"code=200 remote={HOST6_ADDR} local={GUEST6_ADDR}" in res.stdout, res.describe()
    assert clients == [HOST6_ADDR, HOST6_ADDR], clients


# --------------------------------------------------------------------------- DNS at fd00::3

@contextlib.contextmanager
def ipv6_socketservers():
    """DnsServer (test_dns_e2e) builds socketserver.ThreadingUDP/TCPServer; for as long as
    this lasts, those are created as AF_INET6 sockets."""
    classes = (socketserver.ThreadingUDPServer, socketserver.ThreadingTCPServer)
    saved = [c.address_family for c in classes]
    for c in classes:
        c.address_family = socket.AF_INET6
    try:
        yield
    finally:
        for c, fam in zip(classes, saved):
            c.address_family = fam


@pytest.fixture
def dns_servers():
    servers: list[DnsServer] = []

    def make(addr, port=53, ident="192.0.2.1"):
        if ":" in addr:
            with ipv6_socketservers():
                srv = DnsServer(addr, port, ident=ident)
        else:
            srv = DnsServer(addr, port, ident=ident)
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.close()


def test_dig_aaaa_through_fd00_3_over_udp_and_tcp(dns_servers, tmp_path):
    """Queries to fd00::3 (IPv6 from the guest) reach the host's resolver (IPv4 here), AAAA
    answers come back, over UDP and TCP."""
    srv = dns_servers(HOST_ADDR)
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {HOST_ADDR}\nsearch test\n")
    stats = tmp_path / "stats.json"
    res = run_slirpy(("--resolv-conf", str(resolv), "--stats-file", str(stats)), sh(
        f"echo AAAA=$(dig +short +time=3 @{DNS6_ADDR} a.test AAAA)",
        f"echo A=$(dig +short +time=3 @{DNS6_ADDR} a.test A)",
        f"echo TCPAAAA=$(dig +short +tcp +time=3 @{DNS6_ADDR} a.test AAAA)",
        f"echo BIG=$(dig +short +time=3 +noedns @{DNS6_ADDR} big.test A | wc -l)"), timeout=60)
    assert res.returncode == 0, res.describe()
    assert "AAAA=2001:db8::10\n" in res.stdout, res.describe()
    assert "A=192.0.2.10\n" in res.stdout, res.describe()
    assert "TCPAAAA=2001:db8::10\n" in res.stdout, res.describe()
    assert "BIG=40\n" in res.stdout, res.describe()          # truncated over UDP, retried over TCP
    assert srv.seen("udp", "a.test") >= 2 and srv.seen("tcp", "a.test") >= 1, srv.queries
    assert srv.seen("tcp", "big.test") >= 1, srv.queries
    c = read_counters(stats)
    assert c["dns.flows.opened"] >= 3 and c["dns.tcp.flows.opened"] >= 2, c


def test_dns_forwarded_to_an_ipv6_upstream(dns_servers, tmp_path):
    """--dns-upstream [2001:db8::1]:5353: both DNS addresses (10.0.2.3, fd00::3) forward there,
    UDP and TCP."""
    dns_servers(HOST6_ADDR, 5353, ident="192.0.2.66")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {HOST_ADDR}\n")          # nothing listens there: not used
    res = run_slirpy(("--resolv-conf", str(resolv), "--dns-upstream", f"[{HOST6_ADDR}]:5353"), sh(
        *(f"echo {tag}=$(dig +short +time=3 {flag} @{addr} which.test)"
          for tag, flag, addr in (("U4", "", DNS_ADDR), ("T4", "+tcp", DNS_ADDR),
                                  ("U6", "", DNS6_ADDR), ("T6", "+tcp", DNS6_ADDR)))), timeout=60)
    assert res.returncode == 0, res.describe()
    for tag in ("U4", "T4", "U6", "T6"):
        assert f"{tag}=192.0.2.66\n" in res.stdout, res.describe()


# --------------------------------------------------------------------------- host loopback

class TestHostLoopbackPolicy:
    """fd00::2:PORT reaches the host's [::1]:PORT only with --allow-host-loopback; no other
    address the guest can dial reaches loopback."""

    @staticmethod
    def others(port):
        return [{"op": "connect", "host": h, "port": port, "timeout": 3}
                for h in (DNS6_ADDR, HOST6_ADDR)]

    def test_gateway6_unreachable_by_default(self, host_server):
        srv = host_server("sink", "::1")
        first, *rest = run_guest((), [
            {"op": "connect", "host": GATEWAY6_ADDR, "port": srv.port, "timeout": 30},
            *self.others(srv.port)])
        assert first["error"] == errno.errorcode[errno.ENETUNREACH], first   # as slirp4netns
        assert not any(r["ok"] for r in rest), rest
        assert srv.accepted == 0

    def test_gateway6_reaches_ipv6_loopback_when_allowed(self, host_server):
        srv = host_server("sink", "::1")
        v4_only = host_server("sink", "127.0.0.1")
        while v4_only.port == srv.port:          # a port number only 127.0.0.1 listens on
            v4_only = host_server("sink", "127.0.0.1")
        *rest, v4, up = run_guest(("--allow-host-loopback",), [
            *self.others(srv.port),
            {"op": "connect", "host": GATEWAY6_ADDR, "port": v4_only.port, "timeout": 10},
            {"op": "upload", "host": GATEWAY6_ADDR, "port": srv.port, "size": 5 * MiB + 1, "seed": 9}])
        assert not any(r["ok"] for r in rest), rest
        assert up.get("server") == {"len": 5 * MiB + 1, "sha": expected(5 * MiB + 1, 9)}, up
        (c,) = srv.wait_results(1)
        assert c.peer[0] == "::1"
        assert srv.accepted == 1
        # fd00::2 maps to ::1, not to 127.0.0.1
        assert v4["error"] == errno.errorcode[errno.ECONNREFUSED], v4
        assert v4_only.accepted == 0


# --------------------------------------------------------------------------- real tools

def listening(port: int) -> bool:
    """Is a TCP socket of this namespace listening on `port` (IPv6)? From /proc/net/tcp6,
    without connecting (a probe connection would count as an iperf3 client)."""
    with open("/proc/net/tcp6") as f:
        next(f)
        return any(line.split()[3] == "0A" and int(line.split()[1].rsplit(":", 1)[1], 16) == port
                   for line in f)


def test_iperf3_6_both_directions(tmp_path):
    """iperf3 -6 -n 32M up and down (-R) between fd00::100 and 2001:db8::1."""
    with socket.socket(socket.AF_INET6) as s:
        s.bind((HOST6_ADDR, 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(["iperf3", "-s", "-B", HOST6_ADDR, "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not listening(port):
            assert server.poll() is None and time.monotonic() < deadline, "iperf3 -s did not start"
            time.sleep(0.02)
        base = f"iperf3 -6 -c {HOST6_ADDR} -p {port} -n 32M -J"
        res = run_slirpy((), sh(f"{base} > {tmp_path}/up.json", f"{base} -R > {tmp_path}/down.json"),
                         timeout=120)
    finally:
        server.terminate()
        server.wait(10)
    assert res.returncode == 0, res.describe()
    for name in ("up", "down"):
        data = json.loads((tmp_path / f"{name}.json").read_text())
        assert "error" not in data, (name, data.get("error"))
        end = data["end"]
        # the sender wrote all 32 MiB; the receiver's count stops when the client announces the
        # end (data still queued then is not counted: iperf3's way), so it is checked as > 0
        # and <= what was sent; byte-exact delivery is what the sha256 transfers check
        sent, received = end["sum_sent"]["bytes"], end["sum_received"]["bytes"]
        assert sent == 32 * MiB and 0 < received <= sent, (name, sent, received)
        start = data["start"]["connected"][0]
        assert (start["local_host"], start["remote_host"]) == (GUEST6_ADDR, HOST6_ADDR), start


def test_ncat6_both_directions(host_server, tmp_path):
    """ncat -6 uploads a file to a sink (which replies with its sha256) and downloads from a
    source."""
    size = 8 * MiB + 3
    data = tmp_path / "upload.bin"
    with open(data, "wb") as f:
        for chunk in pattern(size, 31):
            f.write(chunk)
    sink = host_server("sink", HOST6_ADDR)
    source = host_server("source", HOST6_ADDR, size=size, seed=32)
    res = run_slirpy((), sh(f"ncat -6 {HOST6_ADDR} {sink.port} < {data}; echo rc=$?",
                            f"ncat -6 --recv-only {HOST6_ADDR} {source.port} | sha256sum"), timeout=90)
    assert res.returncode == 0, res.describe()
    reply, rest = res.stdout.split("rc=", 1)
    assert json.loads(reply) == {"len": size, "sha": expected(size, 31)}, res.describe()
    assert rest.startswith("0\n") and rest.split()[1] == expected(size, 32), res.describe()
    (c,) = sink.wait_results(1)
    assert (c.received, c.sha, c.peer[0]) == (size, expected(size, 31), HOST6_ADDR)
