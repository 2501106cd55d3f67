"""Datagram flows count payload bytes each way (beside datagrams): the rows of the API's
`flows` request carry them, and `slirpy flows --watch` turns them into rates."""

from __future__ import annotations

from tests.unit.test_stack_udp import echo, events, guest_udp, make_stack, open_flow, out, wire


def test_udp_flow_counts_payload_bytes_both_ways():
    s = make_stack()
    ev = open_flow(s, payload=b"x" * 100)
    s.receive_frame(wire(s, guest_udp(b"y" * 20)), 0.1)
    s.udp_host_datagram(ev.flow_id, b"z" * 333, 0.2)
    s.udp_host_datagram(ev.flow_id, b"", 0.3)
    assert len(out(s)) == 2
    [flow] = s.udp_flows()
    assert (flow.datagrams_in, flow.datagrams_out) == (2, 2)
    assert (flow.bytes_in, flow.bytes_out) == (120, 333)


def test_echo_flow_counts_its_data_bytes_both_ways():
    s = make_stack()
    s.receive_frame(wire(s, echo(payload=b"p" * 56)), 0.0)
    ev_open, _ = events(s)
    s.icmp_host_echo_reply(ev_open.flow_id, 1, b"p" * 56, 57, 0.01)
    s.receive_frame(wire(s, echo(seq=2, payload=b"q" * 8)), 1.0)
    [flow] = s.echo_flows()
    assert (flow.datagrams_in, flow.datagrams_out) == (2, 1)
    assert (flow.bytes_in, flow.bytes_out) == (64, 56)


def test_ipv6_echo_flow_counts_its_data_bytes_both_ways():
    from tests.unit import test_stack_ipv6_udp as v6

    s = v6.make_stack()
    v6.ready(s)
    s.receive_frame(v6.wire(s, v6.echo(data=b"p" * 40)), 1.0)
    opened, _ = v6.events(s)
    s.icmp_host_echo_reply(opened.flow_id, 1, b"p" * 40, 50, 1.1)
    [flow] = s.echo_flows()
    assert (flow.datagrams_in, flow.datagrams_out) == (1, 1)
    assert (flow.bytes_in, flow.bytes_out) == (40, 40)
