"""`--disable-host-loopback`: what a client dialling the gateway sees, slirpy against the real
slirp4netns (issue 17, item 5).

libslirp refuses the host side of a flow to its gateway address when host loopback is
disabled and tells the guest "network unreachable" (ICMP net unreachable, ICMPv6 no route),
quoting the guest's packet: a TCP connect fails with ENETUNREACH, not ECONNREFUSED, and a UDP
datagram's connected socket reports the same. Both programs are started the same way against
an `unshare -Urn` target and the guest's outcomes must be equal (and be ENETUNREACH), so that
an engine's or a user's scripts cannot tell them apart here. Each case also checks that the
host's listener saw nothing.
"""

from __future__ import annotations

import pytest

from tests.netns.test_slirp4netns_e2e import REAL_S4N, S4N, slirpy, target  # noqa: F401
from tests.netns.util import GATEWAY6_ADDR, GATEWAY_ADDR

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_stray_processes"),
              pytest.mark.skipif(REAL_S4N is None, reason="slirp4netns is not installed "
                                 "(helpers/setup-host installs it)")]

PROGRAMS = {"slirpy": S4N, "slirp4netns": [REAL_S4N or "slirp4netns"]}


def _outcomes(target, slirpy, prog: str, tcp_port: int, udp_port: int) -> list:  # noqa: F811
    s = slirpy("-c", "-6", "--disable-host-loopback", str(target.pid), "tap0", cmd=PROGRAMS[prog])
    assert s.wait_ready() == b"1"
    # slirp4netns -c leaves IPv6 to SLAAC: give both the same static address and route.
    target.run("ip", "-6", "addr", "replace", "fd00::100/64", "dev", "tap0", "nodad")
    target.run("ip", "-6", "route", "replace", "default", "via", GATEWAY6_ADDR, "dev", "tap0")
    ops = []
    for gw in (GATEWAY_ADDR, GATEWAY6_ADDR):
        ops.append({"op": "connect", "host": gw, "port": tcp_port, "timeout": 10.0})
        ops.append({"op": "udp_refused", "host": gw, "port": udp_port, "tries": 2, "wait": 3.0})
    res = target.guest_ops(ops)
    s.stop()
    return [r["error"] if "error" in r else r["outcome"] for r in res]


def test_gateway_is_net_unreachable_as_in_slirp4netns(target, slirpy, host_server):  # noqa: F811
    v4 = host_server("source", "127.0.0.1", size=16, seed=1)
    v6 = host_server("source", "::1", size=16, seed=1, port=v4.port)
    theirs = _outcomes(target, slirpy, "slirp4netns", v4.port, 9)
    ours = _outcomes(target, slirpy, "slirpy", v4.port, 9)
    assert ours == theirs, (ours, theirs)
    assert ours == ["ENETUNREACH"] * 4, ours
    assert v4.accepted == 0 and v6.accepted == 0
