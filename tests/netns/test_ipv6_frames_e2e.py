"""IPv6 frames written by hand from inside the sandbox (issue 16), against a real `slirpy run`.

The guest is root of its own user namespace, so it opens an AF_PACKET socket on tap0 (the
Guest class of rawframes.py) and writes what its own kernel would never send:
- a Router Solicitation: slirpy answers with a Router Advertisement carrying what SLAAC
  needs (prefix fd00::/64 with L and A, the MTU, RDNSS fd00::3, router lifetime 1800 s), from
  the gateway's link-local address;
- Router Advertisements and Redirects *from* the guest: ignored, each counted
  (icmpv6.rx.drop.ra_from_guest, icmpv6.rx.drop.redirect), while a 32 MiB IPv6 download runs
  alongside and stays byte-exact;
- a Neighbor Solicitation flood from 1000 distinct addresses and MACs: every one answered,
  the neighbour table kept within `--limit max_neighbours` (evictions counted), the download
  alongside byte-exact;
- with `--no-ipv6`: ICMPv6 echo requests to fd00::2 are dropped and counted (ipv6.rx.drop.off)
  and never answered, and the guest has no IPv6 address but link-local.

This file is also the guest side: `python test_ipv6_frames_e2e.py '<json spec>'` runs
rawframes.py's driver with the IPv6 ops below added (one JSON line on stdout).
"""

from __future__ import annotations

import ctypes
import json
import random
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if __name__ == "__main__":          # the guest side: standard library + rawframes/util only
    sys.path.insert(0, str(HERE))
    import rawframes  # noqa: E402
    import util  # noqa: E402
else:
    import pytest

    from tests.netns import rawframes, util
    from tests.netns.util import HOST6_ADDR, expected, run_slirpy

    pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_stray_processes")]

ETH_P_IPV6 = 0x86DD
ICMPV6 = 58
RS, RA, NS, NA, REDIRECT = 133, 134, 135, 136, 137
ECHO_REQUEST = 128
ALL_NODES = "ff02::1"
ALL_ROUTERS = "ff02::2"


# --------------------------------------------------------------------------- frame builders

def a16(addr: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, addr)


def icmpv6(src: str, dst: str, type_: int, code: int, body: bytes) -> bytes:
    msg = struct.pack("!BBH", type_, code, 0) + body
    pseudo = a16(src) + a16(dst) + struct.pack("!I3xB", len(msg), ICMPV6)
    c = rawframes.csum(pseudo + msg)
    return msg[:2] + struct.pack("!H", c) + msg[4:]


def ipv6(src: str, dst: str, payload: bytes, next_header: int = ICMPV6, hop_limit: int = 255) -> bytes:
    return struct.pack("!IHBB", 6 << 28, len(payload), next_header, hop_limit) + a16(src) + a16(dst) + payload


def multicast_mac(addr: str) -> bytes:
    return b"\x33\x33" + a16(addr)[12:]


def solicited_node(addr: str) -> str:
    return socket.inet_ntop(socket.AF_INET6, a16("ff02::1:ff00:0")[:13] + a16(addr)[13:])


def link_local(mac: bytes) -> str:
    eui = bytes([mac[0] ^ 2]) + mac[1:3] + b"\xff\xfe" + mac[3:]
    return socket.inet_ntop(socket.AF_INET6, a16("fe80::")[:8] + eui)


def lladdr_option(kind: int, mac: bytes) -> bytes:
    return struct.pack("!BB", kind, 1) + mac            # 1 = source, 2 = target link-layer address


def parse_options(data: bytes) -> list[tuple[int, bytes]]:
    out = []
    while len(data) >= 8 and data[1]:
        out.append((data[0], data[2:data[1] * 8]))
        data = data[data[1] * 8:]
    return out


def icmpv6_of(frame: bytes) -> tuple[str, str, int, bytes] | None:
    """(src, dst, type, message) of an Ethernet frame carrying ICMPv6 right after the IPv6
    header, else None."""
    if len(frame) < 14 + 40 + 4 or frame[12:14] != b"\x86\xdd" or frame[20] != ICMPV6:
        return None
    src = socket.inet_ntop(socket.AF_INET6, frame[22:38])
    dst = socket.inet_ntop(socket.AF_INET6, frame[38:54])
    return src, dst, frame[54], frame[54:]


class Guest6(rawframes.Guest):
    """rawframes.Guest with the guest's IPv6 link-local address."""

    def __init__(self) -> None:
        super().__init__()
        self.ll = link_local(self.mac)

    def eth6(self, payload: bytes, dst_mac: bytes) -> bytes:
        return self.eth(payload, ETH_P_IPV6, dst=dst_mac)

    def only_icmpv6_in(self) -> None:
        """Queue only ICMPv6 frames coming in on tap0 (classic BPF, and none of our own), so
        a transfer alongside cannot fill the socket's buffer with frames nobody reads."""
        self.sock.setsockopt(rawframes.SOL_PACKET, rawframes.PACKET_IGNORE_OUTGOING, 1)
        prog = [
            (0x28, 0, 0, 12),                   # ldh [12]      ethertype
            (0x15, 0, 3, ETH_P_IPV6),           # jeq #IPv6
            (0x30, 0, 0, 20),                   # ldb [20]      next header
            (0x15, 0, 1, ICMPV6),               # jeq #ICMPv6
            (0x06, 0, 0, 0x40000),              # ret #256K     accept
            (0x06, 0, 0, 0),                    # ret #0        drop
        ]
        code = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *ins) for ins in prog))
        self.sock.setsockopt(socket.SOL_SOCKET, 26, struct.pack("HL", len(prog), ctypes.addressof(code)))
        self.flush_rx()


def gateway6_mac(g: Guest6, timeout: float = 10.0) -> bytes:
    """The gateway's MAC for fd00::2, as the guest kernel resolved it (NS/NA) for a datagram
    sent there."""
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.sendto(b"x", (util.GATEWAY6_ADDR, 9))
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(["ip", "-6", "neigh", "show", util.GATEWAY6_ADDR, "dev", "tap0"],
                             capture_output=True, text=True).stdout.split()
        if "lladdr" in out:
            return bytes.fromhex(out[out.index("lladdr") + 1].replace(":", ""))
        if time.monotonic() > deadline:
            raise TimeoutError(f"no neighbour entry for {util.GATEWAY6_ADDR}: {out}")
        time.sleep(0.05)


# --------------------------------------------------------------------------- guest ops

def op_rs_ra(timeout: float = 10.0) -> dict:
    """Send a Router Solicitation; report the Router Advertisement that answers it."""
    g = Guest6()
    sniffer = Guest6()
    sniffer.only_icmpv6_in()
    rs = icmpv6(g.ll, ALL_ROUTERS, RS, 0, bytes(4) + lladdr_option(1, g.mac))
    is_ra = lambda f, t: (m := icmpv6_of(f)) is not None and m[2] == RA  # noqa: E731
    g.send(g.eth6(ipv6(g.ll, ALL_ROUTERS, rs), multicast_mac(ALL_ROUTERS)))
    [(_, frame)] = sniffer.sniff_until(is_ra, lambda got: bool(got), timeout)
    src, dst, _, msg = icmpv6_of(frame)
    hop, flags, lifetime = struct.unpack_from("!BBH", msg, 4)
    out = {"src": src, "dst": dst, "hop_limit": frame[21], "router_lifetime": lifetime,
           "eth_src": frame[6:12].hex(), "prefixes": [], "mtu": None, "rdnss": [], "source_ll": None}
    for kind, val in parse_options(msg[16:]):
        if kind == 1:
            out["source_ll"] = val[:6].hex()
        elif kind == 3:
            plen, pflags, valid, preferred = struct.unpack_from("!BBII", val)
            prefix = socket.inet_ntop(socket.AF_INET6, val[14:30])
            out["prefixes"].append({"prefix": f"{prefix}/{plen}", "L": bool(pflags & 0x80),
                                    "A": bool(pflags & 0x40), "valid": valid, "preferred": preferred})
        elif kind == 5:
            out["mtu"] = struct.unpack_from("!I", val, 2)[0]
        elif kind == 25:
            out["rdnss"] += [socket.inet_ntop(socket.AF_INET6, val[6 + i:22 + i])
                             for i in range(0, len(val) - 6, 16)]
    return out


def op_hostile_ndp(count: int) -> dict:
    """`count` Router Advertisements (to all nodes, with a prefix and a source link-layer
    address) and `count` Redirects (to the gateway, pointing fd00::2's traffic elsewhere)."""
    g = Guest6()
    gw_mac = gateway6_mac(g)
    ra_body = (struct.pack("!BBHII", 64, 0, 1800, 0, 0) + lladdr_option(1, g.mac)
               + struct.pack("!BBBBIII", 3, 4, 64, 0xC0, 3600, 3600, 0) + a16("2001:db8:bad::"))
    redirect_body = (bytes(4) + a16(util.GUEST6_ADDR) + a16(util.HOST6_ADDR)
                     + lladdr_option(2, g.mac))
    for _ in range(count):
        g.send(g.eth6(ipv6(g.ll, ALL_NODES, icmpv6(g.ll, ALL_NODES, RA, 0, ra_body)),
                      multicast_mac(ALL_NODES)))
        g.send(g.eth6(ipv6(g.ll, util.GATEWAY6_ADDR,
                           icmpv6(g.ll, util.GATEWAY6_ADDR, REDIRECT, 0, redirect_body)), gw_mac))
    return {"sent_ra": count, "sent_redirect": count, "gateway_mac": gw_mac.hex()}


def op_ns_flood(count: int, seed: int = 1, pace_every: int = 50) -> dict:
    """Neighbor Solicitations for fd00::2 from `count` distinct addresses of fd00::/64 (never
    the guest's or the virtual ones), each with its own random MAC; count the Neighbor
    Advertisements that come back to those addresses."""
    g = Guest6()
    sniffer = Guest6()
    sniffer.only_icmpv6_in()
    rng = random.Random(seed)
    target = util.GATEWAY6_ADDR
    sol = solicited_node(target)
    sources = [f"fd00::1:{i:x}" for i in range(1, count + 1)]
    for i, src in enumerate(sources):
        mac = bytes([rng.randrange(256) & 0xFE | 0x02]) + rng.randbytes(5)
        body = bytes(4) + a16(target) + lladdr_option(1, mac)
        g.send(g.eth(ipv6(src, sol, icmpv6(src, sol, NS, 0, body)), ETH_P_IPV6,
                     dst=multicast_mac(sol), src=mac))
        if i % pace_every == pace_every - 1:
            time.sleep(0.002)
    wanted = set(sources)
    answered: set[str] = set()

    def is_na(frame, _pkttype):
        m = icmpv6_of(frame)
        if m is not None and m[2] == NA and m[1] in wanted:
            answered.add(m[1])
            return True
        return False

    try:        # a deadline, not a wait: it ends as soon as every solicitation is answered
        sniffer.sniff_until(is_na, lambda got: len(answered) == count, 30.0)
    except TimeoutError:
        pass
    return {"sent": count, "answered": len(answered), "sniff_drops": sniffer.rx_drops()}


def op_echo6_frames(count: int) -> dict:
    """`count` ICMPv6 echo requests to fd00::2 written on tap0 (whatever the guest's own
    IPv6 configuration), to the gateway's IPv4 MAC."""
    g = Guest6()
    for seq in range(count):
        body = struct.pack("!HH", 0x6666, seq) + b"slirpy"
        g.send(g.eth6(ipv6(g.ll, util.GATEWAY6_ADDR, icmpv6(g.ll, util.GATEWAY6_ADDR, ECHO_REQUEST, 0, body),
                           hop_limit=64), g.gw_mac))
    return {"sent": count}


if __name__ == "__main__":
    rawframes.OPS.update(rs_ra=op_rs_ra, hostile_ndp=op_hostile_ndp, ns_flood=op_ns_flood,
                         echo6_frames=op_echo6_frames)
    sys.exit(rawframes.main(sys.argv))


# =========================================================================== the tests

def run_frames(options: list[str], spec: dict, timeout: float = 180) -> tuple[dict, dict]:
    """Run this file's guest side in a sandbox; return (its JSON output, the counters)."""
    with tempfile.TemporaryDirectory() as d:
        stats = Path(d) / "stats.json"
        r = run_slirpy([*options, "--stats-file", str(stats)],
                       [sys.executable, str(Path(__file__).resolve()), json.dumps(spec)], timeout=timeout)
        assert r.returncode == 0, r.describe()
        lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
        assert lines, "the guest printed nothing\n" + r.describe()
        assert stats.exists(), "slirpy wrote no stats file (did it die?)\n" + r.describe()
        return json.loads(lines[-1]), json.loads(stats.read_text())["counters"]


def test_router_solicitation_gets_an_advertisement_for_slaac():
    out, c = run_frames(["--mtu", "1500"], {"ops": [{"op": "rs_ra"}]})
    [ra] = out["ops"]
    assert "exception" not in ra, ra
    assert ra["src"].startswith("fe80::") and ra["hop_limit"] == 255, ra
    assert ra["src"] == link_local(bytes.fromhex(ra["eth_src"])), ra     # the gateway's EUI-64
    assert ra["source_ll"] == ra["eth_src"], ra
    assert ra["router_lifetime"] == 1800, ra
    assert [p for p in ra["prefixes"] if p["prefix"] == "fd00::/64" and p["L"] and p["A"]], ra
    assert ra["mtu"] == 1500 and ra["rdnss"] == ["fd00::3"], ra


MiB = 1 << 20


@pytest.fixture(scope="module")
def hostile_ndp_run():
    source = util.HostServer("source", HOST6_ADDR, size=32 * MiB + 5, seed=72)
    try:
        out, counters = run_frames(["--mtu", "1500"], {
            "background": [{"op": "download_until", "host": HOST6_ADDR, "port": source.port,
                            "size": 32 * MiB + 5}],
            "ops": [{"op": "hostile_ndp", "count": 5}],
        })
    finally:
        source.close()
    return out, counters


def test_router_advertisements_and_redirects_from_the_guest_are_ignored_and_counted(hostile_ndp_run):
    out, c = hostile_ndp_run
    ndp = out["ops"][0]
    assert "exception" not in ndp, ndp
    # the guest's kernel never sends either (it is not a router): the counts are exactly ours
    assert c.get("icmpv6.rx.drop.ra_from_guest", 0) == ndp["sent_ra"] == 5, c
    assert c.get("icmpv6.rx.drop.redirect", 0) == ndp["sent_redirect"] == 5, c


def test_the_ipv6_transfer_alongside_the_hostile_frames_stays_byte_exact(hostile_ndp_run):
    out, _ = hostile_ndp_run
    [down] = out["background"]
    assert out["background_ready"] is True, out
    assert down.get("read_during_ops", 0) > 0 and down["read_at_stop"] < 32 * MiB + 5, down
    assert (down["len"], down["sha"]) == (32 * MiB + 5, expected(32 * MiB + 5, 72)), down


def test_ns_flood_stays_within_the_neighbour_table_bound():
    """1000 NS from distinct addresses and MACs with --limit max_neighbours=64: each answered
    (NA), at least 1000 - 64 entries evicted (counted), a transfer alongside byte-exact."""
    n, bound = 1000, 64
    source = util.HostServer("source", HOST6_ADDR, size=32 * MiB + 1, seed=81)
    try:
        out, c = run_frames(["--mtu", "1500", "--limit", f"max_neighbours={bound}"], {
            "background": [{"op": "download_until", "host": HOST6_ADDR, "port": source.port,
                            "size": 32 * MiB + 1}],
            "ops": [{"op": "ns_flood", "count": n}]})
    finally:
        source.close()
    [flood] = out["ops"]
    assert "exception" not in flood, flood
    assert flood["sniff_drops"] == 0 and flood["answered"] == n, flood
    [down] = out["background"]
    assert out["background_ready"] is True and down.get("read_during_ops", 0) > 0, out
    assert (down["len"], down["sha"]) == (32 * MiB + 1, expected(32 * MiB + 1, 81)), down
    assert c.get("ndp.tx.na", 0) >= n, c
    assert c.get("ndp.neighbour.evicted", 0) >= n - bound, c


def test_no_ipv6_drops_and_counts_every_ipv6_frame():
    """--no-ipv6: nothing IPv6 on tap0 but link-local; echo requests written to fd00::2 are
    dropped (ipv6.rx.drop.off), none answered."""
    out, c = run_frames(["--no-ipv6"], {"ops": [{"op": "if6info"}, {"op": "echo6_frames", "count": 5},
                                                {"op": "connect", "host": HOST6_ADDR, "port": 9,
                                                 "timeout": 10}]})
    info6, echo, connect = out["ops"]
    assert "exception" not in echo, echo
    assert [a for a in info6["addrs"] if not a["addr"].startswith("fe80:")] == [], info6
    assert [r for r in info6["routes"] if r["dst"] == "::/0"] == [], info6
    assert connect["error"] == "ENETUNREACH", connect      # the guest has no IPv6 route at all
    assert c.get("ipv6.rx.drop.off", 0) >= 5, c
    assert not [k for k, v in c.items() if k.startswith("icmpv6.tx") and v], c
