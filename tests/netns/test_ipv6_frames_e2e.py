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
- extension headers: chains slirpy must walk (answered) and chains it must drop, each with
  its own counter;
- with `--no-ipv6`: ICMPv6 echo requests to fd00::2 are dropped and counted (ipv6.rx.drop.off)
  and never answered, and the guest has no IPv6 address (a link-local one at most) nor route.

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


HOPOPTS, ROUTING, FRAGMENT, DSTOPTS, GRE = 0, 43, 44, 60, 47
PADN4 = b"\x01\x04\x00\x00\x00\x00"         # one PadN option: with the 2 header bytes, 8 bytes


def opts(nh: int, body: bytes = PADN4, length: int | None = None) -> bytes:
    """A hop-by-hop or destination-options header; `length` overrides Hdr Ext Len."""
    return struct.pack("!BB", nh, (len(body) + 2) // 8 - 1 if length is None else length) + body


def routing(nh: int, segments_left: int) -> bytes:
    """A routing header (type 0) with one address."""
    return struct.pack("!BBBB4x", nh, 2, 0, segments_left) + a16("fd00::7")


def fragment(nh: int) -> bytes:
    return struct.pack("!BxHI", nh, 1, 0x5117)          # offset 0, more fragments, an id


HBH = (HOPOPTS, opts)
DST = (DSTOPTS, opts)
RT_DONE = (ROUTING, lambda nh: routing(nh, 0))      # segments left 0: the packet is for us
RT_LEFT = (ROUTING, lambda nh: routing(nh, 1))      # a source route we would have to follow
FRAG = (FRAGMENT, fragment)
DST_BAD_OPTION = (DSTOPTS, lambda nh: opts(nh, b"\xc2\x04\x00\x00\x00\x00"))  # unknown: discard
HBH_PAST_END = (HOPOPTS, lambda nh: opts(nh, length=5))          # claims 48 bytes


def chain(src: str, dst: str, headers: list, upper_nh: int, upper: bytes) -> bytes:
    """An IPv6 packet: `headers` ((type, builder(next_header)) pairs, outermost first), then
    the upper-layer bytes."""
    body, nh = upper, upper_nh
    for htype, build in reversed(headers):
        body = build(nh) + body
        nh = htype
    return struct.pack("!IHBB", 6 << 28, len(body), nh, 64) + a16(src) + a16(dst) + body


def ext_header_cases(ident: int) -> tuple[dict[str, bytes], dict[str, int]]:
    """(kind -> IPv6 packet, good kind -> echo sequence number): echo requests from the
    guest's fd00::100 to fd00::2 behind extension-header chains that slirpy must walk (good)
    or drop with its own counter (the others, see EXT_EXPECTED)."""
    src, dst = util.GUEST6_ADDR, util.GATEWAY6_ADDR

    def echo(headers: list, seq: int, source: str = src) -> bytes:
        msg = icmpv6(source, dst, ECHO_REQUEST, 0, struct.pack("!HH", ident, seq) + b"ext")
        return chain(source, dst, headers, ICMPV6, msg)

    good = {"hbh_dstopts": echo([HBH, DST], 1), "routing_done": echo([RT_DONE], 2),
            "eight_headers": echo([DST] * 8, 3)}
    ok = good["routing_done"]
    bad = {
        "fragment": echo([FRAG], 10),
        "routing_left": echo([RT_LEFT], 11),
        "hbh_not_first": echo([DST, HBH], 12),
        "nine_headers": echo([DST] * 9, 13),
        "ext_truncated": echo([HBH_PAST_END], 14),
        "bad_option": echo([DST_BAD_OPTION], 15),
        "unknown_proto": chain(src, dst, [], GRE, bytes(8)),
        "outside_source": echo([], 16, source="2001:db8::99"),
        "bad_length": ok[:4] + struct.pack("!H", len(ok) - 40 + 100) + ok[6:],
        "truncated": ok[:30],
        "bad_version": bytes([0x40 | ok[0] & 0x0F]) + ok[1:],
    }
    return {**good, **bad}, {"hbh_dstopts": 1, "routing_done": 2, "eight_headers": 3}


def op_ext_headers(count: int = 2, ident: int = 0x7777, timeout: float = 10.0) -> dict:
    """Each case `count` times (bad ones first); then wait for the echo replies of the good
    ones, which come after every bad one was handled (slirpy handles frames in order)."""
    g = Guest6()
    sniffer = Guest6()
    sniffer.only_icmpv6_in()
    gw_mac = gateway6_mac(g)
    cases, good_seqs = ext_header_cases(ident)
    for kind in sorted(cases, key=lambda k: k in good_seqs):
        for _ in range(count):
            g.send(g.eth(cases[kind], ETH_P_IPV6, dst=gw_mac))
    want = {seq: 0 for seq in good_seqs.values()}

    def is_reply(frame, _t):
        m = icmpv6_of(frame)
        if m is None or m[2] != 129:
            return False
        rid, seq = struct.unpack_from("!HH", m[3], 4)
        if rid == ident and seq in want:
            want[seq] += 1
            return True
        return False

    try:
        sniffer.sniff_until(is_reply, lambda got: all(n >= count for n in want.values()), timeout)
    except TimeoutError:
        pass
    return {"sent": {k: count for k in cases}, "replies": {k: want[v] for k, v in good_seqs.items()},
            "sniff_drops": sniffer.rx_drops()}


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
                         echo6_frames=op_echo6_frames, ext_headers=op_ext_headers)
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


# ext_header_cases kind -> the counter that must count exactly its drops
EXT_EXPECTED = {
    "fragment": "ipv6.rx.drop.fragment",
    "routing_left": "rx.drop.ipv6.routing",
    "hbh_not_first": "rx.drop.ipv6.ext_chain",
    "nine_headers": "rx.drop.ipv6.ext_chain",
    "ext_truncated": "rx.drop.ipv6.ext_truncated",
    "bad_option": "rx.drop.ipv6.ext_option",
    "unknown_proto": "ipv6.rx.drop.proto",
    "outside_source": "ipv6.rx.drop.bad_src",
    "bad_length": "rx.drop.ipv6.bad_length",
    "truncated": "rx.drop.ipv6.truncated",
    "bad_version": "rx.drop.ipv6.bad_version",
}


def test_extension_headers_are_walked_and_bad_chains_dropped_with_their_counters():
    """Echo requests to fd00::2 behind hop-by-hop, destination-options (up to 8 headers) and
    finished routing headers are answered; fragments, live source routes, misplaced
    hop-by-hop, 9 headers, truncated or discard-me options, unknown protocols, foreign
    sources and broken fixed headers are each dropped and counted, exactly."""
    out, c = run_frames(["--mtu", "1500"], {"ops": [{"op": "ext_headers", "count": 2}]})
    [ext] = out["ops"]
    assert "exception" not in ext, ext
    assert ext["sniff_drops"] == 0, ext
    assert ext["replies"] == {"hbh_dstopts": 2, "routing_done": 2, "eight_headers": 2}, ext
    assert set(ext["sent"]) == set(EXT_EXPECTED) | set(ext["replies"]), ext
    want: dict[str, int] = {}
    for kind, counter in EXT_EXPECTED.items():
        want[counter] = want.get(counter, 0) + ext["sent"][kind]
    assert {k: c.get(k, 0) for k in want} == want, c
    assert c.get("icmpv6.tx.echo_reply", 0) == 6, c


def test_no_ipv6_drops_and_counts_every_ipv6_frame():
    """--no-ipv6: no IPv6 address on tap0 (a link-local one at most) and no route; echo
    requests written to fd00::2 are dropped (ipv6.rx.drop.off), none answered."""
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
