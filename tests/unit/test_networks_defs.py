"""slirpy.networks: definitions, address picking, the nft ruleset text and the name views
(pure parts; the kernel side is tests/netns/test_networks_e2e.py)."""

from __future__ import annotations

import pytest

from slirpy.networks import defs, members, nft
from slirpy.networks.defs import DefError, new_def


def _nets(*specs: dict) -> list[defs.NetworkDef]:
    out: list[defs.NetworkDef] = []
    for kw in specs:
        out.append(new_def(existing=out, **kw))
    return out


def test_default_subnets_indexes_and_gateways() -> None:
    a, b, c = _nets({"name": "a"}, {"name": "b", "ipv6": True}, {"name": "c", "subnet": "10.89.7.0/24"})
    assert (a.index, a.subnet, a.gateway, a.bridge) == (0, "10.89.0.0/24", "10.89.0.1", "sbr0")
    assert (b.subnet, b.subnet6, b.gateway6) == ("10.89.1.0/24", "fd89::/64", "fd89::1")
    assert (c.index, c.subnet) == (2, "10.89.7.0/24")
    d = new_def("d", [a, b, c])
    assert d.subnet == "10.89.3.0/24"


@pytest.mark.parametrize("kw,usage,text", [
    ({"name": "Bad"}, True, "invalid network name 'Bad'"),
    ({"name": "x", "subnet": "10.0.2.0/25"}, False, "overlaps 10.0.2.0/24"),
    ({"name": "x", "subnet": "10.89.0.0/16"}, False, "overlaps 10.89.0.0/24 of network 'a'"),
    ({"name": "x", "subnet": "10.1.1.1/24"}, True, "invalid --subnet '10.1.1.1/24'"),
    ({"name": "x", "subnet": "10.1.0.0/29", "gateway": "10.1.0.7"}, False, "must be a host address"),
    ({"name": "x", "subnet6": "fd00:5::/64"}, True, "needs --ipv6"),
    ({"name": "x", "ipv6": True, "subnet6": "fd89::/64"}, False, "overlaps fd89::/64"),
    ({"name": "a"}, False, "already exists"),
])
def test_bad_definitions(kw: dict, usage: bool, text: str) -> None:
    existing = _nets({"name": "a", "ipv6": True})
    with pytest.raises(DefError) as e:
        new_def(existing=existing, **kw)
    assert e.value.usage is usage and text in str(e.value)


def test_pick_ip() -> None:
    (a,) = _nets({"name": "a", "ipv6": True})
    assert defs.pick_ip(a, set()) == "10.89.0.2"
    assert defs.pick_ip(a, {"10.89.0.2", "10.89.0.3"}) == "10.89.0.4"
    assert defs.pick_ip(a, set(), "10.89.0.9") == "10.89.0.9"
    assert defs.ip6_for(a, "10.89.0.9") == "fd89::9"
    for pinned, text in (("10.89.0.1", "not its gateway"), ("10.89.1.5", "must be a host address"),
                         ("10.89.0.2", "already in use")):
        with pytest.raises(DefError, match=text):
            defs.pick_ip(a, {"10.89.0.2"}, pinned)


def test_ruleset_isolation_internal_egress_ingress() -> None:
    a, b = _nets({"name": "a", "internal": True},
                 {"name": "b", "egress_deny": ["198.51.100.0/24"], "ingress_allow": ["203.0.113.0/24"]})
    text = nft.ruleset([a, b], [nft.MemberAddr("a", "10.89.0.2", None, True)])
    assert text.startswith("table inet slirpy\ndelete table inet slirpy\n")
    assert 'iifname "sbr0" oifname { "sbr1" } meta l4proto tcp counter reject with tcp reset comment "a: isolation"' in text
    assert 'iifname "sbr1" oifname { "sbr0" } counter reject with icmpx admin-prohibited comment "b: isolation"' in text
    assert 'iifname "sbr0" oifname != "sbr0" counter reject with icmpx admin-prohibited comment "a: internal"' in text
    assert 'iifname "sbr1" ip daddr { 198.51.100.0/24 } counter reject with icmpx admin-prohibited comment "b: egress-deny"' in text
    assert ('iifname "tap0" oifname "sbr1" ct state new ip saddr != { 203.0.113.0/24 } counter drop '
            'comment "b: ingress-allow"') in text
    assert 'oifname "tap0" ip daddr 10.0.2.2 ip saddr != { 10.89.0.2 } counter reject' in text
    assert 'iifname "sbr0" ip daddr 10.89.0.1 udp dport 53 dnat ip to 10.0.2.3' in text


def test_parse_rules() -> None:
    doc = {"nftables": [{"metainfo": {}}, {"table": {}},
                        {"rule": {"family": "inet", "table": "slirpy", "chain": "forward", "handle": 4,
                                  "comment": "a: isolation",
                                  "expr": [{"match": {}}, {"counter": {"packets": 3, "bytes": 180}}]}},
                        {"rule": {"family": "inet", "table": "other", "chain": "forward", "handle": 2,
                                  "comment": "not ours", "expr": []}},
                        {"rule": {"family": "bridge", "table": "slirpy", "chain": "forward", "handle": 3,
                                  "comment": "a: spoofed source",
                                  "expr": [{"counter": {"packets": 1, "bytes": 60}}]}}]}
    assert nft.parse_rules(doc) == [{"family": "inet", "chain": "forward", "handle": 4, "comment": "a: isolation",
                                     "packets": 3, "bytes": 180},
                                    {"family": "bridge", "chain": "forward", "handle": 3,
                                     "comment": "a: spoofed source", "packets": 1, "bytes": 60}]


def test_ruleset_bridge_table_keeps_anti_spoofing_between_members() -> None:
    """Bridged member<->member frames skip the inet table (the holder turns br_netfilter's
    bridge-nf-call-* off), so the one rule that applied to them lives in the bridge table."""
    a, b = _nets({"name": "a"}, {"name": "b", "ipv6": True})
    text = nft.ruleset([a, b], [])
    head, bridge = text.split("table bridge slirpy {\n")
    assert head.startswith("table inet slirpy\ndelete table inet slirpy\n"
                           "table bridge slirpy\ndelete table bridge slirpy\ntable inet slirpy {\n")
    assert "type filter hook forward priority filter; policy accept;" in bridge
    assert 'iifname "s0v*" ip saddr != 10.89.0.0/24 counter drop comment "a: spoofed source"' in bridge
    assert 'iifname "s1v*" ip saddr != 10.89.1.0/24 counter drop comment "b: spoofed source"' in bridge
    assert 'iifname "s1v*" ip6 saddr != fd89::/64 counter drop comment "b: spoofed source"' in bridge
    assert "ct " not in bridge and "ip6 saddr" not in bridge.split("s1v*")[0]
    # routed traffic from a bridge keeps the inet rule
    assert 'iifname "sbr0" ip saddr != 10.89.0.0/24 counter drop comment "a: spoofed source"' in head


def test_name_views() -> None:
    a, b = _nets({"name": "a", "ipv6": True}, {"name": "b"})
    web = members.Member("web", 1, {"a": {"ip": "10.89.0.2", "ip6": "fd89::2", "aliases": ["www"]}})
    db = members.Member("DB", 2, {"a": {"ip": "10.89.0.3", "ip6": "fd89::3"}, "b": {"ip": "10.89.1.2"}})
    cli = members.Member("cli", 3, {"b": {"ip": "10.89.1.3"}})
    views, domains = members.name_views([web, db, cli], [a, b])
    assert domains == ["a", "b"]
    assert views["10.89.0.2"]["www"] == ["10.89.0.2", "fd89::2"]
    assert views["10.89.0.2"]["db.a"] == ["10.89.0.3", "fd89::3"]
    assert views["fd89::2"] is views["10.89.0.2"]
    assert views["10.89.1.3"]["db"] == ["10.89.1.2"]           # db's address on b only
    assert "web" not in views["10.89.1.3"] and "web.a" not in views["10.89.1.3"]
    assert views["10.89.1.2"]["web"] == ["10.89.0.2", "fd89::2"]  # db is on both
    assert members.routed([a, b]) == ["10.89.0.0/24", "10.89.1.0/24", "fd89::/64"]
