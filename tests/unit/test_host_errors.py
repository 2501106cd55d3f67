"""Host socket errors and what the guest sees: one defined reaction per errno.

A guest SYN makes the Stack ask the runtime for a host connect; the guest gets nothing until
that connect has an outcome. Errors on an established host socket all arrive as
`connection_lost(exc)` -> `Stack.tcp_host_reset` (the errno is not passed on).

Connect phase (`Stack.tcp_host_connect_failed(flow, errno, now)`), what the guest's kernel
receives and what its connect() then returns (Linux `icmp_err_convert`, `tcp_v4_err`):

=============== ============================================ ================= ===========
errno           frame to the guest                           guest connect()   counter
=============== ============================================ ================= ===========
ECONNREFUSED    RST|ACK <SEQ=0><ACK=ISS.guest+1> from host   ECONNREFUSED      tcp.connect.refused
ENETUNREACH     ICMP 3/0 net unreachable from the gateway,   ENETUNREACH       tcp.connect.unreachable
                quoting the SYN
EHOSTUNREACH    ICMP 3/1 host unreachable, quoting the SYN   EHOSTUNREACH      tcp.connect.unreachable
ETIMEDOUT       ICMP 3/1 host unreachable (the host gave up  EHOSTUNREACH      tcp.connect.unreachable
                after its own SYN retries: as a router whose
                next hop never answered)
EACCES, EPERM   ICMP 3/13 communication administratively     EHOSTUNREACH      tcp.connect.unreachable
                prohibited (a host firewall/LSM said no)
ECONNRESET,     ICMP 3/1 (connect(2) does not return these on EHOSTUNREACH      tcp.connect.unreachable
EPIPE           Linux; they fall to the default)
EMFILE, ENFILE, nothing. The flow is forgotten and the SYN      SYN retransmitted tcp.connect.drop.local_resource
ENOBUFS,        dropped, as a server with a full SYN queue   by the guest;
ENOMEM,         does; the guest's kernel retransmits it and  succeeds once the
EADDRNOTAVAIL   the next attempt gets a fresh connect. (ICMP resource is back
                3/1 would tell the guest "No route to host"
                about a remote that is fine, for a transient
                shortage of slirpy's own fds/buffers/ports.)
=============== ============================================ ================= ===========

Established phase (`Stack.tcp_host_reset`): ECONNRESET, EPIPE, ETIMEDOUT, EHOSTUNREACH, ...
all give RST|ACK <SEQ=SND.MAX><ACK=RCV.NXT> to the guest (its recv()/send() then fail with
ECONNRESET), the flow closes (`TcpFlowClosed`), counter `tcp.host.reset`.

The last tests drive a real `Runtime` (plain asyncio loop, TAP replaced by one end of an
AF_UNIX SOCK_SEQPACKET pair: one datagram = one frame) with `loop.create_connection`
replaced, so that the errno really travels through proxy/tcp.py.
"""

from __future__ import annotations

import asyncio
import errno
import random
import socket

import pytest
from scapy.layers.inet import ICMP, IP, TCP, IPerror, TCPerror
from scapy.layers.l2 import Ether

from slirpy.config import NetConfig
from slirpy.tcpip import stack as st
from slirpy.tcpip.wire.virtio import VNET_HDR_LEN

GUEST_MAC = "02:00:00:00:00:64"
GW_MAC = "52:55:0a:00:02:02"
GUEST = "10.0.2.100"
GW = "10.0.2.2"
REMOTE = "203.0.113.1"
GUEST_ISS = 1000


def make_stack(vnet=True) -> st.Stack:
    return st.Stack(NetConfig(), vnet_hdr=vnet, offload=vnet, rng=random.Random(5))


def wire(stack: st.Stack, pkt) -> bytes:
    raw = bytes(pkt)
    return (bytes(VNET_HDR_LEN) + raw) if stack.vnet_hdr else raw


def flat(frame) -> bytes:
    return frame if isinstance(frame, bytes) else b"".join(bytes(p) for p in frame)


def out_packets(stack: st.Stack, now: float = 0.0) -> list[Ether]:
    skip = VNET_HDR_LEN if stack.vnet_hdr else 0
    return [Ether(flat(f)[skip:]) for f in stack.frames_to_send(now)]


def drain_events(stack: st.Stack) -> list:
    evs = []
    while (ev := stack.next_event()) is not None:
        evs.append(ev)
    return evs


def guest_syn(dport=80):
    return (Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src=GUEST, dst=REMOTE) /
            TCP(sport=40000, dport=dport, flags="S", seq=GUEST_ISS, options=[("MSS", 1460), ("WScale", 7)]))


def open_flow(s: st.Stack, dport=80) -> int:
    s.receive_frame(wire(s, guest_syn(dport)), 0.0)
    assert out_packets(s) == []
    [ev] = drain_events(s)
    assert isinstance(ev, st.TcpConnectRequested)
    assert s.half_open == 1
    return ev.flow_id


def assert_icmp_unreachable(pkt: Ether, code: int, dport=80) -> None:
    assert pkt[IP].src == GW and pkt[IP].dst == GUEST, pkt.summary()
    assert pkt[ICMP].type == 3 and pkt[ICMP].code == code, pkt.summary()
    # it quotes the guest's SYN, so the guest kernel can find the socket
    assert pkt[IPerror].src == GUEST and pkt[IPerror].dst == REMOTE
    assert pkt[TCPerror].sport == 40000 and pkt[TCPerror].dport == dport
    assert pkt[TCPerror].seq == GUEST_ISS and pkt[TCPerror].flags == "S"


def assert_gone(s: st.Stack, flow_id: int) -> None:
    assert drain_events(s) == [st.TcpFlowClosed(flow_id, False)]
    assert s.flows() == [] and s.half_open == 0


# ------------------------------------------------------------------ connect phase

@pytest.mark.parametrize("vnet", [True, False], ids=["vnet", "plain"])
def test_econnrefused_is_rst_ack_acking_the_syn(vnet):
    s = make_stack(vnet)
    fid = open_flow(s)
    s.tcp_host_connect_failed(fid, errno.ECONNREFUSED, 0.0)
    [rst] = out_packets(s)
    assert rst[IP].src == REMOTE and rst[IP].dst == GUEST
    t = rst[TCP]
    assert (t.sport, t.dport) == (80, 40000)
    assert t.flags == "RA" and t.seq == 0 and t.ack == GUEST_ISS + 1
    assert s.counters["tcp.connect.refused"] == 1
    assert s.counters["tcp.connect.unreachable"] == 0
    assert_gone(s, fid)


@pytest.mark.parametrize("err, code", [
    (errno.ENETUNREACH, 0),
    (errno.EHOSTUNREACH, 1),
    (errno.ETIMEDOUT, 1),
    (errno.EACCES, 13),
    (errno.EPERM, 13),
    (errno.ECONNRESET, 1),
    (errno.EPIPE, 1),
], ids=["ENETUNREACH", "EHOSTUNREACH", "ETIMEDOUT", "EACCES", "EPERM", "ECONNRESET", "EPIPE"])
def test_connect_error_becomes_icmp_unreachable_quoting_the_syn(err, code):
    s = make_stack()
    fid = open_flow(s, dport=8080)
    s.tcp_host_connect_failed(fid, err, 0.0)
    [pkt] = out_packets(s)
    assert_icmp_unreachable(pkt, code, dport=8080)
    assert s.counters["tcp.connect.unreachable"] == 1
    assert s.counters["icmp.tx.error"] == 1
    assert s.counters["tcp.tx.rst"] == 0
    assert_gone(s, fid)


LOCAL_RESOURCE = [errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.EADDRNOTAVAIL]


@pytest.mark.parametrize("err", LOCAL_RESOURCE, ids=[errno.errorcode[e] for e in LOCAL_RESOURCE])
def test_local_resource_error_drops_the_syn_so_the_guest_retries(err):
    s = make_stack()
    fid = open_flow(s)
    s.tcp_host_connect_failed(fid, err, 0.0)
    assert out_packets(s) == []                    # no RST, no ICMP: the guest retransmits
    assert_gone(s, fid)
    assert s.counters["tcp.connect.drop.local_resource"] == 1
    # the retransmitted SYN is a fresh attempt
    s.receive_frame(wire(s, guest_syn()), 1.0)
    [ev] = drain_events(s)
    assert isinstance(ev, st.TcpConnectRequested) and ev.flow_id != fid
    s.tcp_host_connected(ev.flow_id, 1.0)
    [synack] = out_packets(s, 1.0)
    assert synack[TCP].flags == "SA" and synack[TCP].ack == GUEST_ISS + 1


def test_connect_outcome_for_a_forgotten_flow_is_ignored():
    s = make_stack()
    fid = open_flow(s)
    s.tcp_host_connect_failed(fid, errno.ECONNREFUSED, 0.0)
    out_packets(s)
    drain_events(s)
    for err in (errno.ECONNREFUSED, errno.EHOSTUNREACH):
        s.tcp_host_connect_failed(fid, err, 0.1)
    s.tcp_host_connected(fid, 0.1)
    s.tcp_host_reset(fid, 0.1)
    assert out_packets(s, 0.1) == [] and drain_events(s) == []


# ------------------------------------------------------------------ established phase

def establish(s: st.Stack) -> tuple[int, int]:
    fid = open_flow(s)
    s.tcp_host_connected(fid, 0.0)
    [synack] = out_packets(s)
    iss = synack[TCP].seq
    s.receive_frame(wire(s, Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src=GUEST, dst=REMOTE) /
                         TCP(sport=40000, dport=80, flags="PA", seq=GUEST_ISS + 1, ack=iss + 1,
                             window=1024) / b"hello"), 0.0)
    out_packets(s)
    assert [type(e) for e in drain_events(s)] == [st.TcpDataReceived]
    assert s.half_open == 0
    return fid, iss


@pytest.mark.parametrize("err", [errno.ECONNRESET, errno.EPIPE, errno.ETIMEDOUT, errno.EHOSTUNREACH],
                         ids=["ECONNRESET", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH"])
@pytest.mark.parametrize("sent", [0, 3000], ids=["idle", "unacked"])
def test_error_on_established_host_socket_resets_the_guest(err, sent):
    """(The Stack API does not take the errno: every established-phase error is one reset.)"""
    s = make_stack()
    fid, iss = establish(s)
    if sent:
        s.tcp_host_data(fid, bytes(sent), 0.0)
        assert sum(len(bytes(p[TCP].payload)) for p in out_packets(s)) == sent
    s.tcp_host_reset(fid, 0.1)
    [rst] = out_packets(s, 0.1)
    t = rst[TCP]
    assert rst[IP].src == REMOTE and rst[IP].dst == GUEST
    assert t.flags == "RA"
    assert t.seq == (iss + 1 + sent) & 0xFFFFFFFF     # SND.MAX: beyond anything we sent
    assert t.ack == GUEST_ISS + 1 + 5                 # RCV.NXT after "hello"
    assert s.counters["tcp.host.reset"] == 1
    assert drain_events(s) == [st.TcpFlowClosed(fid, False)]
    assert s.flows() == []
    # a late guest segment on the dead 4-tuple gets the no-flow RST, not a crash
    s.receive_frame(wire(s, Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src=GUEST, dst=REMOTE) /
                         TCP(sport=40000, dport=80, flags="A", seq=GUEST_ISS + 6, ack=iss + 1)), 0.2)
    [late] = out_packets(s, 0.2)
    assert late[TCP].flags == "R" and late[TCP].seq == iss + 1
    assert s.counters["tcp.rx.no_flow"] == 1


def test_reset_while_connect_pending_sends_nothing():
    """A host reset that races the connect (flow still half-open, guest never SYN-ACKed):
    the guest has no synchronized connection to reset; it gets nothing and retries its SYN."""
    s = make_stack()
    fid = open_flow(s)
    s.tcp_host_reset(fid, 0.0)
    assert out_packets(s) == []
    assert_gone(s, fid)


# ------------------------------------------------------------------ through the runtime

class FakeTransport(asyncio.Transport):
    def __init__(self):
        super().__init__()
        self.written = bytearray()
        self.calls: list = []           # ("write", bytes) / ("writelines", [bytes]) / ("eof",)
        self.eof = False
        self.closed = self.aborted = False
        self.paused = False

    def get_extra_info(self, name, default=None):
        return default

    def set_write_buffer_limits(self, high=None, low=None):
        pass

    def get_write_buffer_size(self):
        return 0

    def write(self, data):
        self.written += data
        self.calls.append(("write", bytes(data)))

    def writelines(self, list_of_data):
        parts = [bytes(d) for d in list_of_data]
        self.written += b"".join(parts)
        self.calls.append(("writelines", parts))

    def can_write_eof(self):
        return True

    def write_eof(self):
        self.eof = True
        self.calls.append(("eof",))

    def pause_reading(self):
        self.paused = True

    def resume_reading(self):
        self.paused = False

    def is_closing(self):
        return self.closed or self.aborted

    def close(self):
        self.closed = True

    def abort(self):
        self.aborted = True


class RuntimeRig:
    """A Runtime on a plain asyncio loop, its TAP one end of a SOCK_SEQPACKET pair."""

    def __init__(self, connect):
        from slirpy.runtime import Runtime

        self.loop = asyncio.new_event_loop()
        self.guest, tap = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._tap = tap
        self.guest.setblocking(False)
        self.runtime = Runtime(NetConfig(), tap.fileno(), vnet_hdr=False, offload=False)
        self.calls: list[tuple[str, int]] = []

        async def create_connection(factory, host, port, **kw):
            self.calls.append((host, port))
            return await connect(factory, host, port)

        self.loop.create_connection = create_connection
        self.runtime.attach(self.loop)

    def send(self, pkt) -> None:
        self.guest.send(bytes(pkt))

    def recv(self, timeout=5.0) -> Ether:
        """The next frame slirpy writes to the TAP (the bound only keeps a broken build from
        hanging the suite; no timing is asserted)."""
        raw = self.loop.run_until_complete(asyncio.wait_for(self.loop.sock_recv(self.guest, 65600), timeout))
        return Ether(raw)

    def settle(self) -> None:
        for _ in range(5):
            self.loop.run_until_complete(asyncio.sleep(0))

    def close(self) -> None:
        self.runtime.detach()
        self.settle()
        self.loop.close()
        self.guest.close()
        self._tap.close()


def arp_then_syn(rig: RuntimeRig, dport: int) -> None:
    from scapy.layers.l2 import ARP
    # The stack learns the guest's MAC from its first frame.
    rig.send(Ether(src=GUEST_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=GUEST_MAC, psrc=GUEST, pdst=GW))
    reply = rig.recv()
    assert reply.dst == GUEST_MAC
    rig.send(guest_syn(dport))


@pytest.mark.parametrize("err, expect", [
    (errno.ECONNREFUSED, "rst"),
    (errno.ENETUNREACH, 0),
    (errno.EHOSTUNREACH, 1),
    (errno.ETIMEDOUT, 1),
    (errno.EACCES, 13),
    (errno.EPERM, 13),
    (None, 1),                  # OSError without errno (asyncio's "Multiple exceptions")
], ids=["ECONNREFUSED", "ENETUNREACH", "EHOSTUNREACH", "ETIMEDOUT", "EACCES", "EPERM", "no-errno"])
def test_runtime_maps_create_connection_errors(err, expect):
    async def connect(factory, host, port):
        if err is None:
            raise OSError("Multiple exceptions: [Errno 111] ..., [Errno 113] ...")
        raise OSError(err, "fake " + errno.errorcode[err])

    rig = RuntimeRig(connect)
    try:
        arp_then_syn(rig, 4242)
        pkt = rig.recv()
        assert rig.calls == [(REMOTE, 4242)]
        if expect == "rst":
            assert pkt[TCP].flags == "RA" and pkt[TCP].ack == GUEST_ISS + 1
        else:
            assert_icmp_unreachable(pkt, expect, dport=4242)
        rig.settle()
        assert rig.runtime.host_flows == {} and rig.runtime.connecting == {}
        assert rig.runtime.stack.flows() == []
    finally:
        rig.close()


def test_runtime_emfile_drops_the_syn_and_the_retry_succeeds():
    attempts = []

    async def connect(factory, host, port):
        attempts.append(port)
        if len(attempts) == 1:
            raise OSError(errno.EMFILE, "Too many open files")
        proto = factory()
        transport = FakeTransport()
        proto.connection_made(transport)
        return transport, proto

    rig = RuntimeRig(connect)
    try:
        arp_then_syn(rig, 4343)
        with pytest.raises(TimeoutError):
            rig.recv(timeout=0.5)                   # nothing: the guest will retransmit
        rig.send(guest_syn(4343))                   # the guest's SYN retransmission
        synack = rig.recv()
        assert synack[TCP].flags == "SA" and synack[TCP].ack == GUEST_ISS + 1
    finally:
        rig.close()


@pytest.mark.parametrize("exc", [
    ConnectionResetError(errno.ECONNRESET, "reset"),
    BrokenPipeError(errno.EPIPE, "pipe"),
    TimeoutError(errno.ETIMEDOUT, "timed out"),
], ids=["ECONNRESET", "EPIPE", "ETIMEDOUT"])
def test_runtime_established_host_error_resets_guest_after_delivering_data(exc):
    made = []

    async def connect(factory, host, port):
        proto = factory()
        transport = FakeTransport()
        proto.connection_made(transport)
        made.append((proto, transport))
        return transport, proto

    rig = RuntimeRig(connect)
    try:
        arp_then_syn(rig, 5555)
        synack = rig.recv()
        assert synack[TCP].flags == "SA"
        iss = synack[TCP].seq
        rig.send(Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src=GUEST, dst=REMOTE) /
                 TCP(sport=40000, dport=5555, flags="PA", seq=GUEST_ISS + 1, ack=iss + 1, window=4096) /
                 b"payload-123")
        ack = rig.recv()
        assert ack[TCP].flags == "A" and ack[TCP].ack == GUEST_ISS + 1 + 11
        [(proto, transport)] = made
        assert bytes(transport.written) == b"payload-123"
        proto.connection_lost(exc)
        rst = rig.recv()
        assert rst[TCP].flags == "RA" and rst[TCP].seq == iss + 1 and rst[TCP].ack == GUEST_ISS + 12
        rig.settle()
        assert rig.runtime.counters["tcp.host.reset"] == 1
        assert rig.runtime.stack.flows() == [] and rig.runtime.host_flows == {}
        assert not transport.aborted        # the host socket is already dead: nothing to abort
    finally:
        rig.close()


def established_flow(transport_class):
    """A RuntimeRig whose guest has opened a TCP flow to REMOTE:6666 and ACKed the SYN-ACK;
    returns the rig, the host transport (of `transport_class`) and seg(seq, flags, payload)
    for the guest's next segments."""
    made = []

    async def connect(factory, host, port):
        proto = factory()
        transport = transport_class()
        proto.connection_made(transport)
        made.append(transport)
        return transport, proto

    rig = RuntimeRig(connect)
    try:
        arp_then_syn(rig, 6666)
        iss = rig.recv()[TCP].seq

        def seg(seq, flags, payload=b""):
            return (Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src=GUEST, dst=REMOTE) /
                    TCP(sport=40000, dport=6666, flags=flags, seq=seq, ack=iss + 1, window=65535) /
                    payload)
        rig.send(seg(GUEST_ISS + 1, "A"))
        rig.settle()
        [transport] = made
    except BaseException:
        rig.close()
        raise
    return rig, transport, seg


def test_runtime_writes_a_batch_of_guest_segments_to_the_host_socket_at_once():
    """Segments of one flow that arrive in one TAP batch reach the host socket as one
    writelines (one writev), in order, and the guest's FIN after them."""
    rig, transport, seg = established_flow(FakeTransport)
    try:
        rig.send(seg(GUEST_ISS + 1, "PA", b"lone-"))
        rig.settle()
        assert transport.calls == [("write", b"lone-")]          # a lone segment: a plain write
        parts = [b"first-", b"second-", b"third"]
        seq = GUEST_ISS + 6
        for p in parts:                      # queued on the TAP before the loop runs again
            rig.send(seg(seq, "PA", p))
            seq += len(p)
        rig.send(seg(seq, "FA"))
        rig.settle()
        assert transport.calls[1:] == [("writelines", parts), ("eof",)]
        assert bytes(transport.written) == b"lone-first-second-third"
    finally:
        rig.close()


class _CorkSocket:
    def __init__(self, calls):
        self.calls = calls

    def setsockopt(self, level, opt, value):
        assert (level, opt) == (socket.IPPROTO_TCP, socket.TCP_CORK)
        self.calls.append(("cork", value))


class CorkTransport(FakeTransport):
    """A FakeTransport whose socket records TCP_CORK; `buffered` bytes wait in it."""

    def __init__(self):
        super().__init__()
        self.buffered = 0

    def get_extra_info(self, name, default=None):
        return _CorkSocket(self.calls) if name == "socket" else default

    def get_write_buffer_size(self):
        return self.buffered


@pytest.mark.parametrize("buffered", [0, 100])
def test_runtime_corks_the_host_socket_for_data_and_fin_in_one_batch(buffered):
    """The guest's last data and its FIN in one TAP batch: the host socket is corked before the
    data is written, and write_eof (shutdown) then sends both in one segment. Data alone is
    not corked, nor is a socket whose transport still buffers data (write_eof waits for it)."""
    rig, transport, seg = established_flow(CorkTransport)
    try:
        rig.send(seg(GUEST_ISS + 1, "PA", b"request"))
        rig.settle()
        assert transport.calls == [("write", b"request")]       # data alone: no cork
        transport.buffered = buffered
        seq = GUEST_ISS + 8
        rig.send(seg(seq, "PA", b"last-"))
        rig.send(seg(seq + 5, "PA", b"words"))
        rig.send(seg(seq + 10, "FA"))
        rig.settle()
        wrote = [("writelines", [b"last-", b"words"]), ("eof",)]
        assert transport.calls[1:] == ([("cork", 1)] if not buffered else []) + wrote
        assert rig.runtime.counters["tcp.host.fin_corked"] == (0 if buffered else 1)
    finally:
        rig.close()


def test_runtime_closes_a_host_socket_whose_connect_completes_after_its_flow_ended():
    """The guest gives up (RST) while the host connect is in flight: the flow ends and the
    connect task is cancelled, but asyncio may still hand the protocol its transport (the
    socket had connected, connection_made was already scheduled). That socket has no flow
    left: it is closed at once, not kept open (issue 13)."""
    made = []
    gate = asyncio.Event()

    async def connect(factory, host, port):
        proto = factory()
        transport = FakeTransport()
        try:
            await gate.wait()
        except asyncio.CancelledError:
            proto.connection_made(transport)     # as asyncio does for a socket that connected
            made.append(transport)
            raise
        return transport, proto

    rig = RuntimeRig(connect)
    try:
        arp_then_syn(rig, 7777)
        rig.settle()
        assert len(rig.runtime.connecting) == 1
        rig.send(Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src=GUEST, dst=REMOTE) /
                 TCP(sport=40000, dport=7777, flags="R", seq=GUEST_ISS + 1))
        rig.settle()
        [transport] = made
        assert transport.aborted
        assert rig.runtime.host_flows == {} and rig.runtime.connecting == {}
        assert rig.runtime.stack.flows() == []
    finally:
        rig.close()


# ------------------------------------------------------------------ fd budget (issue 7 part 5)

def test_flow_caps_fit_the_fd_limit():
    from slirpy.config import Limits
    from slirpy.runtime import FD_RESERVE, fit_limits_to_fds

    roomy = Limits()
    assert fit_limits_to_fds(roomy, 1 << 20) is roomy
    for nofile in (1024, 4096, 20000):
        lim = fit_limits_to_fds(roomy, nofile)
        total = lim.max_tcp_flows + lim.max_udp_flows + lim.max_icmp_flows
        assert total <= nofile - FD_RESERVE, (nofile, lim)
        assert 0 < lim.max_half_open <= lim.max_tcp_flows
        assert lim.max_tcp_flows >= (nofile - FD_RESERVE) // 2


def test_limits_from_the_command_line():
    from slirpy.config import ConfigError, Limits, parse_limits

    lim = parse_limits(["max_half_open=64", "tcp-time-wait=0.5"])
    assert lim.max_half_open == 64 and lim.tcp_time_wait == 0.5
    assert lim.max_tcp_flows == Limits().max_tcp_flows
    for bad, why in (("nope=1", "NAME=VALUE"), ("max_half_open", "NAME=VALUE"),
                     ("max_half_open=x", "whole number"), ("max_half_open=0", "greater than 0"),
                     ("tcp_ack_delay=-1", "0 or more")):
        with pytest.raises(ConfigError, match=why):
            parse_limits([bad])
    assert parse_limits(["tcp_ack_delay=0"]).tcp_ack_delay == 0      # 0: delayed ACKs off
