"""`slirpy slirp4netns -6/--enable-ipv6` (issue 16), against a namespace it did not create
(`unshare -Urn sleep`, as RootlessKit and Podman make them; see test_slirp4netns_e2e.py).

With `-c`, the IPv6 side is configured as slirp4netns does it: fd00::100/64 on the TAP
(usable at once: no DAD), a default route via fd00::2; TCP both ways to the outer test
namespace's 2001:db8::1, byte-exact; ping -6 to the gateway; `--disable-host-loopback` covers
fd00::2; `--outbound-addr6` picks the host sockets' source address. Without `-6` (the
default, as in slirp4netns) nothing IPv6 is configured.
"""

from __future__ import annotations

import pytest

from tests.netns.test_slirp4netns_e2e import slirpy, target  # noqa: F401  (fixtures)
from tests.netns.util import GATEWAY6_ADDR, HOST6_ADDR, HOST6_ADDR2, expected

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_stray_processes")]

MiB = 1 << 20


def test_enable_ipv6_with_configure_and_tcp_both_ways(target, slirpy, host_server):  # noqa: F811
    s = slirpy("-c", "-6", "--mtu=1500", f"--outbound-addr6={HOST6_ADDR2}", str(target.pid), "tap0")
    assert s.wait_ready() == b"1"
    addr = target.run("ip", "-o", "-6", "addr", "show", "dev", "tap0").stdout
    assert "inet6 fd00::100/64 scope global" in addr and "tentative" not in addr, addr
    routes = target.run("ip", "-6", "route").stdout
    assert f"default via {GATEWAY6_ADDR} dev tap0" in routes, routes
    ping = target.run("ping", "-6", "-c", "2", "-i", "0.2", "-W", "5", GATEWAY6_ADDR, check=False)
    assert ping.returncode == 0 and "2 received" in ping.stdout, ping

    size = 8 * MiB + 1
    sink = host_server("sink", HOST6_ADDR, reply_size=size, seed=4)
    src = host_server("source", HOST6_ADDR, size=size, seed=5)
    up, down = target.guest_ops([
        {"op": "upload", "host": HOST6_ADDR, "port": sink.port, "size": size, "seed": 3},
        {"op": "download", "host": HOST6_ADDR, "port": src.port},
    ])
    assert up["server"] == {"len": size, "sha": expected(size, 3)}, up
    assert (up["reply_len"], up["reply_sha"]) == (size, expected(size, 4)), up
    assert down == {"len": size, "sha": expected(size, 5)}, down
    # --outbound-addr6: the host saw slirpy's sockets come from the chosen address
    assert sink.wait_results(1)[0].peer[0] == HOST6_ADDR2
    assert src.wait_results(1)[0].peer[0] == HOST6_ADDR2


def test_without_enable_ipv6_nothing_ipv6_is_configured(target, slirpy):  # noqa: F811
    s = slirpy("-c", str(target.pid), "tap0")
    assert s.wait_ready() == b"1"
    assert "inet 10.0.2.100/24" in target.run("ip", "-o", "-4", "addr", "show", "dev", "tap0").stdout
    addr = target.run("ip", "-o", "-6", "addr", "show", "dev", "tap0").stdout
    assert "fd00::" not in addr and "scope global" not in addr, addr
    assert "default" not in target.run("ip", "-6", "route").stdout


@pytest.mark.parametrize("disable", [False, True], ids=["default", "disable-host-loopback"])
def test_host_loopback_of_fd00_2_follows_disable_host_loopback(target, slirpy, host_server,  # noqa: F811
                                                               disable):
    srv = host_server("source", "::1", size=4096, seed=5)
    s = slirpy("-c", "-6", *(["--disable-host-loopback"] if disable else []), str(target.pid), "tap0")
    assert s.wait_ready() == b"1"
    [res] = target.guest_ops([{"op": "connect", "host": GATEWAY6_ADDR, "port": srv.port, "timeout": 30}])
    if disable:
        assert res["ok"] is False and res["error"] == "ENETUNREACH", res
        assert srv.accepted == 0
    else:
        assert res["ok"] is True, res
        assert srv.wait_results(1)[0].peer[0] == "::1"
