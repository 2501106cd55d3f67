"""Stack: frames in, frames/events/counters out. No sockets, no clock: explicit `now`."""

from __future__ import annotations

import random

import pytest
from scapy.layers.inet import ICMP, IP, TCP, IPerror, TCPerror
from scapy.layers.l2 import ARP, Ether

from slirpy.config import NetConfig
from slirpy.tcpip import stack as st
from slirpy.tcpip.checksum import pseudo_header_sum, sum16
from slirpy.tcpip.wire.virtio import F_NEEDS_CSUM, GSO_NONE, GSO_TCPV4, VNET_HDR, VNET_HDR_LEN

GUEST_MAC = "02:00:00:00:00:64"
GW_MAC = "52:55:0a:00:02:02"
GUEST = "10.0.2.100"
GW = "10.0.2.2"
REMOTE = "203.0.113.1"


def make_stack(vnet=True, offload=True, **cfg) -> st.Stack:
    return st.Stack(NetConfig(**cfg), vnet_hdr=vnet, offload=offload, rng=random.Random(1))


def wire(stack: st.Stack, pkt) -> bytes:
    raw = bytes(pkt)
    return (bytes(VNET_HDR_LEN) + raw) if stack.vnet_hdr else raw


def flat(frame) -> bytes:
    return frame if isinstance(frame, bytes) else b"".join(bytes(p) for p in frame)


def out_frames(stack: st.Stack, now: float = 0.0) -> list[tuple[tuple, Ether]]:
    """Frames the stack emits, as (virtio header fields or None, scapy packet)."""
    res = []
    for f in stack.frames_to_send(now):
        raw = flat(f)
        if stack.vnet_hdr:
            res.append((VNET_HDR.unpack_from(raw, 0), Ether(raw[VNET_HDR_LEN:])))
        else:
            res.append((None, Ether(raw)))
    return res


def events(stack: st.Stack) -> list:
    evs = []
    while (ev := stack.next_event()) is not None:
        evs.append(ev)
    return evs


def guest_tcp(dst=REMOTE, sport=40000, dport=80, **kw):
    return Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src=GUEST, dst=dst) / TCP(sport=sport, dport=dport, **kw)


def test_arp_request_for_gateway_and_dns_is_answered():
    s = make_stack()
    for target, mac in ((GW, "52:55:0a:00:02:02"), ("10.0.2.3", "52:55:0a:00:02:03")):
        s.receive_frame(wire(s, Ether(src=GUEST_MAC, dst="ff:ff:ff:ff:ff:ff") /
                             ARP(op=1, hwsrc=GUEST_MAC, psrc=GUEST, pdst=target)), 0.0)
        [(vh, reply)] = out_frames(s)
        assert vh == (0, 0, 0, 0, 0, 0, 0)
        assert reply[Ether].dst == GUEST_MAC and reply[Ether].src == mac
        assert reply[ARP].op == 2 and reply[ARP].psrc == target and reply[ARP].hwsrc == mac
        assert reply[ARP].pdst == GUEST and reply[ARP].hwdst == GUEST_MAC
    assert s.counters["arp.tx.reply"] == 2


def test_arp_for_other_addresses_is_ignored():
    s = make_stack()
    s.receive_frame(wire(s, Ether(src=GUEST_MAC, dst="ff:ff:ff:ff:ff:ff") /
                         ARP(op=1, hwsrc=GUEST_MAC, psrc=GUEST, pdst="10.0.2.77")), 0.0)
    assert out_frames(s) == []
    assert s.counters["arp.rx.ignored"] == 1


@pytest.mark.parametrize("vnet", [True, False])
def test_ping_gateway_is_answered_by_the_stack(vnet):
    s = make_stack(vnet=vnet, offload=vnet)
    req = Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src=GUEST, dst=GW) / ICMP(id=0x1234, seq=7) / (b"x" * 56)
    s.receive_frame(wire(s, req), 0.0)
    [(_, reply)] = out_frames(s)
    assert reply[IP].src == GW and reply[IP].dst == GUEST
    assert reply[ICMP].type == 0 and reply[ICMP].id == 0x1234 and reply[ICMP].seq == 7
    assert bytes(reply[ICMP].payload) == b"x" * 56
    raw_ip = bytes(reply[IP])
    assert sum16(raw_ip[:20]) == 0xFFFF
    assert sum16(raw_ip[20:]) == 0xFFFF
    assert s.counters["icmp.tx.echo_reply"] == 1


@pytest.mark.parametrize("raw, counter", [
    (b"\x00" * 5, "rx.drop.eth.short"),
    (bytes(Ether(src=GUEST_MAC, dst=GW_MAC, type=0x0800)) + b"\x45\x00", "rx.drop.ipv4.short"),
    (bytes(Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src=GUEST, dst=REMOTE, ihl=15) / b"abcd"),
     "rx.drop.ipv4.bad_ihl"),
    (bytes(Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src=GUEST, dst=REMOTE, chksum=0x1234) / TCP()),
     "rx.drop.ipv4.bad_checksum"),
    (bytes(Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src=GUEST, dst=REMOTE, flags="MF") / TCP()),
     "ipv4.rx.drop.fragment"),
    (bytes(Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src="192.0.2.9", dst=REMOTE) / TCP()),
     "ipv4.rx.drop.bad_src"),
    (bytes(Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src=GUEST, dst=REMOTE) / TCP(dataofs=3)),
     "rx.drop.tcp.bad_data_offset"),
    (bytes(Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src=GUEST, dst=REMOTE) / TCP(chksum=1)),
     "rx.drop.tcp.bad_checksum"),
    (bytes(Ether(src=GUEST_MAC, dst=GW_MAC, type=0x88B5) / (b"x" * 50)), "rx.drop.ethertype"),
])
def test_malformed_frames_are_counted_and_dropped(raw, counter):
    s = make_stack(vnet=False, offload=False)
    s.receive_frame(raw, 0.0)
    assert s.counters[counter] == 1
    assert s.counters["rx.frames"] == 1
    assert events(s) == []


def test_vnet_frame_shorter_than_its_header_is_counted():
    s = make_stack()
    s.receive_frame(b"\x00" * 7, 0.0)
    assert s.counters["rx.drop.virtio.short"] == 1


def _open(s: st.Stack, dst=REMOTE, dport=80, seq=1000, now=0.0):
    s.receive_frame(wire(s, guest_tcp(dst=dst, dport=dport, flags="S", seq=seq,
                                      options=[("MSS", 1460), ("WScale", 7)])), now)


def _established(s: st.Stack, sport=40000, window=65535) -> tuple[int, int]:
    """A guest flow from `sport` to REMOTE:80 through the handshake: (flow id, our ISS)."""
    s.receive_frame(wire(s, guest_tcp(sport=sport, flags="S", seq=1000,
                                      options=[("MSS", 1460), ("WScale", 7)])), 0.0)
    [ev] = events(s)
    s.tcp_host_connected(ev.flow_id, 0.0)
    [(_, synack)] = out_frames(s)
    iss = synack[TCP].seq
    s.receive_frame(wire(s, guest_tcp(sport=sport, flags="A", seq=1001, ack=iss + 1,
                                      window=window)), 0.0)
    out_frames(s)
    return ev.flow_id, iss


def test_syn_asks_the_runtime_to_connect_and_syn_ack_waits_for_it():
    s = make_stack()
    _open(s)
    assert out_frames(s) == []           # nothing before the host connect succeeded
    [ev] = events(s)
    assert isinstance(ev, st.TcpConnectRequested)
    assert (ev.host, ev.port, ev.guest, ev.guest_port) == (REMOTE, 80, GUEST, 40000)
    assert s.half_open == 1
    s.tcp_host_connected(ev.flow_id, 0.01)
    [(vh, synack)] = out_frames(s, 0.01)
    t = synack[TCP]
    assert t.flags == "SA" and t.ack == 1001
    assert synack[IP].src == REMOTE and synack[IP].dst == GUEST and t.sport == 80 and t.dport == 40000
    assert dict(t.options)["MSS"] == 65520 - 40
    assert "WScale" in dict(t.options)
    # offloaded checksum: NEEDS_CSUM and only the pseudo-header sum in the field
    assert vh[0] == F_NEEDS_CSUM and vh[1] == GSO_NONE and vh[4] == 34 and vh[5] == 16
    tcp_len = len(bytes(synack[TCP]))
    assert t.chksum == pseudo_header_sum(bytes([203, 0, 113, 1]), bytes([10, 0, 2, 100]), 6, tcp_len)
    # the guest completes the handshake and sends data
    s.receive_frame(wire(s, guest_tcp(flags="A", seq=1001, ack=t.seq + 1, window=512) / b"hello"), 0.02)
    out_frames(s, 0.02)
    evs = events(s)
    assert [type(e) for e in evs] == [st.TcpDataReceived]
    assert bytes(evs[0].data) == b"hello"
    assert s.half_open == 0
    assert s.counters["tcp.flows.established"] == 1


def test_host_data_leaves_as_one_gso_super_frame():
    s = make_stack()
    flow_id, _ = _established(s)
    data = random.Random(3).randbytes(50000)
    s.tcp_host_data(flow_id, data, 0.0)
    frames = out_frames(s)
    payload = b"".join(bytes(p[TCP].payload) for _, p in frames)
    assert payload == data[:len(payload)] and len(payload) > 1460
    vh, first = frames[0]
    assert vh[0] == F_NEEDS_CSUM and vh[1] == GSO_TCPV4 and vh[3] == 1460   # gso_size = guest MSS
    assert vh[2] == 14 + 20 + len(bytes(first[TCP])) - len(bytes(first[TCP].payload))  # hdr_len
    assert s.counters["tcp.tx.gso_frames"] >= 1


@pytest.mark.parametrize("offload", [True, False])
def test_a_segment_spanning_host_reads_leaves_without_a_copy(offload):
    s = make_stack(vnet=offload, offload=offload, mtu=1500 if not offload else 65520)
    flow_id, _ = _established(s)
    reads = [random.Random(i).randbytes(n) for i, n in enumerate((5000, 7000))]
    for r in reads:
        s.tcp_host_data(flow_id, r, 0.0)
    raw = s.frames_to_send(0.0)
    if offload:
        # one GSO frame: its header, then views of both host reads as they are (os.writev parts)
        [frame] = raw
        assert type(frame) is tuple and len(frame) == 3
        assert [p.obj for p in frame[1:]] == reads
    pkts = [Ether(flat(f)[VNET_HDR_LEN if offload else 0:]) for f in raw]
    assert b"".join(bytes(p[TCP].payload) for p in pkts) == b"".join(reads)
    if not offload:                                  # full checksums over the joined bytes
        for p in pkts:
            assert IP(bytes(p[IP])).chksum == p[IP].chksum
            again = IP(bytes(p[IP]))
            del again[TCP].chksum
            assert IP(bytes(again))[TCP].chksum == p[TCP].chksum


def test_a_request_ack_rides_on_the_answer_or_leaves_when_the_delay_is_up():
    s = make_stack()
    flow_id, iss = _established(s)
    # request 1: no pure ACK; the host's answer carries it
    s.receive_frame(wire(s, guest_tcp(flags="PA", seq=1001, ack=iss + 1, window=65535) / b"GET"), 1.0)
    assert out_frames(s, 1.0) == []
    assert [bytes(e.data) for e in events(s)] == [b"GET"]
    assert s.next_deadline() == pytest.approx(1.0 + s.limits.tcp_ack_delay)
    s.tcp_host_data(flow_id, b"OK", 1.0002)
    [(_, answer)] = out_frames(s, 1.0002)
    assert bytes(answer[TCP].payload) == b"OK" and answer[TCP].ack == 1004
    # request 2: the host stays silent, so the ACK leaves on its own when the timer fires
    s.receive_frame(wire(s, guest_tcp(flags="PA", seq=1004, ack=iss + 3, window=65535) / b"MORE"), 2.0)
    assert out_frames(s, 2.0) == []
    due = s.next_deadline()
    assert due == pytest.approx(2.0 + s.limits.tcp_ack_delay)
    s.handle_timer(due)
    [(_, ack)] = out_frames(s, due)
    assert ack[TCP].flags == "A" and ack[TCP].ack == 1008 and not bytes(ack[TCP].payload)


def test_without_offload_segments_fit_the_mss_and_carry_full_checksums():
    s = make_stack(vnet=False, offload=False, mtu=1500)
    _open(s)
    [ev] = events(s)
    s.tcp_host_connected(ev.flow_id, 0.0)
    [(_, synack)] = out_frames(s)
    assert dict(synack[TCP].options)["MSS"] == 1460
    s.receive_frame(wire(s, guest_tcp(flags="A", seq=1001, ack=synack[TCP].seq + 1, window=65535)), 0.0)
    out_frames(s)
    s.tcp_host_data(ev.flow_id, bytes(5000), 0.0)
    frames = out_frames(s)
    assert frames and all(len(bytes(p[TCP].payload)) <= 1460 for _, p in frames)
    for _, p in frames:
        raw = bytes(p[IP])
        assert sum16(raw[20:], pseudo_header_sum(raw[12:16], raw[16:20], 6, len(raw) - 20)) == 0xFFFF


def test_gateway_is_host_loopback_only_when_allowed():
    s = make_stack()
    _open(s, dst=GW)
    [(_, err)] = out_frames(s)        # net unreachable quoting the SYN, as libslirp
    assert (err[ICMP].type, err[ICMP].code) == (3, 0) and err[IP].src == GW
    assert err[IPerror].dst == GW and err[TCPerror].flags == "S" and err[TCPerror].seq == 1000
    assert events(s) == [] and s.counters["icmp.tx.error"] == 1
    assert s.counters["tcp.rx.drop.host_loopback_denied"] == 1

    s = make_stack(allow_host_loopback=True)
    _open(s, dst=GW)
    [ev] = events(s)
    assert ev.host == "127.0.0.1" and ev.port == 80


@pytest.mark.parametrize("dst, reason", [
    ("127.0.0.1", "martian_dst"), ("224.0.0.1", "martian_dst"), ("10.0.2.77", "local_network"),
])
def test_no_other_address_reaches_host_loopback_or_the_local_net(dst, reason):
    s = make_stack()
    _open(s, dst=dst)
    assert events(s) == []
    assert s.counters["tcp.rx.drop." + reason] == 1


def test_refused_connect_becomes_rst_and_unreachable_becomes_icmp():
    s = make_stack()
    _open(s)
    [ev] = events(s)
    s.tcp_host_connect_failed(ev.flow_id, st.ECONNREFUSED, 0.0)
    [(_, rst)] = out_frames(s)
    assert rst[TCP].flags == "RA" and rst[TCP].ack == 1001
    assert [type(e) for e in events(s)] == [st.TcpFlowClosed]
    assert s.flows() == [] and s.half_open == 0

    _open(s, dport=81)
    [ev] = events(s)
    s.tcp_host_connect_failed(ev.flow_id, st.EHOSTUNREACH, 0.0)
    [(_, err)] = out_frames(s)
    assert err[ICMP].type == 3 and err[ICMP].code == 1 and err[IP].src == GW
    assert err[IPerror].dst == REMOTE and err[TCPerror].dport == 81 and err[TCPerror].seq == 1000
    assert [type(e) for e in events(s)] == [st.TcpFlowClosed]
    assert s.flows() == []


def test_segment_without_a_flow_is_answered_with_rst():
    s = make_stack()
    s.receive_frame(wire(s, guest_tcp(flags="A", seq=5, ack=777)), 0.0)
    [(_, rst)] = out_frames(s)
    assert rst[TCP].flags == "R" and rst[TCP].seq == 777
    assert s.counters["tcp.rx.no_flow"] == 1


def test_half_open_limit_resets_new_syns():
    from slirpy.config import Limits
    s = make_stack(limits=Limits(max_half_open=2))
    for port in (1, 2, 3):
        _open(s, dport=port)
    assert len(events(s)) == 2
    assert s.counters["tcp.rx.drop.half_open_limit"] == 1
    frames = out_frames(s)
    assert len(frames) == 1 and frames[0][1][TCP].flags == "RA"


def test_host_read_pauses_when_the_guest_queue_is_full_and_resumes_after_acks():
    from slirpy.config import Limits
    s = make_stack(limits=Limits(tcp_snd_buf=100_000))
    flow_id, iss = _established(s)
    assert s.tcp_host_data(flow_id, bytes(120_000), 0.0) is True     # stop reading at once
    assert st.TcpHostReadPaused(flow_id, True) in events(s)
    acked = 0
    resumed = False
    for _ in range(50):                  # the guest acknowledges whatever arrives
        acked += sum(len(bytes(p[TCP].payload)) for _, p in out_frames(s))
        s.receive_frame(wire(s, guest_tcp(flags="A", seq=1001, ack=iss + 1 + acked, window=65535)), 0.0)
        if st.TcpHostReadPaused(flow_id, False) in events(s):
            resumed = True
            break
    assert resumed
    # resumed only once at most half of the limit is still queued
    assert s.flows()[0].conn.send_buffered <= 50_000
    assert 120_000 - acked <= 50_000


def test_many_busy_flows_share_one_host_to_guest_budget():
    from slirpy.config import Limits
    s = make_stack(limits=Limits(tcp_snd_buf=1 << 20, tcp_snd_buf_total=1 << 20))
    flows = []
    for i in range(4):
        flows.append(_established(s, sport=40000 + i, window=0)[0])
    assert s.snd_share() == 1 << 20                  # nothing queued yet: the whole per-flow cap
    # the guest's window is closed, so everything stays queued
    assert s.tcp_host_data(flows[0], bytes(300_000), 0.0) is False
    assert s.snd_share() == 1 << 20 and events(s) == []
    s.tcp_host_data(flows[1], bytes(300_000), 0.0)
    assert s.snd_share() == 1 << 19 and events(s) == []   # 2 flows hold data: half each
    s.tcp_host_data(flows[2], bytes(300_000), 0.0)
    # three flows: a share of 349,525 bytes; the next read of flow 0 passes it and pauses it
    assert s.snd_share() == (1 << 20) // 3
    assert s.tcp_host_data(flows[0], bytes(60_000), 0.0) is True
    assert events(s) == [st.TcpHostReadPaused(flows[0], True)]
    assert s.snd_queued == 960_000
    # a flow that closes gives its share back
    s.receive_frame(wire(s, guest_tcp(sport=40001, flags="R", seq=1001)), 0.0)
    out_frames(s)
    assert s.snd_queued == 660_000 and s.snd_share() == 1 << 19
    # the share never falls below 64 KiB, however many flows hold data
    assert make_stack(limits=Limits(tcp_snd_buf_total=1)).snd_share() == 64 << 10


def test_host_reads_stop_at_the_total_budget_and_are_sized_by_the_share_left():
    from slirpy.config import Limits
    s = make_stack(limits=Limits(tcp_snd_buf=1 << 20, tcp_snd_buf_total=1 << 20))
    a = _established(s, sport=40000, window=0)[0]
    b = _established(s, sport=40001, window=0)[0]
    c = _established(s, sport=40002, window=0)[0]
    assert s.tcp_host_allowance(a) == 1 << 20            # nothing queued: the whole share
    assert s.tcp_host_data(a, bytes(900_000), 0.0) is False
    assert s.tcp_host_allowance(a) == (1 << 20) - 900_000
    # b's 160,000 bytes are well under its share (half the budget), but the total is reached
    assert s.tcp_host_data(b, bytes(160_000), 0.0) is True
    assert events(s) == [st.TcpHostReadPaused(b, True)]
    assert s.snd_queued == 1_060_000
    # a is over its share now; its next read may still take the minimum, so it always moves
    assert s.snd_share() == 1 << 19
    assert s.tcp_host_allowance(a) == 16 << 10
    # c holds nothing and its share is half the budget, but past the total a read takes 64 KiB
    assert s.tcp_host_allowance(c) == 64 << 10
    assert s.tcp_host_allowance(12345) == 16 << 10       # unknown flow: the minimum


def _send_guest_data(s: st.Stack, sport: int, seq: int, iss: int, n: int, now: float) -> int:
    """The guest sends n bytes at `seq` on its flow from `sport`; returns the window we then
    advertise past the ACK, in bytes (our scale read from the SYN-ACK is 5 for 1 MiB)."""
    s.receive_frame(wire(s, guest_tcp(sport=sport, flags="PA", seq=seq, ack=iss + 1, window=65535)
                         / bytes(n)), now)
    [(_, ack)] = [f for f in out_frames(s, now) if f[1][TCP].dport == sport]
    assert sum(len(e.data) for e in events(s)) == n
    assert ack[TCP].ack == seq + n
    return ack[TCP].window << 5


def test_flows_bringing_data_share_one_receive_window_budget():
    from slirpy.config import Limits
    s = make_stack(limits=Limits(tcp_rcv_buf=1 << 20, tcp_rcv_buf_total=1 << 20, tcp_ack_delay=0))
    flows = [_established(s, sport=40000 + i) for i in range(4)]
    seq = {40000 + i: 1001 for i in range(4)}

    def send(sport, n, now):
        _, iss = flows[sport - 40000]
        wnd = _send_guest_data(s, sport, seq[sport], iss, n, now)
        seq[sport] += n
        return wnd

    assert s.rcv_share == 1 << 20
    assert send(40000, 1000, 0.0) == 1 << 20          # alone: the whole rcv_buf
    for sport in seq:                                 # then all four bring data in one epoch
        send(sport, 1000, 0.01)
    assert s.rcv_share == 1 << 20                     # counted when the epoch ends ...
    wnd = send(40001, 1000, 0.06)
    assert s.rcv_share == 1 << 18                     # ... a quarter each
    # the edge already offered stays (never pulled left; the field rounds up to the scale) ...
    assert (1 << 20) - 1000 <= wnd < (1 << 20) - 1000 + 32
    wnds = []
    while wnd > 1 << 18:                              # ... and the window narrows as data arrives
        wnd = send(40001, 60000, 0.07)
        wnds.append(wnd)
    assert wnds == sorted(wnds, reverse=True) and len(wnds) == 14
    assert send(40001, 60000, 0.07) == 1 << 18        # past the old edge: the share
    # a flow opened now starts with the share
    new, iss = _established(s, sport=40009)
    assert _send_guest_data(s, 40009, 1001, iss, 500, 0.08) == 1 << 18
    # the others fall silent: one flow alone gets the whole rcv_buf back an epoch later
    send(40002, 1000, 0.2)
    assert s.rcv_share == (1 << 20) // 3               # 40001, 40009, 40002 brought data since
    send(40002, 1000, 0.3)
    assert s.rcv_share == 1 << 20
    assert send(40002, 1000, 0.31) == 1 << 20
    # however many flows bring data, a window holds two 64 KiB super-frames at least
    t = make_stack(limits=Limits(tcp_rcv_buf_total=1, tcp_ack_delay=0))
    _, iss = _established(t)
    _send_guest_data(t, 40000, 1001, iss, 10, 0.0)
    assert t.rcv_share == 128 << 10


def test_timer_drives_syn_ack_retransmission():
    s = make_stack()
    _open(s)
    [ev] = events(s)
    s.tcp_host_connected(ev.flow_id, 0.0)
    [(_, first)] = out_frames(s)
    deadline = s.next_deadline()
    assert deadline is not None and deadline > 0.0
    s.handle_timer(deadline)
    [(_, again)] = out_frames(s, deadline)
    assert again[TCP].flags == "SA" and again[TCP].seq == first[TCP].seq


def _to_time_wait(s: st.Stack, fid: int, iss: int, sport: int = 40000, now: float = 0.0) -> list:
    """The host closes first (our FIN), the guest acknowledges it with its own FIN: the flow
    ends in TIME-WAIT on our side, and its host socket is closed at once (both ways are
    finished: the guest's EOF goes on first). Returns those events."""
    s.tcp_host_eof(fid, now)
    [(_, fin)] = out_frames(s, now)
    assert fin[TCP].flags.F and fin[TCP].seq == iss + 1
    s.receive_frame(wire(s, guest_tcp(sport=sport, flags="FA", seq=1001, ack=iss + 2)), now)
    out_frames(s, now)
    evs = events(s)
    assert evs == [st.TcpEofReceived(fid), st.TcpFlowClosed(fid, False)]
    assert s.table.tcp_by_id[fid].conn.state.name == "TIME_WAIT"
    return evs


def test_a_new_syn_on_a_time_wait_tuple_opens_a_new_flow():
    """A guest that reuses its source port at once (it closed second, so it has no TIME-WAIT
    of its own) replaces our TIME-WAIT flow. The old flow's host socket was closed when it
    went into TIME-WAIT (issue 13 was one leaked fd per reuse): no second close for it."""
    s = make_stack()
    fid, iss = _established(s)
    _to_time_wait(s, fid, iss)
    s.receive_frame(wire(s, guest_tcp(flags="S", seq=5000, options=[("MSS", 1460)])), 0.5)
    [ev] = events(s)
    assert isinstance(ev, st.TcpConnectRequested) and ev.flow_id != fid
    assert s.counters["tcp.time_wait.reused"] == 1
    assert [f.flow_id for f in s.flows()] == [ev.flow_id]


def test_every_flow_that_ends_tells_the_runtime_once():
    """Whatever ends a flow (TIME-WAIT expiry, reuse, RST either way, refused or failed
    connects), each opened flow gets exactly one TcpFlowClosed."""
    s = make_stack()
    opened: list[int] = []
    closed: list[int] = []

    def collect():
        out_frames(s, now)                           # dirty flows are processed here
        for ev in events(s):
            if isinstance(ev, st.TcpConnectRequested):
                opened.append(ev.flow_id)
            elif isinstance(ev, st.TcpFlowClosed):
                closed.append(ev.flow_id)

    now = 0.0
    fid, iss = _established(s, sport=41000)          # TIME-WAIT, expires at the end
    opened.append(fid)
    closed += [e.flow_id for e in _to_time_wait(s, fid, iss, sport=41000)
               if isinstance(e, st.TcpFlowClosed)]
    fid, iss = _established(s, sport=41001)          # TIME-WAIT, then reuse
    opened.append(fid)
    closed += [e.flow_id for e in _to_time_wait(s, fid, iss, sport=41001, now=now)
               if isinstance(e, st.TcpFlowClosed)]
    s.receive_frame(wire(s, guest_tcp(sport=41001, flags="S", seq=7000)), now)
    collect()
    s.tcp_host_connect_failed(opened[-1], 111, now)  # ECONNREFUSED: RST to the guest
    collect()
    fid, _ = _established(s, sport=41002)            # guest RST
    opened.append(fid)
    s.receive_frame(wire(s, guest_tcp(sport=41002, flags="R", seq=1001)), now)
    collect()
    fid, _ = _established(s, sport=41003)            # host RST
    opened.append(fid)
    s.tcp_host_reset(fid, now)
    collect()
    _open(s, dport=81, now=now)                      # unreachable: ICMP to the guest
    collect()
    s.tcp_host_connect_failed(opened[-1], 113, now)
    collect()
    now = 100.0
    s.handle_timer(now)
    collect()
    assert s.flows() == []
    assert sorted(closed) == sorted(opened) and len(set(closed)) == len(closed), (opened, closed)


def test_a_syn_right_behind_the_guests_rst_opens_a_new_flow():
    """The guest aborts a connection (RST) and connects again from the same port; both
    frames arrive in one TAP batch, before the dead flow was serviced. The SYN must open a
    new flow at once (it used to meet the dead one and be ignored: the guest's connect then
    took its 1 s SYN retransmission), and the old host socket is aborted, as after any RST."""
    s = make_stack()
    fid, iss = _established(s)
    s.receive_frame(wire(s, guest_tcp(flags="R", seq=1001)), 0.1)
    s.receive_frame(wire(s, guest_tcp(flags="S", seq=9000, options=[("MSS", 1460)])), 0.1)
    evs = events(s)
    assert evs[0] == st.TcpFlowClosed(fid, True)
    assert isinstance(evs[1], st.TcpConnectRequested) and evs[1].flow_id != fid and len(evs) == 2
    assert s.counters["tcp.flows.reset.reset"] == 1
    assert [f.flow_id for f in s.flows()] == [evs[1].flow_id]
