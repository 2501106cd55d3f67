"""wire/dns.py: the question of a query and the answers built for it (golden bytes, scapy's DNS
layer as the independent reader), and names.py: views, NXDOMAIN for foreign network names."""

from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import given
from hypothesis import strategies as hs
from scapy.layers.dns import DNS, DNSQR, DNSRROPT

from slirpy.tcpip.errors import MalformedPacket
from slirpy.tcpip.names import DROP, MAX_ADDRESSES, MAX_NAMES, NameViews
from slirpy.tcpip.wire import dns as wd

# dig web.front A +rd, as bytes: id 0xbeef, RD, one question.
QUERY = bytes.fromhex("beef 0100 0001 0000 0000 0000 03 776562 05 66726f6e74 00 0001 0001")
M2 = bytes([10, 89, 0, 2])
M3 = bytes([10, 89, 0, 3])
V6 = bytes.fromhex("fd890000000000010000000000000003")


def test_parse_query_golden():
    q = wd.parse_query(QUERY)
    assert (q.ident, q.flags, q.name, q.qtype, q.qclass, q.end) == (0xBEEF, 0x0100, "web.front", 1, 1,
                                                                    len(QUERY))
    assert q.opcode == 0


def test_a_dot_inside_a_label_is_escaped_so_names_stay_apart():
    raw = QUERY[:12] + b"\x06db.bac\x01\\\x00\x00\x01\x00\x01"
    assert wd.parse_query(raw).name == "db\\.bac.\\\\"


def test_answer_golden_bytes():
    q = wd.parse_query(QUERY)
    got = wd.build_answer(QUERY, q, wd.RCODE_NOERROR, [M3, V6], ttl=5)
    assert got == bytes.fromhex(
        "beef 8580 0001 0001 0000 0000"                      # QR AA RD RA, 1 question, 1 answer
        "03 776562 05 66726f6e74 00 0001 0001"               # the question, copied
        "c00c 0001 0001 00000005 0004 0a590003")             # web.front A 10.89.0.3, TTL 5
    nx = wd.build_answer(QUERY, q, wd.RCODE_NXDOMAIN)
    assert nx == bytes.fromhex("beef 8583 0001 0000 0000 0000 03 776562 05 66726f6e74 00 0001 0001")


def test_answers_read_back_with_scapy_and_truncate_with_tc():
    query = bytes(DNS(id=7, rd=1, qd=DNSQR(qname="Db.Back.", qtype="AAAA"), ar=DNSRROPT()))
    q = wd.parse_query(query)
    assert q.name == "db.back" and q.qtype == wd.TYPE_AAAA
    addrs = [V6[:15] + bytes([i]) for i in range(20)]
    full = DNS(wd.build_answer(query, q, wd.RCODE_NOERROR, addrs, ttl=5))
    assert full.qr == 1 and full.aa == 1 and full.rcode == 0 and full.ancount == 20 and full.tc == 0
    assert full.qd[0].qname == b"Db.Back."                   # the querier's spelling is kept
    short = wd.build_answer(query, q, wd.RCODE_NOERROR, addrs, ttl=5, limit=wd.UDP_MAX)
    assert len(short) <= wd.UDP_MAX
    parsed = DNS(short)
    assert parsed.tc == 1 and 0 < parsed.ancount < 20
    assert parsed.an[0].rdata == "fd89:0:0:1::" and parsed.an[1].rdata == "fd89:0:0:1::1"


@pytest.mark.parametrize("raw, reason", [
    (QUERY[:11], "dns.truncated"),
    (QUERY[:2] + b"\x81\x00" + QUERY[4:], "dns.not_query"),
    (QUERY[:4] + b"\x00\x00" + QUERY[6:], "dns.no_question"),
    (QUERY[:16], "dns.truncated"),
    (QUERY[:-2], "dns.truncated"),
    (QUERY[:12] + b"\xc0\x0c\x00\x01\x00\x01", "dns.bad_name"),
    (QUERY[:12] + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01", "dns.bad_name"),
    (QUERY[:12] + (b"\x3f" + b"a" * 63) * 4 + b"\x00\x00\x01\x00\x01", "dns.bad_name"),
])
def test_malformed_queries_raise_only_malformed_packet(raw, reason):
    with pytest.raises(MalformedPacket) as e:
        wd.parse_query(raw)
    assert e.value.reason == reason


@given(hs.binary(max_size=300))
def test_random_bytes_parse_or_raise_malformed(raw):
    try:
        q = wd.parse_query(raw)
    except MalformedPacket:
        return
    assert q.end <= len(raw) and len(q.name) <= 253 + 1
    ans = wd.build_answer(raw, q, wd.RCODE_NOERROR, [M2], 5)
    assert ans[:2] == raw[:2] and ans[2] & 0x80


def views() -> NameViews:
    v = NameViews(defaultdict(int))
    v.replace({"10.89.0.2": {"db": ["10.89.0.3", "fd89:0:0:1::3"], "db.back": ["10.89.0.3"]},
               M3: {"web": ["10.89.0.2"]}}, ["front", "back"])
    return v


def query(name: str, qtype: str = "A") -> bytes:
    return bytes(DNS(id=1, rd=1, qd=DNSQR(qname=name, qtype=qtype)))


def test_views_answer_per_querier_and_nxdomain_for_foreign_network_names():
    v = views()
    a = DNS(v.answer(M2, query("DB.")))
    assert a.rcode == 0 and [r.rdata for r in a.an] == ["10.89.0.3"]
    aaaa = DNS(v.answer(M2, query("db", "AAAA")))
    assert [r.rdata for r in aaaa.an] == ["fd89:0:0:1::3"]
    mx = DNS(v.answer(M2, query("db", "MX")))
    assert mx.rcode == 0 and mx.ancount == 0                 # known name, other type: NOERROR
    assert DNS(v.answer(M3, query("db.back"))).rcode == 3    # not in M3's view: NXDOMAIN
    assert DNS(v.answer(M3, query("x.y.front"))).rcode == 3
    assert v.answer(M3, query("db")) is None                 # a bare unknown name goes upstream
    assert v.answer(M3, query("example.test")) is None
    assert v.answer(M3, query("front")) is None              # the network name alone: not X.D
    assert v.answer(M2, b"\x00") is DROP
    assert v._counters == {"dns.names.answered": 3, "dns.names.nxdomain": 2, "dns.rx.drop.truncated": 1}


@pytest.mark.parametrize("bad_views, bad_domains, says", [
    ({"nonsense": {}}, [], "views.nonsense: 'nonsense' is not an IP address"),
    ({"10.89.0.2": ["db"]}, [], "views.10.89.0.2: not an object"),
    ({"10.89.0.2": {"db": ["x"]}}, [], "views.10.89.0.2.db: 'x' is not an IP address"),
    ({"10.89.0.2": {"db": "10.89.0.3"}}, [], "views.10.89.0.2.db: not a list"),
    ({"10.89.0.2": {"bad..name": []}}, [], "is not a DNS name"),
    ({"10.89.0.2": {"db": ["10.89.0.3"] * (MAX_ADDRESSES + 1)}}, [], "at most 16 addresses"),
    ({"10.89.0.2": {f"n{i}": [] for i in range(MAX_NAMES + 1)}}, [], f"more than {MAX_NAMES} names"),
    ({}, ["ok", ""], "domains: '' is not a DNS name"),
])
def test_bad_views_name_the_value_and_change_nothing(bad_views, bad_domains, says):
    v = views()
    before = (v.views, v.domains)
    with pytest.raises(ValueError, match=says.replace(".", r"\.")):
        v.replace(bad_views, bad_domains)
    assert (v.views, v.domains) == before and v.active
    v.replace({}, [])
    assert not v.active
