"""fwd.py: the forwarding decisions, the errno -> ICMP table, and the (empty) policy hook."""

from __future__ import annotations

import random
from collections import defaultdict

from slirpy.config import NetConfig
from slirpy.tcpip import fwd
from slirpy.tcpip.wire import icmp
from slirpy.tcpip.wire.ipv4 import PROTO_ICMP, PROTO_TCP, PROTO_UDP

GUEST = bytes([10, 0, 2, 100])
GW = bytes([10, 0, 2, 2])
DNS = bytes([10, 0, 2, 3])
REMOTE = bytes([203, 0, 113, 1])


def forwarder(**kw) -> fwd.Forwarder:
    return fwd.Forwarder(NetConfig().replace(**kw), defaultdict(int), random.Random(0))


def test_outbound_targets():
    f = forwarder()
    assert f.rules == []
    assert f.outbound(PROTO_TCP, GUEST, REMOTE, 80) == fwd.Verdict("203.0.113.1")
    assert f.outbound(PROTO_UDP, GUEST, DNS, 53) == fwd.Verdict(fwd.DNS_UPSTREAM, dns=True)
    assert f.outbound(PROTO_TCP, GUEST, DNS, 53).dns
    assert forwarder(allow_host_loopback=True).outbound(PROTO_TCP, GUEST, GW, 22).host == "127.0.0.1"


def test_outbound_refusals_and_replies():
    f = forwarder()
    assert f.outbound(PROTO_TCP, GUEST, GW, 22) == fwd.Verdict(None, "host_loopback_denied",
                                                             fwd.REPLY_NET_UNREACH)
    assert f.outbound(PROTO_UDP, GUEST, GW, 9) == fwd.Verdict(None, "host_loopback_denied",
                                                            fwd.REPLY_NET_UNREACH)
    assert f.outbound(PROTO_UDP, GUEST, DNS, 9) == fwd.Verdict(None, "local_network",
                                                             fwd.REPLY_PORT_UNREACH)
    assert (fwd.net_unreach_code(False), fwd.net_unreach_code(True)) == (0, 0)
    assert f.outbound(PROTO_UDP, GUEST, bytes([10, 0, 2, 7]), 9) == fwd.Verdict(None, "local_network")
    assert f.outbound(PROTO_ICMP, GUEST, bytes([127, 0, 0, 1]), 0) == fwd.Verdict(None, "martian_dst")
    off = forwarder(dns_enabled=False)
    assert off.outbound(PROTO_UDP, GUEST, DNS, 53) == fwd.Verdict(None, "dns_disabled", fwd.REPLY_PORT_UNREACH)
    assert off.outbound(PROTO_TCP, GUEST, DNS, 53) == fwd.Verdict(None, "local_network", fwd.REPLY_RST)


def test_policy_rules_are_evaluated_first_in_order():
    f = forwarder()
    seen = []

    def log(proto, src, dst, dport):
        seen.append((proto, dport))
        return None

    def deny_80(proto, src, dst, dport):
        return fwd.Verdict(None, "policy", fwd.REPLY_RST) if dport == 80 else None

    f.rules += [log, deny_80]
    assert f.outbound(PROTO_TCP, GUEST, REMOTE, 80) == fwd.Verdict(None, "policy", fwd.REPLY_RST)
    assert f.outbound(PROTO_TCP, GUEST, REMOTE, 443).host == "203.0.113.1"
    assert seen == [(PROTO_TCP, 80), (PROTO_TCP, 443)]


def test_inbound_source():
    f = forwarder()
    assert f.inbound_source("198.51.100.7") == bytes([198, 51, 100, 7])
    assert f.inbound_source("::ffff:198.51.100.7") == bytes([198, 51, 100, 7])
    for client in ("127.0.0.1", "::1", "10.0.2.9", "224.0.0.1", "0.0.0.0", "fe80::1%eth0", "junk"):
        assert f.inbound_source(client) == GW, client


def test_errno_table():
    assert fwd.connect_failure(fwd.ECONNREFUSED) is None
    assert fwd.connect_failure(fwd.EMFILE) is None
    assert fwd.connect_failure(fwd.ENETUNREACH) == icmp.UNREACH_NET
    assert fwd.connect_failure(fwd.EACCES) == icmp.UNREACH_ADMIN
    assert fwd.connect_failure(fwd.ETIMEDOUT) == icmp.UNREACH_HOST
    assert fwd.datagram_unreach_code(fwd.ECONNREFUSED) == icmp.UNREACH_PORT
    assert fwd.datagram_unreach_code(fwd.EACCES) is None
    assert fwd.echo_unreach_code(fwd.EHOSTUNREACH) == icmp.UNREACH_HOST
    assert fwd.echo_unreach_code(fwd.ECONNREFUSED) is None
    assert not fwd.ports_valid(0, 80) and not fwd.ports_valid(80, 65536) and fwd.ports_valid(1, 65535)


# ------------------------------------------------------------------ IPv6

def p6(text: str) -> bytes:
    import ipaddress
    return ipaddress.IPv6Address(text).packed


GUEST6, GW6, DNS6, REMOTE6 = p6("fd00::100"), p6("fd00::2"), p6("fd00::3"), p6("2001:db8::1")


def test_outbound_ipv6_targets_and_refusals():
    from slirpy.tcpip.wire.ipv6 import PROTO_ICMPV6
    f = forwarder()
    assert f.outbound(PROTO_TCP, GUEST6, REMOTE6, 80) == fwd.Verdict("2001:db8::1")
    assert f.outbound(PROTO_UDP, GUEST6, DNS6, 53) == fwd.Verdict(fwd.DNS_UPSTREAM, dns=True)
    assert f.outbound(PROTO_TCP, GUEST6, GW6, 22) == fwd.Verdict(None, "host_loopback_denied",
                                                                 fwd.REPLY_NET_UNREACH)
    assert forwarder(allow_host_loopback=True).outbound(PROTO_TCP, GUEST6, GW6, 22).host == "::1"
    assert f.outbound(PROTO_UDP, GUEST6, DNS6, 9) == fwd.Verdict(None, "local_network",
                                                                fwd.REPLY_PORT_UNREACH)
    assert f.outbound(PROTO_UDP, GUEST6, p6("fd00::9"), 9) == fwd.Verdict(None, "local_network")
    for martian in ("::1", "::", "ff02::1", "fe80::1", "::ffff:203.0.113.1", "fec0::1", "::1.2.3.4"):
        assert f.outbound(PROTO_ICMPV6, GUEST6, p6(martian), 0) == fwd.Verdict(None, "martian_dst")
    assert f.outbound(PROTO_ICMPV6, GUEST6, DNS6, 53).why == "local_network"    # echo is no DNS
    assert f.in_network(GUEST6) and f.in_network(GUEST) and not f.in_network(REMOTE6)
    assert not f.in_network(bytes(12) + GUEST)       # 16 bytes whose tail is an IPv4 in-network
    off = forwarder(network6=None)
    assert off.outbound(PROTO_TCP, GUEST6, REMOTE6, 80) == fwd.Verdict(None, "martian_dst")


def test_inbound_guest_and_source_per_family():
    f = forwarder()
    assert f.inbound_guest("2001:db8::7") == GUEST6
    assert f.inbound_guest("::1") == GUEST6 and f.inbound_guest("fe80::1%lo") == GUEST6
    assert f.inbound_guest("198.51.100.7") == GUEST and f.inbound_guest("::ffff:1.2.3.4") == GUEST
    assert f.inbound_guest("junk") == GUEST
    assert f.inbound_guest("2001:db8::7", GUEST) == GUEST
    assert f.inbound_guest("198.51.100.7", GUEST6) == GUEST6
    assert forwarder(network6=None).inbound_guest("2001:db8::7") == GUEST
    assert forwarder(network6=None).inbound_guest("2001:db8::7", GUEST6) is None
    assert f.inbound_source("2001:db8::7", GUEST6) == p6("2001:db8::7")
    for client in ("::1", "fe80::1%eth0", "fd00::5", "ff02::1", "::", "198.51.100.7", "junk"):
        assert f.inbound_source(client, GUEST6) == GW6, client
    assert f.inbound_source("2001:db8::7") == GW               # the guest's IPv4 side
    key = f.inbound_key("::1", 4000, 80, {}, "tcp", guest_ip=GUEST6)
    assert key == (GUEST6, 80, GW6, 4000)


def test_errno_table_per_family():
    assert fwd.connect_failure(fwd.ENETUNREACH, True) == 0           # no route
    assert fwd.connect_failure(fwd.EHOSTUNREACH, True) == 3          # address unreachable
    assert fwd.connect_failure(fwd.EACCES, True) == 1                # administratively prohibited
    assert fwd.connect_failure(fwd.ETIMEDOUT, True) == 3
    assert fwd.connect_failure(fwd.EAFNOSUPPORT, True) == 0
    assert fwd.connect_failure(fwd.EADDRNOTAVAIL, True) == 0
    assert fwd.connect_failure(fwd.EADDRNOTAVAIL) is None             # IPv4: a shortage of ours
    assert fwd.connect_failure(fwd.EMFILE, True) is None
    assert fwd.connect_failure(fwd.ECONNREFUSED, True) is None
    assert fwd.datagram_unreach_code(fwd.ECONNREFUSED, True) == 4
    assert fwd.datagram_unreach_code(fwd.EADDRNOTAVAIL, True) == 0
    assert fwd.datagram_unreach_code(fwd.EADDRNOTAVAIL) is None
    assert fwd.echo_unreach_code(fwd.EAFNOSUPPORT, True) == 0
    assert fwd.echo_unreach_code(fwd.EHOSTUNREACH, True) == 3
