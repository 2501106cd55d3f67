"""A host without IPv6 (issue 16): the guest keeps its IPv6 network, its connections to IPv6
destinations fail at once (ICMPv6 unreachable or RST, never a hang), DNS and IPv4 keep working.

"The host" here is a network namespace of the test's own, nested in the outer test namespace
(`unshare -n`), with lo carrying 203.0.113.1/24 only, in two flavours:
- no-address: net.ipv6.conf.{all,default}.disable_ipv6=1, so not even ::1: IPv6 sockets can
  be made, but connect() and sendto() fail with EADDRNOTAVAIL;
- no-route: IPv6 on (::1 only), no route to 2001:db8::/32: they fail with ENETUNREACH.
A DNS server and a TCP source run in there (entered with nsenter), and so does slirpy.
The deadlines below (curl --max-time, connect timeouts) only bound a hang; a failure must be
of the right kind (curl exit 7 "couldn't connect" with the errno, not 28 "timeout").
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time

import pytest

from tests.netns.util import (DNS_ADDR, DNS6_ADDR, GUEST6_ADDR, HOST_ADDR, HOST6_ADDR, REPO,
                              expected, guest_argv, read_counters, slirpy_argv)

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_stray_processes")]

SETUP = {
    "no-address": ("echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; "
                   "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6; "),
    "no-route": "",
}
COMMON = ("echo '0 0' > /proc/sys/net/ipv4/ping_group_range; ip link set lo up; "
          f"ip addr add {HOST_ADDR}/24 dev lo")

# Runs in the IPv6-less host namespace: a DNS server on 203.0.113.1:53 and a TCP source; prints
# the source's port, then serves until its stdin closes.
SERVERS = r'''
import json, sys
from tests.netns.test_dns_e2e import DnsServer
from tests.netns.util import HostServer
dns = DnsServer(sys.argv[1], 53)
src = HostServer("source", sys.argv[1], size=int(sys.argv[2]), seed=int(sys.argv[3]))
print(json.dumps({"port": src.port}), flush=True)
sys.stdin.read()
'''

SIZE = 4 << 20


class HostNamespace:
    """`unshare -n sleep` configured by nsenter; commands run in it with nsenter -n."""

    def __init__(self, flavour: str):
        self.proc = subprocess.Popen(["unshare", "-n", "sleep", "600"], stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        mine = os.readlink("/proc/self/ns/net")
        while os.readlink(f"/proc/{self.proc.pid}/ns/net") == mine:
            assert time.monotonic() < deadline, "unshare -n did not create a namespace"
            time.sleep(0.02)
        self.run(["sh", "-ec", SETUP[flavour] + COMMON])

    def argv(self, cmd: list[str]) -> list[str]:
        return ["nsenter", "-t", str(self.proc.pid), "-n", "--", *cmd]

    def run(self, cmd: list[str], timeout: float = 30) -> subprocess.CompletedProcess:
        r = subprocess.run(self.argv(cmd), capture_output=True, text=True, timeout=timeout, cwd=REPO)
        assert r.returncode == 0, (cmd, r.stdout, r.stderr)
        return r

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture(params=list(SETUP))
def host_without_ipv6(request):
    ns = HostNamespace(request.param)
    servers = subprocess.Popen(ns.argv([sys.executable, "-c", SERVERS, HOST_ADDR, str(SIZE), "9"]),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        line = servers.stdout.readline()
        assert line, "the servers in the IPv6-less namespace did not start"
        yield ns, json.loads(line)["port"], request.param
    finally:
        servers.stdin.close()
        servers.wait(10)
        ns.close()


def test_ipv6_destinations_fail_at_once_while_ipv4_and_dns_work(host_without_ipv6, tmp_path):
    ns, port, flavour = host_without_ipv6
    # the precondition: in this namespace IPv6 really goes nowhere
    probe = ns.run([sys.executable, "-c", "import socket\ns = socket.socket(socket.AF_INET6)\n"
                    "try:\n s.connect(('2001:db8::1', 80))\nexcept OSError as e:\n print(e.errno)"])
    assert probe.stdout.split() == [{"no-address": "99", "no-route": "101"}[flavour]], probe
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {HOST_ADDR}\n")
    stats = tmp_path / "stats.json"
    ops = [{"op": "connect", "host": HOST6_ADDR, "port": 80, "timeout": 30},
           {"op": "udp_refused", "host": HOST6_ADDR, "port": 9, "wait": 30, "tries": 1},
           {"op": "download", "host": HOST_ADDR, "port": port},
           {"op": "if6info"}]
    script = "\n".join([
        f"curl -6 -g -sS -v --max-time 60 http://[{HOST6_ADDR}]:{port}/ 2>&1; echo curl-rc=$?",
        f"ping -6 -c 1 -W 30 {HOST6_ADDR}; echo ping-rc=$?",
        f"echo DNS4=$(dig +short +time=3 @{DNS_ADDR} a.test AAAA)",
        f"echo DNS6=$(dig +short +time=3 @{DNS6_ADDR} a.test AAAA)",
        f"echo DNS6TCP=$(dig +short +tcp +time=3 @{DNS6_ADDR} a.test A)",
        shlex.join(guest_argv(ops))])
    argv = ns.argv(slirpy_argv("--resolv-conf", str(resolv), "--stats-file", str(stats))
                   + ["sh", "-c", script])
    r = subprocess.run(argv, capture_output=True, text=True, timeout=180, cwd=REPO,
                       stdin=subprocess.DEVNULL)
    out = r.stdout
    describe = f"exit {r.returncode}\n--- stdout\n{out[-4000:]}\n--- stderr\n{r.stderr[-3000:]}"
    assert r.returncode == 0, describe
    c = read_counters(stats)
    describe += "\n--- counters\n" + json.dumps({k: v for k, v in c.items()
                                                  if k.split(".")[0] in ("tcp", "udp", "icmp", "icmpv6")})
    # curl: "couldn't connect" (7) with the kernel's reason, not a timeout (28)
    assert "curl-rc=7" in out, describe
    assert any(reason in out for reason in ("Network is unreachable", "No route to host",
                                            "Connection refused")), describe
    # ping: an ICMPv6 destination unreachable, not silence
    assert "ping-rc=1" in out and "Destination unreachable" in out, describe
    connect, udp, down, info6 = json.loads([l for l in out.splitlines() if l.startswith("[")][-1])
    assert connect["ok"] is False and connect["error"] in ("ENETUNREACH", "EHOSTUNREACH",
                                                           "ECONNREFUSED"), connect
    assert udp["outcome"] in ("ENETUNREACH", "EHOSTUNREACH", "ECONNREFUSED"), (udp, describe)
    # IPv4 and DNS (over either of the guest's families) keep working
    assert down == {"len": SIZE, "sha": expected(SIZE, 9)}, down
    assert "DNS4=2001:db8::10\n" in out and "DNS6=2001:db8::10\n" in out, describe
    assert "DNS6TCP=192.0.2.10\n" in out, describe
    # and the guest still has its IPv6 network
    assert any(a["addr"] == GUEST6_ADDR for a in info6["addrs"]), info6
    # both IPv6 connects (curl's, Python's) were failed as unreachable, none dropped silently
    # as an exhausted local resource (what EADDRNOTAVAIL means for IPv4)
    assert c.get("tcp.connect.unreachable", 0) == 2, c
    assert c.get("tcp.connect.drop.local_resource", 0) == 0, c
