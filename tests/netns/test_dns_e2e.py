"""DNS through slirpy's forwarder at 10.0.2.3: a small authoritative server (standard library
only) on 203.0.113.1:53 in the outer test namespace, queried from inside the sandbox with
`dig` and with glibc's resolver (Python's getaddrinfo), over UDP and TCP."""

from __future__ import annotations

import json
import socket
import socketserver
import struct
import sys
import threading

import pytest

from tests.netns.util import DNS_ADDR, HOST_ADDR, HOST_ADDR2, run_slirpy

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_stray_processes")]

A, AAAA, TXT = 1, 28, 16
BIG_A_COUNT = 40                     # 40 A records: 40 * 16 + question > 512 bytes
BIG_TXT = [f"chunk-{i:02d}-".ljust(60, "x") for i in range(12)]


def records(name: str, qtype: int, ident: bytes) -> list[tuple[int, bytes]]:
    """The zone: (type, rdata) answers for a query."""
    if name == "a.test" and qtype == A:
        return [(A, socket.inet_aton("192.0.2.10"))]
    if name == "a.test" and qtype == AAAA:
        return [(AAAA, socket.inet_pton(socket.AF_INET6, "2001:db8::10"))]
    if name == "txt.test" and qtype == TXT:
        return [(TXT, b"\x0chello slirpy")]
    if name == "bigtxt.test" and qtype == TXT:
        return [(TXT, b"".join(bytes([len(s)]) + s.encode() for s in BIG_TXT))]
    if name == "big.test" and qtype == A:
        return [(A, bytes([192, 0, 2, 100 + i])) for i in range(BIG_A_COUNT)]
    if name == "which.test" and qtype == A:
        return [(A, ident)]
    return []


def parse_question(msg: bytes) -> tuple[str, int, int]:
    """(name, qtype, end offset of the question)."""
    labels, off = [], 12
    while msg[off]:
        n = msg[off]
        labels.append(msg[off + 1:off + 1 + n].decode())
        off += 1 + n
    qtype = struct.unpack_from("!H", msg, off + 1)[0]
    return ".".join(labels).lower(), qtype, off + 5


def answer(query: bytes, ident: bytes, udp: bool) -> bytes:
    name, qtype, qend = parse_question(query)
    answers = records(name, qtype, ident)
    rcode = 0 if answers or name.endswith(".test") else 3
    body = b"".join(b"\xc0\x0c" + struct.pack("!HHIH", t, 1, 60, len(rd)) + rd for t, rd in answers)
    flags = 0x8400 | (query[2] & 0x01) << 8 | rcode        # QR, AA, RD copied
    if udp and 12 + (qend - 12) + len(body) > 512:
        # Classic DNS over UDP: does not fit in 512 bytes -> empty answer with TC set.
        return query[:2] + struct.pack("!HHHHH", flags | 0x0200, 1, 0, 0, 0) + query[12:qend]
    return query[:2] + struct.pack("!HHHHH", flags, 1, len(answers), 0, 0) + query[12:qend] + body


class DnsServer:
    """UDP and TCP DNS on addr:port; `ident` is the address which.test resolves to."""

    def __init__(self, addr: str, port: int = 53, ident: str = "192.0.2.1"):
        self.ident = socket.inet_aton(ident)
        self.queries: list[tuple[str, str, int]] = []        # (transport, name, qtype)
        self.lock = threading.Lock()
        outer = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self):
                data, sock = self.request
                try:
                    name, qtype, _ = parse_question(data)
                    with outer.lock:
                        outer.queries.append(("udp", name, qtype))
                    sock.sendto(answer(data, outer.ident, True), self.client_address)
                except (IndexError, struct.error, UnicodeDecodeError):
                    pass

        class Tcp(socketserver.StreamRequestHandler):
            def handle(self):
                while True:
                    head = self.rfile.read(2)
                    if len(head) < 2:
                        return
                    data = self.rfile.read(struct.unpack("!H", head)[0])
                    name, qtype, _ = parse_question(data)
                    with outer.lock:
                        outer.queries.append(("tcp", name, qtype))
                    reply = answer(data, outer.ident, False)
                    self.wfile.write(struct.pack("!H", len(reply)) + reply)

        socketserver.ThreadingUDPServer.allow_reuse_address = True
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.udp = socketserver.ThreadingUDPServer((addr, port), Udp)
        self.tcp = socketserver.ThreadingTCPServer((addr, port), Tcp)
        self.udp.daemon_threads = self.tcp.daemon_threads = True
        for srv in (self.udp, self.tcp):
            threading.Thread(target=srv.serve_forever, daemon=True).start()

    def seen(self, transport: str, name: str) -> int:
        with self.lock:
            return sum(1 for t, n, _ in self.queries if t == transport and n == name)

    def close(self):
        for srv in (self.udp, self.tcp):
            srv.shutdown()
            srv.server_close()


@pytest.fixture
def dns_server():
    servers = []

    def make(*args, **kw):
        srv = DnsServer(*args, **kw)
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.close()


@pytest.fixture
def resolv(tmp_path):
    path = tmp_path / "resolv.conf"
    path.write_text(f"# test host resolv.conf\nnameserver {HOST_ADDR}\nsearch test\noptions ndots:1 edns0\n")
    return path


GETADDRINFO = r'''
import json, socket, sys
out = {}
for name in sys.argv[1:]:
    try:
        out[name] = sorted({ai[4][0] for ai in socket.getaddrinfo(name, 80, proto=socket.IPPROTO_TCP)})
    except socket.gaierror as e:
        out[name] = "error: %s" % e
print("GAI " + json.dumps(out), flush=True)
'''


def sh(*lines: str) -> list[str]:
    return ["sh", "-c", "; ".join(lines)]


def test_dig_and_glibc_through_the_forwarder(dns_server, resolv, tmp_path):
    srv = dns_server(HOST_ADDR)
    stats = tmp_path / "stats.json"
    res = run_slirpy(
        ("--mtu", "1500", "--resolv-conf", str(resolv), "--stats-file", str(stats)),
        sh("cat /etc/resolv.conf",
           "echo A=$(dig +short +time=3 a.test A)",
           "echo AAAA=$(dig +short +time=3 a.test AAAA)",
           "echo TXT=$(dig +short +time=3 txt.test TXT)",
           "echo BIGTXT=$(dig +short +time=3 +noedns bigtxt.test TXT | tr -d ' \"\\n')",
           "echo TCPA=$(dig +short +tcp +time=3 a.test A)",
           "f=$(mktemp); dig +time=3 +noedns big.test A > \"$f\" 2>&1; echo BIGRC=$?; cat \"$f\"; rm -f \"$f\"",
           f"{sys.executable} -c '{GETADDRINFO}' a.test big.test a nosuch.test"),
        timeout=90)
    assert res.returncode == 0, res.describe()
    out = res.stdout
    conf = [l for l in out.splitlines() if l and not l.startswith("#")][:4]
    # IPv6 is on by default: fd00::3 follows 10.0.2.3
    assert conf == [f"nameserver {DNS_ADDR}", "nameserver fd00::3", "search test",
                    "options ndots:1 edns0"], res.describe()
    assert "A=192.0.2.10\n" in out, res.describe()
    assert "AAAA=2001:db8::10\n" in out, res.describe()
    assert 'TXT="hello slirpy"\n' in out, res.describe()
    assert "BIGTXT=" + "".join(BIG_TXT) + "\n" in out, res.describe()
    assert "TCPA=192.0.2.10\n" in out, res.describe()
    # TC over UDP -> dig retried over TCP and got all the records.
    assert "Truncated, retrying in TCP mode" in out, res.describe()
    assert "BIGRC=0" in out and f"ANSWER: {BIG_A_COUNT}," in out, res.describe()
    gai = json.loads([l for l in out.splitlines() if l.startswith("GAI ")][-1][4:])
    assert gai["a.test"] == ["192.0.2.10", "2001:db8::10"], gai
    assert gai["big.test"] == sorted(f"192.0.2.{100 + i}" for i in range(BIG_A_COUNT)), gai
    assert gai["a"] == ["192.0.2.10", "2001:db8::10"], gai          # via "search test"
    assert gai["nosuch.test"].startswith("error"), gai
    assert srv.seen("udp", "big.test") >= 1 and srv.seen("tcp", "big.test") >= 1
    assert srv.seen("tcp", "bigtxt.test") >= 1
    c = json.loads(stats.read_text())["counters"]
    assert c["dns.flows.opened"] >= 7 and c["dns.tcp.flows.opened"] >= 3


def test_resolv_conf_change_is_picked_up_without_restart(dns_server, resolv):
    dns_server(HOST_ADDR, ident="192.0.2.1")
    dns_server(HOST_ADDR2, ident="192.0.2.2")
    # The guest sees the same file (same filesystem) and replaces it by rename, the way
    # NetworkManager/resolvconf do, between two queries.
    res = run_slirpy(
        ("--resolv-conf", str(resolv)),
        sh("echo FIRST=$(dig +short +time=3 which.test)",
           f"printf 'nameserver {HOST_ADDR2}\\n' > {resolv}.new && mv {resolv}.new {resolv}",
           "echo SECOND=$(dig +short +time=3 which.test)",
           "echo TCP=$(dig +short +tcp +time=3 which.test)"),
        timeout=60)
    assert res.returncode == 0, res.describe()
    assert "FIRST=192.0.2.1\n" in res.stdout, res.describe()
    assert "SECOND=192.0.2.2\n" in res.stdout, res.describe()
    assert "TCP=192.0.2.2\n" in res.stdout, res.describe()


def test_dns_upstream_override_and_loopback_upstream(dns_server, resolv):
    dns_server("127.0.0.53", port=5353, ident="192.0.2.53")
    res = run_slirpy(("--resolv-conf", str(resolv), "--dns-upstream", "127.0.0.53:5353"),
                     sh("echo UDP=$(dig +short +time=3 which.test)",
                        "echo TCP=$(dig +short +tcp +time=3 which.test)"), timeout=60)
    assert res.returncode == 0, res.describe()
    assert "UDP=192.0.2.53\n" in res.stdout and "TCP=192.0.2.53\n" in res.stdout, res.describe()


def test_disable_dns_refuses_quickly(dns_server, resolv, tmp_path):
    srv = dns_server(HOST_ADDR)
    stats = tmp_path / "stats.json"
    res = run_slirpy(("--resolv-conf", str(resolv), "--disable-dns", "--stats-file", str(stats)),
                     sh(f"dig +time=5 +tries=1 @{DNS_ADDR} a.test; echo UDPRC=$?",
                        f"dig +tcp +time=5 +tries=1 @{DNS_ADDR} a.test; echo TCPRC=$?"), timeout=60)
    assert res.returncode == 0, res.describe()
    assert "UDPRC=9" in res.stdout and "TCPRC=9" in res.stdout, res.describe()
    assert "connection refused" in res.stdout.lower(), res.describe()
    assert srv.queries == []
    c = json.loads(stats.read_text())["counters"]
    assert c["udp.rx.drop.dns_disabled"] >= 1 and c["tcp.rx.drop.local_network"] >= 1


GARBAGE = r'''
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((sys.argv[1], 53))
s.send(b"\x12\x34\x01")                                        # shorter than a DNS header
s.send(b"\x12\x34\x81\x80" + bytes(8) + b"\x01a\x04test\x00\x00\x01\x00\x01")   # a response (QR=1)
s.settimeout(1.0)
try:
    print("GOT", s.recv(1000))
except socket.timeout:
    print("NOTHING")
'''


def test_garbage_dns_is_dropped_and_a_silent_upstream_times_out(dns_server, resolv, tmp_path):
    srv = dns_server(HOST_ADDR)
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)       # bound, never answers
    silent.bind((HOST_ADDR2, 0))
    stats = tmp_path / "stats.json"
    try:
        res = run_slirpy(("--resolv-conf", str(resolv), "--stats-file", str(stats)),
                         ["sh", "-c", f"{sys.executable} -c '{GARBAGE}' {DNS_ADDR}; "
                          f"dig +time=1 +tries=1 @{DNS_ADDR} -p 53 a.test; echo RC=$?"],
                         timeout=60)
        res2 = run_slirpy(("--resolv-conf", str(resolv), "--dns-upstream",
                           f"{HOST_ADDR2}:{silent.getsockname()[1]}"),
                          sh(f"dig +time=1 +tries=2 @{DNS_ADDR} a.test; echo RC=$?"), timeout=60)
    finally:
        silent.close()
    assert res.returncode == 0, res.describe()
    assert "NOTHING" in res.stdout and "RC=0" in res.stdout, res.describe()
    assert srv.seen("udp", "a.test") == 1 and len(srv.queries) == 1, srv.queries
    c = json.loads(stats.read_text())["counters"]
    assert c["dns.rx.drop.garbage"] == 2
    assert res2.returncode == 0, res2.describe()
    assert "RC=9" in res2.stdout and "timed out" in res2.stdout, res2.describe()
