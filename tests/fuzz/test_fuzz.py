"""Short fuzz budget for the default suite (helpers/fuzz runs the long one), the corpora, and
the machinery itself: a finding must be reported, not lost."""

from __future__ import annotations

import pytest

from slirpy.tcpip.errors import MalformedPacket
from slirpy.tcpip.wire.dhcp import DhcpRequest
from tests.fuzz import harnesses as h
from tests.fuzz import harnesses_ipv6 as h6
from tests.fuzz import runner
from tests.fuzz.mutate import Mutator

SHORT = {"stack": 10_000, "stack6": 10_000}
DEFAULT_SHORT = 20_000


@pytest.mark.parametrize("name", sorted(h.HARNESSES))
def test_short_fuzz_run_finds_nothing(name):
    res = runner.run_harness(name, SHORT.get(name, DEFAULT_SHORT), seed=1)
    assert res.inputs == SHORT.get(name, DEFAULT_SHORT)
    assert not res.findings, "\n".join(f"{f.error}\n{f.data.hex()}\n{f.trace}" for f in res.findings[:3])


@pytest.mark.long
@pytest.mark.parametrize("name", sorted(h.HARNESSES))
def test_long_fuzz_run_finds_nothing(name):
    res = runner.run_harness(name, 200_000, seed=2)
    assert not res.findings, "\n".join(f"{f.error}\n{f.data.hex()}\n{f.trace}" for f in res.findings[:3])


@pytest.mark.parametrize("name", sorted(h.HARNESSES))
def test_corpus_is_real_and_mostly_valid(name):
    """Each harness starts from captured frames, and most of them parse as they are."""
    _, seeds = h.HARNESSES[name]
    corpus = seeds()
    assert len(corpus) >= 1
    target = h.make_target(name, 0)
    for data in corpus:
        target(data)          # unmutated seeds never produce findings
    parsers = {
        "virtio": h.VirtioNetHeader.parse, "eth_arp": h.EthernetHeader.parse,
        "ipv4": h.Ipv4Header.parse, "icmp": h.IcmpHeader.parse,
        "udp": lambda b: h.UdpHeader.parse(b), "tcp": lambda b: h.TcpSegment.parse(memoryview(b)),
        "dhcp": lambda b: DhcpRequest.parse(b),
    }
    if name in parsers:
        ok = 0
        for data in corpus:
            try:
                parsers[name](data)
                ok += 1
            except MalformedPacket:
                pass
        assert ok == len(corpus)


def test_mutator_is_deterministic_and_mutates():
    corpus = h.corpus("tcp")
    a = [Mutator(corpus, 5).next() for _ in range(1)]
    m1, m2 = Mutator(corpus, 5), Mutator(corpus, 5)
    xs = [m1.next() for _ in range(500)]
    assert xs == [m2.next() for _ in range(500)] and a[0] == xs[0]
    assert sum(x not in corpus for x in xs) > 400
    assert len({len(x) for x in xs}) > 50          # lengths are smashed, not only bytes


def test_a_finding_is_reported_with_its_input(monkeypatch):
    def fragile(data: bytes) -> None:
        if len(data) > 10 and data[0] == 0x45:
            raise IndexError("boom")
    monkeypatch.setitem(h.HARNESSES, "fragile", (fragile, lambda: h.corpus("ipv4")))
    res = runner.run_harness("fragile", 500, seed=1, max_findings=5)
    assert len(res.findings) == 5 and res.inputs < 500
    f = res.findings[0]
    assert f.error == "IndexError: boom" and f.data[0] == 0x45 and "fragile" in f.trace
    assert len(res.distinct) == 1 and list(res.distinct)[0][0] == "IndexError"


def test_stack_harness_invariants_can_fail():
    """The stack harness's checks are live: a stack that loses count of a frame is caught."""
    target = h.StackHarness(seed=3)
    frame = h.stack_corpus()[0]
    target(frame)
    target.stack.counters["rx.frames"] -= 5             # a counter that shrank
    with pytest.raises(AssertionError, match="went from"):
        target(frame)


def test_stack_harness_reaches_the_established_flow():
    target = h.StackHarness(seed=4)
    assert target.guest is not None and target._flow() is not None
    mut = Mutator(h.stack_corpus(), 4)
    for _ in range(2000):
        target(mut.next())
    c = target.stack.counters
    # aimed frames got past the IP layer into TCP on the flow, and the guest's own flow works
    assert c["tcp.flows.established"] >= 1 and c["tcp.tx.segments"] > 100
    assert c["rx.drop.tcp.bad_option"] + c["rx.drop.tcp.bad_data_offset"] > 0


def test_dns_harness_reaches_the_forwarder_both_ways():
    target = h.DnsHarness(0)
    for data in h.dns_corpus():
        target(data)
    c = target.stack.counters
    assert c["dns.flows.opened"] >= 1
    assert c["udp.rx.datagrams"] == 4          # the four queries, forwarded unchanged
    assert c["udp.tx.datagrams"] == 4          # the four answers, delivered to the guest
    assert c["dns.rx.drop.garbage"] == 0
    target(b"\x02" + b"\x00" * 5)              # shorter than a DNS header: garbage, counted
    assert c["dns.rx.drop.garbage"] == 1


# ------------------------------------------------------------------ the IPv6 harnesses

def test_ipv6_corpora_are_real_and_mostly_valid():
    """Captured from a kernel (tests/fuzz/capture_ipv6.py): every IPv6 seed parses but those
    refused on purpose (a live routing header, a must-discard option), every ICMPv6 seed's
    checksum verifies, and every NDP seed parses as what its type says."""
    from slirpy.tcpip.wire import icmpv6, ipv6

    refused = []
    walked = set()
    for data in h.corpus("ipv6"):
        try:
            proto, l4, *_ = ipv6.parse_fields(memoryview(data))
        except MalformedPacket as e:
            refused.append(e.reason)
        else:
            walked |= set(ipv6.Ipv6Header.parse(data).ext_types) | {proto}
    assert sorted(refused) == ["ipv6.ext_option", "ipv6.routing"]
    assert {0, 43, 44, 60, 6, 17, 58} <= walked
    types = set()
    for data in h.corpus("icmpv6"):
        proto, l4, end, _, src, dst = ipv6.parse_fields(memoryview(data))
        types.add(icmpv6.Icmpv6Header.parse(memoryview(data)[l4:end], src, dst).type)
    assert {1, 4, 128, 129, 133, 134, 135, 136, 143} <= types
    parse = {133: icmpv6.parse_rs, 134: lambda b: icmpv6.parse_rs(b[8:]), 135: icmpv6.parse_ns,
             136: lambda b: icmpv6.parse_na(b, 0)}
    seen = set()
    for data in h.corpus("ndp"):
        parse[data[0]](memoryview(data)[8:])
        seen.add(data[0])
    assert seen == set(parse)


def _reasons(fn, corpus_name: str, n: int) -> dict[str, int]:
    from collections import Counter
    counts: Counter[str] = Counter()
    mut = Mutator(h.corpus(corpus_name), 7)
    for _ in range(n):
        data = mut.next()
        try:
            fn(data)
            counts["ok"] += 1
        except MalformedPacket as e:
            counts[e.reason] += 1
    return counts


def test_ipv6_harness_inputs_reach_the_walk():
    """The aimed copies (payload length repaired) get mutated chains past the length check."""
    from slirpy.tcpip.wire import ipv6

    def aimed(data):
        a = h6._aimed(data)
        if a is None:
            raise MalformedPacket("x.too_short")
        ipv6.parse_fields(memoryview(a))
    c = _reasons(aimed, "ipv6", 5000)
    assert c["ok"] > 1000
    for reason in ("ipv6.ext_truncated", "ipv6.ext_chain", "ipv6.ext_option", "ipv6.routing",
                   "ipv6.bad_version"):
        assert c[reason] > 0, (reason, c)


def test_ndp_harness_inputs_reach_the_options():
    from slirpy.tcpip.wire import icmpv6
    c = _reasons(lambda d: icmpv6.parse_ns(d[8:]), "ndp", 5000)
    assert c["ok"] > 500 and c["ndp.bad_option"] > 100 and c["ndp.bad_target"] > 0 and c["ndp.truncated"] > 0


@pytest.mark.parametrize("name,where,broken", [
    ("ipv6", "parse_fields", lambda real: lambda mv: (lambda f: (f[0], f[1] + 8) + f[2:])(real(mv))),
    ("icmpv6", "build_echo_reply", lambda real: lambda s, d, m: real(s, d, bytes(m)[:-1])),
    ("ndp", "parse_ns", lambda real: lambda b: (lambda r: (r[0], None))(real(b))),
])
def test_ipv6_harness_invariants_can_fail(monkeypatch, name, where, broken):
    """A parser that lies (a wrong l4 offset, a short echo reply, a lost option) is a finding."""
    monkeypatch.setattr(h6, where, broken(getattr(h6, where)))
    res = runner.run_harness(name, 3000, seed=1, max_findings=3)
    assert res.findings and all(f.error.startswith("AssertionError") for f in res.findings)


@pytest.mark.parametrize("broken", ["outgrown", "outside_pool"])
def test_dhcp_harness_invariants_can_fail(monkeypatch, broken):
    """The dhcp harness's checks are live: a server whose lease table outgrew the pool, or that
    leased an address outside it, is caught.  (The bad state is put in the lease table itself:
    with the compiled build, a method patched on DhcpServer is not what its callers run.)"""
    from slirpy.tcpip.iface.dhcp import POOL_SIZE
    from slirpy.tcpip.wire import dhcp as wd
    from tests.fuzz import harnesses_dhcp as hd
    monkeypatch.setattr(hd, "_SERVER", {})
    server = hd._stack().dhcp
    if broken == "outgrown":
        for i in range(POOL_SIZE + 1):
            server.leases[bytes([2, 0, 0, 0, 2, i])] = (server.pool[0], 1e9)
    else:
        server.leases[bytes([2, 0, 0, 0, 2, 0])] = (bytes([192, 0, 2, 1]), 1e9)
    request = wd.build_request(wd.DISCOVER, 1, bytes([2, 0, 0, 0, 1, 1]))
    with pytest.raises(AssertionError):
        hd.fuzz_dhcp(request)
    server.leases.clear()
    hd.fuzz_dhcp(request)          # the same request against a sound table passes
