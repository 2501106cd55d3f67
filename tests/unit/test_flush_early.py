"""The runtime flushes early when host reads of several flows pile up (runtime.host_data_read).

A loop pass reads every readable host socket before its one flush writes the data to the TAP;
with many downloads that is ~20 MB, copied to the TAP long after it left the CPU's caches
(perf/NOTES.md, session 18). Past FLUSH_AFTER_BYTES read from more than one flow since the last
flush, the runtime flushes at once, inside the read's callback; one flow's reads wait for the
pass's flush as before. The Runtime here is the real one, on a plain asyncio loop with a
SOCK_SEQPACKET pair for its TAP (tests/unit/test_host_errors.py's rig); the host reads are the
protocols' own get_buffer/buffer_updated, called as the loop calls them, without running the
loop in between, so a frame on the TAP can only come from an early flush.
"""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from slirpy.runtime import FLUSH_AFTER_BYTES
from tests.unit.test_host_errors import (
    GUEST, GUEST_ISS, GUEST_MAC, GW_MAC, REMOTE, FakeTransport, RuntimeRig, arp_then_syn, guest_syn,
)

PORTS = (6666, 6667)


def established(rig: RuntimeRig, port: int, first: bool) -> None:
    """The guest's handshake to REMOTE:port, through the rig's loop."""
    if first:
        arp_then_syn(rig, port)
    else:
        rig.send(guest_syn(port))
    synack = rig.recv()
    assert synack[TCP].flags == "SA" and synack[TCP].sport == port
    rig.send(Ether(src=GUEST_MAC, dst=GW_MAC) / IP(src=GUEST, dst=REMOTE) /
             TCP(sport=40000, dport=port, flags="A", seq=GUEST_ISS + 1, ack=synack[TCP].seq + 1,
                 window=65535))
    rig.settle()


@pytest.fixture
def two_flows():
    """A RuntimeRig with two established outbound flows; yields (rig, {port: protocol})."""
    protos = {}

    async def connect(factory, host, port):
        proto = factory()
        transport = FakeTransport()
        proto.connection_made(transport)
        protos[port] = proto
        return transport, proto

    rig = RuntimeRig(connect)
    try:
        for i, port in enumerate(PORTS):
            established(rig, port, i == 0)
        assert set(protos) == set(PORTS)
        yield rig, protos
    finally:
        rig.close()


def host_read(proto, nbytes: int) -> None:
    """`nbytes` from the host socket, as the loop reads them: into get_buffer's room, then
    buffer_updated, a block's room at a time."""
    while nbytes:
        room = proto.get_buffer(-1)
        n = min(len(room), nbytes)
        room[:n] = b"d" * n
        proto.buffer_updated(n)
        nbytes -= n


def tap_frames(rig: RuntimeRig) -> list[Ether]:
    """The frames written to the TAP so far, without running the loop."""
    frames = []
    while True:
        try:
            frames.append(Ether(rig.guest.recv(65600)))
        except BlockingIOError:
            return frames


def data_ports(frames: list[Ether]) -> set[int]:
    return {f[TCP].sport for f in frames if TCP in f and len(f[TCP].payload)}


def early_flushes(rig: RuntimeRig) -> int:
    return rig.runtime.counters["loop.flush.early"]


def test_reads_of_two_flows_past_the_bound_are_flushed_at_once(two_flows):
    rig, protos = two_flows
    half = FLUSH_AFTER_BYTES // 2 + 4096
    host_read(protos[6666], half)
    assert tap_frames(rig) == [] and early_flushes(rig) == 0       # under the bound: later
    host_read(protos[6667], half)
    assert early_flushes(rig) == 1
    # Both flows' data went to the guest from inside the read, as far as each window allows.
    assert data_ports(tap_frames(rig)) == set(PORTS)
    # The count starts again after a flush: another half is under the bound.
    host_read(protos[6666], half)
    assert early_flushes(rig) == 1


def test_one_flows_reads_wait_for_the_loops_flush(two_flows):
    rig, protos = two_flows
    host_read(protos[6666], 2 * FLUSH_AFTER_BYTES)
    assert early_flushes(rig) == 0
    assert tap_frames(rig) == []
    rig.settle()                                     # the loop runs its scheduled flush
    assert data_ports(tap_frames(rig)) == {6666}
    assert early_flushes(rig) == 0
