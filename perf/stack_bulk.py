#!/usr/bin/env python3
"""The pure Stack's own cost of bulk TCP, per 65,000-byte segment, in process: no TAP, no sockets.

One established flow (guest 10.0.2.100:40000 -> 203.0.113.1:80, MTU 65520, offloads on; with
`--ipv6` the same over IPv6, fd00::100 -> 2001:db8::1).
`up`: the guest sends super-frames of 65,000 bytes; the stack acknowledges them and hands the
data to the runtime (events drained). `down`: 65,000 bytes of host data go into
`tcp_host_data`, their frame comes out, and the guest's ACK of it goes in. Frames are built
before the clock starts. perf/stack_rr.py does the same for small request/response.

Prints microseconds per segment (best of `--repeat`). Wall-clock numbers on a shared machine
are noisy; for an A/B of two trees that must not depend on load, count instructions instead:
`valgrind --tool=cachegrind --cache-sim=yes --branch-sim=yes python perf/stack_bulk.py up
--segments N --repeat 1` at two values of N, and divide the difference by the difference of N
(perf/NOTES.md, "Counting instead of timing").

Usage:  python perf/stack_bulk.py up|down [--segments 2000] [--repeat 3] [--ipv6]
"""

from __future__ import annotations

import argparse
import random
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slirpy.config import NetConfig                                        # noqa: E402
from slirpy.tcpip import stack as st                                       # noqa: E402
from slirpy.tcpip.wire.tcp import ACK, SYN, TcpOptions, build_header        # noqa: E402
from slirpy.tcpip.wire.virtio import VNET_HDR_LEN                           # noqa: E402
from perf.stack_rr import guest_frame as guest_frame4, guest_frame6         # noqa: E402

SEGMENT = 65000
IPV6 = False                                               # --ipv6


def guest_frame(tcp: bytes) -> bytes:
    """A guest frame as perf/stack_rr.py builds it, over the family `--ipv6` picks."""
    return guest_frame6(tcp) if IPV6 else guest_frame4(tcp)


def setup() -> tuple[st.Stack, int, int]:
    s = st.Stack(NetConfig(mtu=65520), vnet_hdr=True, offload=True, rng=random.Random(1))
    ip_hlen = 40 if IPV6 else 20
    syn = build_header(40000, 80, 1000, 0, SYN, 65535,
                       TcpOptions(mss=65520 - 20 - ip_hlen, wscale=7, sack_permitted=True).pack())
    s.receive_frame(guest_frame(syn), 0.0)
    ev = s.next_event()
    assert ev is not None
    flow_id: int = ev.flow_id  # type: ignore[attr-defined]
    s.tcp_host_connected(flow_id, 0.0)
    synack = s.frames_to_send(0.0)[-1]      # (over IPv6 after the first router advertisement)
    iss = struct.unpack_from("!I", synack, VNET_HDR_LEN + 14 + ip_hlen + 4)[0]
    s.receive_frame(guest_frame(build_header(40000, 80, 1001, iss + 1, ACK, 65535)), 0.0)
    s.frames_to_send(0.0)
    while s.next_event() is not None:
        pass
    return s, flow_id, iss


def run(direction: str, segments: int) -> tuple[float, st.Stack]:
    s, flow_id, iss = setup()
    receive, out, event = s.receive_frame, s.frames_to_send, s.next_event
    now = 0.0
    if direction == "up":
        data = b"u" * SEGMENT
        frames = [guest_frame(build_header(40000, 80, 1001 + SEGMENT * i, iss + 1, ACK, 65535)
                              + data) for i in range(segments)]
        t = time.perf_counter()
        for frame in frames:
            now += 1e-5
            receive(frame, now)
            out(now)
            while event() is not None:
                pass
    else:
        data = b"d" * SEGMENT
        send = s.tcp_host_data
        acks = [guest_frame(build_header(40000, 80, 1001, (iss + 1 + SEGMENT * (i + 1)) & 0xFFFFFFFF,
                                         ACK, 65535)) for i in range(segments)]
        t = time.perf_counter()
        for ack in acks:
            now += 1e-5
            send(flow_id, data, now)
            out(now)
            receive(ack, now)
            out(now)
            while event() is not None:
                pass
    return (time.perf_counter() - t) / segments * 1e6, s


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("direction", choices=("up", "down"))
    ap.add_argument("--segments", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ipv6", action="store_true", help="the flow over IPv6")
    args = ap.parse_args()
    global IPV6
    IPV6 = args.ipv6
    best = min(run(args.direction, args.segments)[0] for _ in range(args.repeat))
    _, s = run(args.direction, 10)
    drops = {k: v for k, v in s.counters.items() if ".drop." in k}
    print(f"{best:.1f} us per {SEGMENT}-byte segment {args.direction} through the Stack "
          f"over {'IPv6' if IPV6 else 'IPv4'} "
          f"(best of {args.repeat} x {args.segments}; drops in a check run: {drops or 'none'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
