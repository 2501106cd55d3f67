"""End-to-end TCP through `slirpy run`: real guest kernel TCP on tap0, real host sockets in
the outer test namespace (helpers/testns), byte-exact sha256 checks on both ends.

Matrix: offload on/off x MTU 1500/65520 for everything; the 100 MiB transfers run where the
data path differs (TSO super-frames at 1500, plain frames at 1500, big frames at 65520).
"""

from __future__ import annotations

import errno

import pytest

from tests.netns.util import (GATEWAY_ADDR, HOST_ADDR, HOST_ADDR2, expected, run_guest,
                              unused_port)

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_stray_processes")]

CONFIGS = [
    pytest.param(("--mtu", "1500"), id="mtu1500"),
    pytest.param(("--mtu", "65520"), id="mtu65520"),
    pytest.param(("--mtu", "1500", "--no-offload"), id="mtu1500-nooffload"),
    pytest.param(("--mtu", "65520", "--no-offload"), id="mtu65520-nooffload"),
]
BIG_CONFIGS = CONFIGS[:3]
MiB = 1 << 20


def mtu_of(options) -> int:
    return int(options[options.index("--mtu") + 1])


def edge_sizes(options) -> list[int]:
    mss = mtu_of(options) - 40
    return [0, 1, mss - 1, mss, mss + 1]


@pytest.mark.parametrize("options", CONFIGS)
def test_guest_sees_configured_tap(options):
    (info,) = run_guest(options, [{"op": "ifinfo"}])
    assert info["names"] == ["lo", "tap0"]
    assert info["addr"] == "10.0.2.100"
    assert info["mtu"] == mtu_of(options)


@pytest.mark.parametrize("options", CONFIGS)
def test_upload_edge_sizes(options, host_server):
    """sandbox -> host: 0, 1, MSS-1, MSS, MSS+1 bytes, each on its own connection."""
    sizes = edge_sizes(options)
    srv = host_server("sink")
    ops = [{"op": "upload", "host": HOST_ADDR, "port": srv.port, "size": n, "seed": n}
           for n in sizes]
    results = run_guest(options, ops)
    server_side = srv.wait_results(len(sizes))
    for n, r in zip(sizes, results):
        assert r.get("server") == {"len": n, "sha": expected(n, n)}, (n, r)
    assert sorted((c.received, c.sha) for c in server_side) == \
        sorted((n, expected(n, n)) for n in sizes)
    assert all(c.error is None for c in server_side), server_side


@pytest.mark.parametrize("options", CONFIGS)
def test_download_edge_sizes(options, host_server):
    """host -> sandbox: 0, 1, MSS-1, MSS, MSS+1 bytes."""
    sizes = edge_sizes(options)
    servers = [host_server("source", size=n, seed=n + 7) for n in sizes]
    ops = [{"op": "download", "host": HOST_ADDR, "port": s.port} for s in servers]
    results = run_guest(options, ops)
    for n, r in zip(sizes, results):
        assert r == {"len": n, "sha": expected(n, n + 7)}, (n, r)


@pytest.mark.parametrize("options", BIG_CONFIGS)
def test_upload_100mib(options, host_server):
    srv = host_server("sink")
    (r,) = run_guest(options, [{"op": "upload", "host": HOST_ADDR, "port": srv.port,
                                "size": 100 * MiB, "seed": 100}], timeout=300)
    assert r.get("server") == {"len": 100 * MiB, "sha": expected(100 * MiB, 100)}, r
    (c,) = srv.wait_results(1)
    assert (c.received, c.sha, c.error) == (100 * MiB, expected(100 * MiB, 100), None)


@pytest.mark.parametrize("options", BIG_CONFIGS)
def test_download_100mib(options, host_server):
    srv = host_server("source", size=100 * MiB, seed=101)
    (r,) = run_guest(options, [{"op": "download", "host": HOST_ADDR, "port": srv.port}],
                     timeout=300)
    assert r == {"len": 100 * MiB, "sha": expected(100 * MiB, 101)}


@pytest.mark.parametrize("options", CONFIGS)
def test_guest_half_closes_and_still_receives(options, host_server):
    """The guest shuts down its write side first; the host reads to EOF and only then
    sends 3 MiB back, which the guest must still receive in full."""
    srv = host_server("sink", reply_size=3 * MiB + 5, seed=55)
    (r,) = run_guest(options, [{"op": "upload", "host": HOST_ADDR, "port": srv.port,
                                "size": 2 * MiB + 3, "seed": 54}])
    assert r.get("server") == {"len": 2 * MiB + 3, "sha": expected(2 * MiB + 3, 54)}, r
    assert (r["reply_len"], r["reply_sha"]) == (3 * MiB + 5, expected(3 * MiB + 5, 55))


@pytest.mark.parametrize("options", CONFIGS)
def test_host_half_closes_and_still_receives(options, host_server):
    """The host sends 3 MiB and shuts down its write side first; the guest reads to EOF and
    only then uploads 2 MiB, which the host must still receive in full."""
    srv = host_server("first", size=3 * MiB + 1, seed=66)
    (r,) = run_guest(options, [{"op": "first", "host": HOST_ADDR, "port": srv.port,
                                "size": 2 * MiB + 9, "seed": 67}])
    assert (r.get("len"), r.get("sha")) == (3 * MiB + 1, expected(3 * MiB + 1, 66)), r
    (c,) = srv.wait_results(1)
    assert (c.received, c.sha, c.error) == (2 * MiB + 9, expected(2 * MiB + 9, 67), None)
    assert r["after_close"] == 0, r     # an orderly FIN, not a reset


@pytest.mark.parametrize("options", CONFIGS)
def test_refused_port_fails_at_once(options):
    """A closed host port must give the guest ECONNREFUSED (a RST), not a timeout."""
    with unused_port(HOST_ADDR) as closed, unused_port(HOST_ADDR2) as closed2:
        results = run_guest(options, [
            {"op": "connect", "host": HOST_ADDR, "port": closed.getsockname()[1], "timeout": 10},
            {"op": "connect", "host": HOST_ADDR2, "port": closed2.getsockname()[1], "timeout": 10},
        ])
    for r in results:
        assert r["error"] == errno.errorcode[errno.ECONNREFUSED], r
        assert r["elapsed"] < 5.0, r


@pytest.mark.parametrize("options", CONFIGS)
def test_parallel_connections(options, host_server):
    """250 concurrent connections through one sandbox, each echoing its own payload."""
    srv = host_server("echo")
    count = 250
    (r,) = run_guest(options, [{"op": "parallel_echo", "host": HOST_ADDR, "port": srv.port,
                                "count": count, "base_size": 20000, "seed": 1000}], timeout=240)
    assert r.get("nbad") == 0 and r.get("count") == count, r
    sizes = [20000 + 997 * i for i in range(count)]
    assert r["bytes"] == sum(sizes)
    conns = srv.wait_results(count)
    assert srv.accepted == count
    assert sorted(c.received for c in conns) == sorted(sizes)
    assert all(c.error is None for c in conns)


@pytest.mark.parametrize("options", CONFIGS[:2])
def test_second_host_address(options, host_server):
    """Flows are proxied to whatever address the guest dials, not to one fixed host."""
    a = host_server("source", HOST_ADDR, size=4 * MiB, seed=1)
    b = host_server("source", HOST_ADDR2, size=4 * MiB, seed=2)
    results = run_guest(options, [{"op": "download", "host": HOST_ADDR, "port": a.port},
                                  {"op": "download", "host": HOST_ADDR2, "port": b.port}])
    assert results == [{"len": 4 * MiB, "sha": expected(4 * MiB, 1)},
                       {"len": 4 * MiB, "sha": expected(4 * MiB, 2)}]
    assert a.wait_results(1)[0].peer[0] == HOST_ADDR
    assert b.wait_results(1)[0].peer[0] == HOST_ADDR2


class TestHostLoopbackPolicy:
    """10.0.2.2:PORT reaches the host's 127.0.0.1:PORT only with --allow-host-loopback; no
    other address the guest can dial ever reaches 127.0.0.1."""

    @staticmethod
    def other_addresses(port):
        return [{"op": "connect", "host": h, "port": port, "timeout": 3}
                for h in ("10.0.2.3", HOST_ADDR, HOST_ADDR2, "10.0.2.1")]

    def test_gateway_unreachable_by_default(self, host_server):
        srv = host_server("sink", "127.0.0.1")
        results = run_guest(("--mtu", "1500"), [
            {"op": "connect", "host": GATEWAY_ADDR, "port": srv.port, "timeout": 10},
            *self.other_addresses(srv.port),
        ])
        # "Network is unreachable" at once (ICMP net unreachable), as slirp4netns's
        assert results[0]["error"] == errno.errorcode[errno.ENETUNREACH], results[0]
        assert results[0]["elapsed"] < 5.0
        assert not any(r["ok"] for r in results), results
        assert srv.accepted == 0

    @pytest.mark.parametrize("options", CONFIGS[:2])
    def test_gateway_reaches_loopback_when_allowed(self, options, host_server):
        srv = host_server("sink", "127.0.0.1")
        opts = (*options, "--allow-host-loopback")
        results = run_guest(opts, [
            *self.other_addresses(srv.port),
            {"op": "upload", "host": GATEWAY_ADDR, "port": srv.port, "size": 5 * MiB + 1,
             "seed": 9},
        ])
        *others, up = results
        assert not any(r["ok"] for r in others), others
        assert up.get("server") == {"len": 5 * MiB + 1, "sha": expected(5 * MiB + 1, 9)}, up
        (c,) = srv.wait_results(1)
        assert c.peer[0] == "127.0.0.1"
        assert srv.accepted == 1     # and none of the other addresses got through
