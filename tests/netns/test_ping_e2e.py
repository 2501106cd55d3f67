"""Ping through `slirpy run`: iputils ping and a raw-socket prober inside the sandbox, echo
replies from the outer test namespace's kernel via slirpy's unprivileged ICMP sockets."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys

import pytest

from tests.netns.util import REPO, GATEWAY_ADDR, HOST_ADDR, SlirpyResult, run_slirpy, slirpy_argv

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_stray_processes")]

PING_RANGE = "/proc/sys/net/ipv4/ping_group_range"
UNROUTED = "192.0.2.1"          # testns has no route there: the host socket gets ENETUNREACH

# Inside the sandbox (root of its own user namespace, so it may open raw sockets there):
# send echo requests with a chosen identifier/sequence/TTL/payload, report the replies.
PROBE = r'''
import json, socket, struct, sys, time
host, ident = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(2.0)
def csum(b):
    if len(b) % 2: b += b"\0"
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b)); t = (t >> 16) + (t & 0xFFFF); t += t >> 16
    return ~t & 0xFFFF
out = []
for seq in (7, 8, 300):
    payload = bytes(range(seq % 200, seq % 200 + 48))
    msg = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + payload
    msg = msg[:2] + struct.pack("!H", csum(msg)) + msg[4:]
    s.sendto(msg, (host, 0))
    got = None
    end = time.monotonic() + 2
    while time.monotonic() < end:
        try:
            pkt, _ = s.recvfrom(2000)
        except socket.timeout:
            break
        ihl = (pkt[0] & 15) * 4
        t, c, _, rid, rseq = struct.unpack_from("!BBHHH", pkt, ihl)
        if t == 0:
            got = {"id": rid, "seq": rseq, "ttl": pkt[8], "payload_ok": pkt[ihl + 8:] == payload,
                   "csum_ok": csum(pkt[ihl:]) == 0}
            break
    out.append(got)
print(json.dumps(out), flush=True)
'''


@pytest.fixture
def ping_range():
    with open(PING_RANGE) as f:
        old = f.read().strip()

    def set_range(value: str) -> None:
        with open(PING_RANGE, "w") as f:
            f.write(value)

    yield set_range
    set_range(old)


def test_ping_host_and_gateway(ping_range, tmp_path):
    ping_range("0 0")
    stats = tmp_path / "stats.json"
    script = (f"ping -c 3 -i 0.2 -W 2 {HOST_ADDR}; echo rc=$?; "
              f"ping -c 2 -i 0.2 -W 2 {GATEWAY_ADDR}; echo rc=$?; "
              f"{sys.executable} -c '{PROBE}' {HOST_ADDR} 16962; "
              f"ping -c 1 -W 2 {UNROUTED}; echo rc=$?")
    res = run_slirpy(("--mtu", "1500", "--stats-file", str(stats)), ["sh", "-c", script], timeout=60)
    assert res.returncode == 0, res.describe()
    out = res.stdout
    host_part, gw_part = out.split("rc=", 1)[0], out.split("rc=", 1)[1]
    # iputils ping matches replies on its own identifier: a reply with a wrong id or seq
    # would not be printed at all.
    assert sorted(int(x) for x in re.findall(rf"from {re.escape(HOST_ADDR)}: icmp_seq=(\d+)", host_part)) == [1, 2, 3], res.describe()
    assert "3 received" in host_part and out.count("rc=0") == 2, res.describe()
    assert "2 received" in gw_part, res.describe()
    probe = json.loads([l for l in out.splitlines() if l.startswith("[")][-1])
    assert [(p["id"], p["seq"]) for p in probe] == [(16962, 7), (16962, 8), (16962, 300)], probe
    assert all(p["payload_ok"] and p["csum_ok"] and p["ttl"] == 64 for p in probe), probe
    assert f"From {GATEWAY_ADDR} icmp_seq=1 Destination Net Unreachable" in out, res.describe()
    assert out.rstrip().endswith("rc=1"), res.describe()
    c = json.loads(stats.read_text())["counters"]
    assert c["icmp.tx.echo_reply.proxied"] == 3 + 3
    assert c["icmp.tx.echo_reply"] == 2                    # the gateway's, answered by the stack
    assert c["icmp.echo.drop.no_socket"] == 1             # the one to the unrouted address
    assert "ping_group_range" not in res.stderr


def test_ping_not_permitted_is_reported_once_and_counted(tmp_path):
    """slirpy itself runs in a fresh network namespace inside testns: there
    ping_group_range has the kernel's default "1 0" (nobody may open ping sockets). (In
    testns itself only gid 0 is mapped, so "1 0" cannot even be written there.)"""
    stats = tmp_path / "stats.json"
    script = (f"ping -c 3 -i 0.2 -W 1 {HOST_ADDR}; echo rc=$?; "
              f"ping -c 2 -i 0.2 -W 1 -p 41 {HOST_ADDR}; echo rc=$?; "
              f"ping -c 1 -W 2 {GATEWAY_ADDR}; echo rc=$?")
    check = ("import socket\ntry:\n socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)\n"
             " print('precondition: ping sockets allowed')\nexcept PermissionError:\n print('precondition: EACCES')")
    inner = (f"{shlex.quote(sys.executable)} -c {shlex.quote(check)} >&2 && exec " + " ".join(
        shlex.quote(a) for a in [*slirpy_argv("--stats-file", str(stats)), "sh", "-c", script]))
    proc = subprocess.run(["unshare", "--net", "--", "sh", "-c", inner], capture_output=True,
                          text=True, timeout=60, cwd=REPO, stdin=subprocess.DEVNULL)
    res = SlirpyResult(proc.args, proc.returncode, proc.stdout, proc.stderr, 0.0)
    assert res.returncode == 0, res.describe()
    assert res.stderr.startswith("precondition: EACCES"), res.describe()
    rcs = re.findall(r"rc=(\d+)", res.stdout)
    assert rcs[:2] == ["1", "1"], res.describe()          # no reply, never a forged one
    assert rcs[2] == "0", res.describe()                  # the gateway still answers
    assert "bytes from 203.0.113.1" not in res.stdout
    assert res.stderr.count("ping_group_range excludes") == 1, res.describe()
    assert "sudo sysctl -w net.ipv4.ping_group_range" in res.stderr
    c = json.loads(stats.read_text())["counters"]
    assert c["icmp.echo.drop.no_socket"] == 5, c
    assert c.get("icmp.tx.echo_reply.proxied", 0) == 0
