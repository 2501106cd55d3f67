#!/usr/bin/env python3
"""The pure Stack's own cost of one small request/response, in process: no TAP, no sockets.

One established flow (guest 10.0.2.100:40000 -> 203.0.113.1:80, offloads on; with `--ipv6`
the same over IPv6, fd00::100 -> 2001:db8::1). Each round trip: a 64-byte guest request frame (its ACK field acknowledging our last answer) goes into
`receive_frame`, the frames and events come out, 64 bytes of host answer go into
`tcp_host_data`, and its frame comes out — what the runtime does for one sockperf or HTTP
keep-alive exchange, minus the system calls and the event loop. The guest frames are built
before the clock starts.

With `--timestamps` the guest offers RFC 7323 timestamps in its SYN and sends them on every
segment as Linux does (NOP, NOP, TSval, TSecr), so both sides carry 12 option bytes; without,
its segments carry no options.

Prints microseconds per round trip (the best of `--repeat` timings). With `--profile`, a
cProfile listing instead (its overhead inflates the absolute figure about fourfold).

Usage:  python perf/stack_rr.py [--rounds 50000] [--repeat 3] [--profile] [--ipv6] [--timestamps]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slirpy.config import NetConfig                                    # noqa: E402
from slirpy.tcpip import stack as st                                   # noqa: E402
from slirpy.tcpip.wire.ipv4 import build_header as ip_header                # noqa: E402
from slirpy.tcpip.wire.ipv6 import build_header as ip6_header               # noqa: E402
from slirpy.tcpip.wire.tcp import ACK, PSH, SYN, TcpOptions, build_header   # noqa: E402
from slirpy.tcpip.wire.tcp import ts_option                                 # noqa: E402
from slirpy.tcpip.wire.virtio import VNET_HDR_LEN                           # noqa: E402

GUEST = bytes([10, 0, 2, 100])
REMOTE = bytes([203, 0, 113, 1])
GUEST6 = bytes.fromhex("fd000000000000000000000000000100")
REMOTE6 = bytes.fromhex("20010db8000000000000000000000001")
GUEST_MAC = bytes.fromhex("020000000064")
GW_MAC = bytes.fromhex("52550a000202")
SIZE = 64


VNET = bytes([1]) + bytes(VNET_HDR_LEN - 1)                 # F_NEEDS_CSUM: not verified again


def guest_frame(tcp: bytes) -> bytes:
    """A frame as the TAP hands it over: virtio header (checksum already valid), Ethernet, IP."""
    return VNET + GW_MAC + GUEST_MAC + b"\x08\x00" + ip_header(GUEST, REMOTE, 6, len(tcp)) + tcp


def guest_frame6(tcp: bytes) -> bytes:
    """The same over IPv6."""
    return VNET + GW_MAC + GUEST_MAC + b"\x86\xdd" + ip6_header(GUEST6, REMOTE6, 6, len(tcp)) + tcp


def drain(stack: st.Stack) -> None:
    while stack.next_event() is not None:
        pass


def setup(rounds: int, ipv6: bool = False, timestamps: bool = False):
    s = st.Stack(NetConfig(mtu=65520), vnet_hdr=True, offload=True, rng=random.Random(1))
    frame, ip_hlen = (guest_frame6, 40) if ipv6 else (guest_frame, 20)
    syn = build_header(40000, 80, 1000, 0, SYN, 65535,
                       TcpOptions(mss=65520 - 20 - ip_hlen, wscale=7, sack_permitted=True,
                                  timestamp=(1, 0) if timestamps else None).pack())
    s.receive_frame(frame(syn), 0.0)
    flow_id = s.next_event().flow_id
    s.tcp_host_connected(flow_id, 0.0)
    synack = s.frames_to_send(0.0)[-1]          # (over IPv6 after the first router advertisement)
    iss = struct.unpack_from("!I", synack, VNET_HDR_LEN + 14 + ip_hlen + 4)[0]

    def opts(i: int) -> bytes:
        # the guest's millisecond clock, and the TSval of our last answer (ms + ISS), as `run` steps
        ms = int(i * 1e-4 * 1000)
        return ts_option(2 + ms, (ms + iss) & 0xFFFFFFFF) if timestamps else b""

    s.receive_frame(frame(build_header(40000, 80, 1001, iss + 1, ACK, 65535, opts(0))), 0.0)
    s.frames_to_send(0.0)
    drain(s)
    request = b"q" * SIZE
    frames = [frame(build_header(40000, 80, 1001 + SIZE * i, iss + 1 + SIZE * i,
                                 ACK | PSH, 65535, opts(i)) + request) for i in range(rounds)]
    return s, flow_id, frames


def run(s: st.Stack, flow_id: int, frames: list) -> None:
    answer = b"a" * SIZE
    receive, send, out, event = s.receive_frame, s.tcp_host_data, s.frames_to_send, s.next_event
    now = 0.0
    for frame in frames:
        now += 1e-4                                         # the delayed ACK never comes due
        receive(frame, now)
        out(now)
        while event() is not None:
            pass
        send(flow_id, answer, now)
        out(now)
        while event() is not None:
            pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=50000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--ipv6", action="store_true", help="the same flow over IPv6")
    ap.add_argument("--timestamps", action="store_true",
                    help="the guest offers and sends RFC 7323 timestamps (as Linux does)")
    args = ap.parse_args()
    if args.profile:
        s, fid, frames = setup(args.rounds, args.ipv6, args.timestamps)
        prof = cProfile.Profile()
        prof.runcall(run, s, fid, frames)
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)
        return 0
    best = None
    for _ in range(args.repeat):
        s, fid, frames = setup(args.rounds, args.ipv6, args.timestamps)
        t = time.perf_counter()
        run(s, fid, frames)
        dt = (time.perf_counter() - t) / args.rounds * 1e6
        best = dt if best is None else min(best, dt)
        segs = s.counters["tcp.tx.segments"]
    print(f"{best:.1f} us per {SIZE}-byte request + {SIZE}-byte answer through the Stack"
          f"{' over IPv6' if args.ipv6 else ''}{' with timestamps' if args.timestamps else ''} "
          f"(best of {args.repeat} x {args.rounds}; {segs} segments sent in the last run; "
          f"{s.counters['rx.frames']} frames taken)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
