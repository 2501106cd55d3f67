"""proxy/dns.py and proxy/dnstcp.py without sockets: where DNS goes (the upstream list), and
DNS over TCP answered from the name views, message by message, whatever the segmentation."""

from __future__ import annotations

import random
from collections import defaultdict

from scapy.layers.dns import DNS, DNSQR

from slirpy.config import NetConfig
from slirpy.proxy import dns as dns_proxy
from slirpy.proxy import dnstcp
from slirpy.resolvconf import FALLBACK_UPSTREAM, ResolvConf
from slirpy.tcpip.stack import Stack


def test_upstreams_configured_then_resolv_conf_then_glibcs_default(tmp_path):
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 192.0.2.1\nnameserver 2001:db8::53\nnameserver 192.0.2.3\n"
                    "nameserver 192.0.2.4\n")
    resolv = ResolvConf(str(conf))
    assert dns_proxy.upstreams(("127.0.0.1", 5353), resolv) == [("127.0.0.1", 5353)]
    assert dns_proxy.upstreams(None, resolv) == [("192.0.2.1", 53), ("2001:db8::53", 53),
                                                 ("192.0.2.3", 53)]          # MAXNS, as glibc
    conf.write_text("search example\n")
    assert dns_proxy.upstreams(None, resolv) == [FALLBACK_UPSTREAM]


def test_messages_are_cut_at_their_length_prefix():
    buf = bytearray(b"\x00\x02ab\x00\x03cde\x00\x05fg")
    assert dnstcp._messages(buf) == [b"ab", b"cde"]
    assert buf == bytearray(b"\x00\x05fg")                   # the unfinished one waits


class FakeStack:
    def __init__(self):
        self.real = Stack(NetConfig(), vnet_hdr=True, offload=True, rng=random.Random(1))
        self.real.set_routed(["10.89.5.0/24"])
        self.real.set_names({"10.89.5.2": {"db": ["10.89.5.3"]}}, ["back"])
        self.calls: list[tuple] = []

    def dns_answer(self, querier, msg, limit=65535):
        return self.real.dns_answer(querier, msg, limit)

    def tcp_host_connected(self, fid, now):
        self.calls.append(("connected", fid))

    def tcp_host_data(self, fid, data, now):
        self.calls.append(("data", fid, bytes(data)))
        return False

    def tcp_host_eof(self, fid, now):
        self.calls.append(("eof", fid))


class FakeHost:
    def __init__(self):
        self.stack = FakeStack()
        self.counters: defaultdict[str, int] = defaultdict(int)
        self.flows: dict = {}
        self.flushes = 0

    def register_tcp_flow(self, fid, flow):
        self.flows[fid] = flow

    def request_flush(self):
        self.flushes += 1


def framed(name: str, qid: int) -> bytes:
    msg = bytes(DNS(id=qid, rd=1, qd=DNSQR(qname=name)))
    return len(msg).to_bytes(2, "big") + msg


def test_dns_over_tcp_is_answered_locally_message_by_message():
    host = FakeHost()
    dnstcp.serve(host, 7, "10.89.5.2", [("192.0.2.1", 53)])
    flow = host.flows[7]
    stream = framed("db", 1) + framed("web.back", 2)
    for i in range(0, len(stream), 5):                        # any segmentation
        flow.transport.write(stream[i:i + 5])
    flow.transport.write_eof()
    kinds = [c[0] for c in host.stack.calls]
    assert kinds == ["connected", "data", "data", "eof"]
    answers = [DNS(c[2][2:]) for c in host.stack.calls if c[0] == "data"]
    assert [(a.id, a.rcode, [r.rdata for r in a.an]) for a in answers] == [
        (1, 0, ["10.89.5.3"]), (2, 3, [])]
    assert all(int.from_bytes(c[2][:2], "big") == len(c[2]) - 2
               for c in host.stack.calls if c[0] == "data")
    flow.close(False)
    assert flow.transport.is_closing()
