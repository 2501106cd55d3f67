#!/usr/bin/env python3
"""The IP input's own cost per packet (Ipv4Input/Ipv6Input.receive), in process, with the TCP
handler stubbed out: what the source-address check costs for the guest's own network, and for
a source in a routed prefix (issue 15) with 1 or 64 prefixes set.

Prints nanoseconds per packet (the best of `--repeat` timings of `--number` calls).
`--checkout DIR` measures another tree (e.g. a `git worktree` or `git archive` of the
commit before), so both can be run interleaved on a busy machine.

Usage:  python perf/ip_input.py [--checkout DIR] [--number 200000] [--repeat 25]
"""

from __future__ import annotations

import argparse
import random
import sys
import timeit
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkout", default=str(Path(__file__).resolve().parent.parent))
    ap.add_argument("--number", type=int, default=200000)
    ap.add_argument("--repeat", type=int, default=25)
    args = ap.parse_args()
    sys.path.insert(0, args.checkout)
    from slirpy.config import NetConfig
    from slirpy.tcpip import stack as st
    from slirpy.tcpip.wire.ipv4 import build_header
    from slirpy.tcpip.wire.ipv6 import build_header as build_header6

    s = st.Stack(NetConfig(guest_mac=b"\x02" * 6), vnet_hdr=True, offload=True, rng=random.Random(1))

    def nop(*a: object) -> None:
        return None

    ip4, ip6 = s.ipv4, s.ipv6
    assert ip6 is not None
    ip4._tcp = ip6._tcp = nop
    mac = b"\x02" * 6
    dst4, dst6 = bytes([203, 0, 113, 1]), bytes.fromhex("20010db8000000000000000000000001")
    cases = {"ipv4 own": (ip4, bytes([10, 0, 2, 100]), dst4),
             "ipv6 own": (ip6, bytes.fromhex("fd000000000000000000000000000100"), dst6)}
    if hasattr(s, "set_routed"):
        cases["ipv4 routed"] = (ip4, bytes([10, 89, 5, 2]), dst4)
        cases["ipv6 routed"] = (ip6, bytes.fromhex("fd890000000000050000000000000002"), dst6)

    def run(label: str) -> None:
        for name, (inp, src, dst) in cases.items():
            build = build_header if len(src) == 4 else build_header6
            packet = memoryview(build(src, dst, 6, 20) + bytes(20))
            receive = inp.receive
            receive(packet, mac, False, 0.0)
            best = min(timeit.repeat(lambda: receive(packet, mac, False, 0.0),
                                     number=args.number, repeat=args.repeat))
            print(f"{label:>12} {name:12} {best / args.number * 1e9:6.0f} ns")

    if hasattr(s, "set_routed"):
        s.set_routed(["10.89.5.0/24", "fd89:0:0:5::/64"])
        run("1 prefix")
        s.set_routed([f"10.90.{i}.0/24" for i in range(63)] + ["10.89.5.0/24"]
                     + [f"fd90:0:0:{i:x}::/64" for i in range(63)] + ["fd89:0:0:5::/64"])
        run("64 prefixes")
    else:
        run("no routes")


if __name__ == "__main__":
    main()
