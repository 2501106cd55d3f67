"""perf/benchlib.py: tool-output parsing, /proc parsing, summaries, ratios, targets, tables.

Fixed sample text captured from iperf3 3.12, sockperf 3.7 and wrk 4 on this kind of machine;
nothing here runs a benchmark.
"""

from __future__ import annotations

import json

import pytest

from perf import benchlib as bl
from perf.benchlib import Cell, Metric, Target

IPERF3_TCP = json.dumps({
    "start": {"version": "iperf 3.12"},
    "intervals": [],
    "end": {
        "streams": [],
        "sum_sent": {"start": 0, "end": 2.0, "seconds": 2.0, "bytes": 1343225856,
                     "bits_per_second": 5372903424.0, "retransmits": 7, "sender": True},
        "sum_received": {"start": 0, "end": 2.0003, "seconds": 2.0003, "bytes": 1340080128,
                         "bits_per_second": 5359516000.0, "sender": True},
        "cpu_utilization_percent": {"host_total": 30.1},
    },
})

IPERF3_ERROR = """{
\t"start":\t{
\t\t"connected":\t[],
\t\t"version":\t"iperf 3.12"
\t},
\t"intervals":\t[],
\t"end":\t{
\t},
\t"error":\t"unable to connect to server: Connection refused"
}"""

IPERF3_UDP = json.dumps({"end": {
    "sum": {"bytes": 12490800, "bits_per_second": 99916308.45, "lost_packets": 0,
            "packets": 8922, "lost_percent": 0, "sender": True},
    "sum_sent": {"bytes": 12490800, "bits_per_second": 99916308.45284627, "lost_packets": 0,
                 "packets": 8922, "lost_percent": 0, "sender": True},
    "sum_received": {"bytes": 9368100, "bits_per_second": 74926723.05, "jitter_ms": 0.0083,
                     "lost_packets": 2231, "packets": 8922, "lost_percent": 25.005604,
                     "sender": False},
}})

SOCKPERF = """\
sockperf: \x1b[2;35m== version #3.7-no.git == \x1b[0m
sockperf[CLIENT] send on:sockperf: using recvfrom() to block on socket(s)

[ 0] IP = 127.0.0.1       PORT = 11111 # TCP
sockperf: Warmup stage (sending a few dummy messages)...
sockperf: Starting test...
sockperf: Test end (interrupted by timer)
sockperf: Test ended
sockperf: [Total Run] RunTime=1.000 sec; Warm up time=400 msec; SentMessages=55989; ReceivedMessages=55988
sockperf: ========= Printing statistics for Server No: 0
sockperf: [Valid Duration] RunTime=0.550 sec; SentMessages=30838; ReceivedMessages=30838
sockperf: \x1b[2;35m====> avg-latency=8.908 (std-dev=11.794)\x1b[0m
sockperf: # dropped messages = 0; # duplicated messages = 0; # out-of-order messages = 0
sockperf: Summary: Latency is 8.908 usec
sockperf: \x1b[2;35mTotal 30838 observations\x1b[0m; each percentile contains 308.38 observations
sockperf: ---> <MAX> observation = 2019.461
sockperf: ---> percentile 99.999 = 2019.461
sockperf: ---> percentile 99.990 =   33.694
sockperf: ---> percentile 99.900 =   24.931
sockperf: ---> percentile 99.000 =   11.301
sockperf: ---> percentile 90.000 =    9.108
sockperf: ---> percentile 75.000 =    8.913
sockperf: ---> percentile 50.000 =    8.587
sockperf: ---> percentile 25.000 =    8.547
sockperf: ---> <MIN> observation =    8.422
"""

WRK_KEEPALIVE = """\
Running 1s test @ http://127.0.0.1:8088/1k.bin
  1 threads and 10 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   150.41us   39.05us   1.44ms   96.16%
    Req/Sec    65.86k     4.46k   68.16k    90.00%
  Latency Distribution
     50%  144.00us
     75%  154.00us
     90%  166.00us
     99%  308.00us
  65402 requests in 1.00s, 78.84MB read
Requests/sec:  65384.54
Transfer/sec:     78.82MB
"""

WRK_404_AND_SOCKET_ERRORS = """\
Running 1s test @ http://127.0.0.1:8088/nope
  1 threads and 10 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   139.80us   53.01us   1.59ms   98.89%
    Req/Sec    71.76k     1.63k   73.05k    81.82%
  78214 requests in 1.10s, 22.97MB read
  Socket errors: connect 3, read 2, write 1, timeout 4
  Non-2xx or 3xx responses: 78214
Requests/sec:  71096.40
Transfer/sec:     20.88MB
"""


def test_iperf3_tcp_takes_the_receiver_side():
    r = bl.parse_iperf3_tcp(IPERF3_TCP)
    assert r["gbps"] == pytest.approx(5.359516)
    assert r["bytes"] == 1340080128
    assert r["retransmits"] == 7


@pytest.mark.parametrize("text, message", [
    (IPERF3_ERROR, "unable to connect to server: Connection refused"),
    ("iperf3: error - unable to connect", "not JSON"),
    ('{"end": {}}', "no end.sum_received"),
    ("[1, 2]", "not an object"),
])
def test_iperf3_errors_raise(text, message):
    with pytest.raises(bl.ToolOutputError, match=message):
        bl.parse_iperf3_tcp(text)


def test_iperf3_udp_delivered_and_loss_from_the_receiver():
    r = bl.parse_iperf3_udp(IPERF3_UDP)
    assert r["delivered_mbps"] == pytest.approx(74.92672305)
    assert r["sent_mbps"] == pytest.approx(99.916308)
    assert r["loss_pct"] == pytest.approx(25.005604)
    with pytest.raises(bl.ToolOutputError, match="lost_percent"):
        bl.parse_iperf3_udp(IPERF3_TCP)


def test_sockperf_avg_and_p99_despite_colour_codes():
    r = bl.parse_sockperf(SOCKPERF)
    assert r == {"avg_us": 8.908, "p99_us": 11.301, "observations": 30838.0,
                 "exchanges": 55988.0}


def test_sockperf_without_results_raises():
    with pytest.raises(bl.ToolOutputError, match="sockperf"):
        bl.parse_sockperf("sockperf: ERROR: Failed to connect\n")
    # percentile 99.900 alone is not the 99th percentile
    with pytest.raises(bl.ToolOutputError):
        bl.parse_sockperf("avg-latency=3.0 (std-dev=1)\n---> percentile 99.900 = 5.0\n")


def test_wrk_requests_per_second_and_errors():
    assert bl.parse_wrk(WRK_KEEPALIVE) == {"rps": 65384.54, "requests": 65402.0, "errors": 0.0}
    r = bl.parse_wrk(WRK_404_AND_SOCKET_ERRORS)
    assert r["rps"] == 71096.40
    assert r["errors"] == 3 + 2 + 1 + 4 + 78214


def test_cost_per_gb_and_per_exchange():
    # a bulk sample: CPU per GB; a sockperf or wrk sample: CPU per round trip or request, in us
    assert bl.with_cost({"net_cpu_s": 0.5, "bytes": 2e9})["cpu_s_per_gb"] == 0.25
    pp = bl.with_cost({**bl.parse_sockperf(SOCKPERF), "net_cpu_s": 0.8})
    assert pp["cpu_us_per_exchange"] == pytest.approx(0.8 / 55988 * 1e6)
    assert "cpu_s_per_gb" not in pp
    req = bl.with_cost({**bl.parse_wrk(WRK_KEEPALIVE), "net_cpu_s": 1.2})
    assert req["cpu_us_per_exchange"] == pytest.approx(1.2 / 65402 * 1e6)
    # a peer without a network process of its own (loopback, veth) has no CPU: no cost
    assert bl.with_cost(bl.parse_wrk(WRK_KEEPALIVE)) == bl.parse_wrk(WRK_KEEPALIVE)


def test_wrk_that_could_not_connect_raises():
    with pytest.raises(bl.ToolOutputError, match="Connection refused"):
        bl.parse_wrk("unable to connect to 127.0.0.1:8089 Connection refused\n")


def test_proc_parsers():
    # comm with spaces and parentheses; utime=1234 (field 14), stime=56 (field 15)
    stat = ("4242 (py (thon) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 56 0 0 20 0 1 0 "
            "99 1000 200 18446744073709551615")
    assert bl.proc_cpu_ticks(stat) == 1290
    status = "Name:\tpython3\nVmPeak:\t  50000 kB\nVmRSS:\t   37068 kB\nThreads:\t1\n"
    assert bl.proc_rss_kib(status) == 37068
    with pytest.raises(bl.ToolOutputError):
        bl.proc_rss_kib("Name:\tzombie\n")
    procstat = ("cpu  100 5 50 800 20 1 4 0 30 0\ncpu0 50 2 25 400 10 0 2 0 15 0\n"
                "intr 1 2 3\n")
    assert bl.proc_stat_cpu(procstat) == (820, 980)      # guest time not counted twice
    assert bl.cpu_idle_fraction((820, 980), (870, 1080)) == pytest.approx(0.5)
    assert bl.cpu_idle_fraction((1, 5), (1, 5)) is None


def test_summarize_median_min_max():
    s = bl.summarize([3.0, 1.0, 2.0])
    assert (s.median, s.min, s.max, s.n) == (2.0, 1.0, 3.0, 3)
    assert bl.summarize([4.0, 1.0]).median == 2.5
    assert bl.summarize([]) is None
    assert bl.summarize([None, 5]).as_dict() == {"median": 5.0, "min": 5.0, "max": 5.0, "n": 1}


GBPS = Metric("gbps", "throughput", "Gbit/s", True)
LAT = Metric("avg_us", "latency", "us", False, "{:.1f}")


def _cells() -> list[Cell]:
    def cell(wl, v, peer, vals, metric="gbps", **kw):
        return Cell(wl, v, peer, [{metric: x} for x in vals], **kw)
    return [
        cell("bulk", "65520/up", "slirpy", [9.0, 10.0, 11.0]),
        cell("bulk", "65520/up", "slirp4netns", [2.0, 2.5, 3.0]),
        cell("bulk", "65520/up", "pasta", [12.0, 12.5, 11.0]),
        cell("bulk", "1500/up", "slirpy", [6.0]),
        cell("bulk", "1500/up", "slirp4netns", [], errors=["iperf3: boom"]),
        cell("bulk", "1500/up", "pasta", [], na="pasta not installed"),
        cell("pp", "x", "slirpy", [30.0], "avg_us"),
        cell("pp", "x", "slirp4netns", [40.0], "avg_us"),
        cell("streams", "up/P1", "slirpy", [5.0]),
        cell("streams", "up/P100", "slirpy", [4.0]),
        cell("streams", "up/P1", "loopback", [20.0]),
        cell("streams", "up/P100", "loopback", [15.0]),
        cell("idle", "idle", "slirpy", [36.0], "rss_mib"),
    ]


def test_ratio_of_medians():
    cells = _cells()
    assert bl.ratio(cells[0].summary("gbps"), cells[1].summary("gbps")) == 4.0
    assert bl.ratio(cells[0].summary("gbps"), None) is None
    assert bl.ratio(cells[0].summary("gbps"), bl.Summary(0, 0, 0, 1)) is None


def test_targets_met_missed_and_unknown():
    ts = [Target("bulk", "gbps", ">=", 3, "slirp4netns", "65520/", text="bulk 65520"),
          Target("bulk", "gbps", ">=", 10, "slirp4netns", "1500/", text="bulk 1500"),
          Target("bulk", "gbps", ">=", 1, "pasta"),
          Target("pp", "avg_us", "<=", 1, "slirp4netns"),
          Target("streams", "gbps", ">=", 0.9, None, "up/", "up/P1"),
          Target("idle", "rss_mib", "<=", 40)]
    res = {(r.target.text or r.target.metric, r.variant, r.target.peer): r
           for r in bl.evaluate_targets(_cells(), ts)}
    assert res[("bulk 65520", "65520/up", "slirp4netns")].met is True
    assert res[("bulk 65520", "65520/up", "slirp4netns")].observed == 4.0
    assert res[("bulk 1500", "1500/up", "slirp4netns")].met is None      # peer failed
    assert res[("gbps", "65520/up", "pasta")].met is False               # 10 / 12
    assert res[("gbps", "1500/up", "pasta")].met is None                 # n/a cell
    assert res[("avg_us", "x", "slirp4netns")].met is True              # 30/40 <= 1
    streams = res[("gbps", "up/P100", None)]
    assert streams.observed == pytest.approx(0.8) and streams.met is False
    assert streams.references == (("loopback", 0.75),)                   # the kernel's own fall
    assert "same ratio for loopback 0.75" in streams.describe()
    assert ("gbps", "up/P1", None) not in res                            # baseline itself
    assert res[("rss_mib", "idle", None)].met is True
    text = res[("gbps", "65520/up", "pasta")].describe()
    assert "slirpy/pasta >= 1" in text and "MISSED" in text


def test_difference_target_compares_medians_in_units_not_ratio():
    def cell(v, peer, vals):
        return Cell("startup", v, peer, samples=[{"ready_ms": x} for x in vals])

    cells = [cell("ready-fd", "slirpy", [40.0, 45.0, 100.0]),
             cell("ready-fd", "slirp4netns", [5.0, 6.0, 7.0]),
             cell("run", "slirpy", [20.0]), cell("run", "slirp4netns", [10.0])]
    t = Target("startup", "ready_ms", "<=", 30, "slirp4netns", difference=True, text="ready")
    res = {r.variant: r for r in bl.evaluate_targets(cells, [t])}
    assert res["ready-fd"].observed == 39.0 and res["ready-fd"].met is False   # 45 - 6
    assert res["run"].observed == 10.0 and res["run"].met is True
    assert "slirpy - slirp4netns <= 30" in res["ready-fd"].describe()


def test_table_shows_cells_and_ratios():
    cells = _cells()
    table = bl.format_table(cells, "bulk", GBPS, ["slirpy", "slirp4netns", "pasta"])
    lines = table.splitlines()
    assert "higher is better" in lines[0]
    assert lines[1].split() == ["variant", "slirpy", "slirp4netns", "pasta", "/slirp4netns",
                                "/pasta"]
    row = lines[2]
    assert row.split()[0] == "65520/up"
    assert "10.00 (9.00-11.00)" in row and "2.50 (2.00-3.00)" in row
    assert row.split()[-2:] == ["4.00x", "0.83x"]          # 10/2.5, 10/12
    row1500 = lines[3]
    assert "failed" in row1500 and "n/a (pasta not installed)" in row1500
    assert row1500.split()[1] == "6.00"       # one run: no range
    assert row1500.split()[-2:] == ["-", "-"]
    lat = bl.format_table(cells, "pp", LAT, ["slirpy", "slirp4netns"])
    assert "lower is better" in lat and lat.splitlines()[2].split()[-1] == "0.75x"
    assert bl.format_table(cells, "nothing", GBPS, ["slirpy"]) == ""


def test_cell_json_round_trip():
    c = _cells()[4]
    assert Cell.from_json(json.loads(json.dumps(c.to_json()))) == c


def test_a_collapsed_peer_cell_is_an_anomaly_not_a_claimed_ratio():
    def cell(peer, v, gbps, idle=0.0):
        return Cell("bulk", v, peer, samples=[{"gbps": gbps, "host_idle_pct": idle}])

    cells = [cell("slirpy", "1500/up", 9.0), cell("slirp4netns", "1500/up", 2.0),
             cell("pasta", "1500/up", 0.1, idle=45),       # slower than slirp4netns, machine idle
             cell("slirpy", "1500/down", 9.0), cell("slirp4netns", "1500/down", 2.0),
             cell("pasta", "1500/down", 12.0, idle=45),    # faster: a real figure, a real ratio
             cell("slirpy", "65520/up", 9.0), cell("slirp4netns", "65520/up", 2.0),
             cell("pasta", "65520/up", 1.0, idle=3)]       # slower but busy: a real (bad) figure
    t = Target("bulk", "gbps", ">=", 1, "pasta", text="bulk >= pasta")
    got = {r.variant: r for r in bl.evaluate_targets(cells, [t])}
    up, down = got["1500/up"], got["1500/down"]
    assert up.met is None and up.anomaly is not None
    assert "pasta 0.1 below slirp4netns 2 with the machine 45% idle" in up.anomaly
    assert "not claimed: peer anomaly" in up.describe()
    assert down.anomaly is None and down.met is False
    assert down.observed == pytest.approx(0.75)
    busy = got["65520/up"]
    assert busy.anomaly is None and busy.met is True and busy.observed == pytest.approx(9.0)
    # slirp4netns itself and latency targets are never flagged
    t2 = Target("bulk", "gbps", ">=", 1, "slirp4netns")
    assert all(r.anomaly is None for r in bl.evaluate_targets(cells, [t2]))


def test_peer_binaries_come_from_the_environment(monkeypatch):
    monkeypatch.delenv("SLIRPY_BENCH_PASTA", raising=False)
    assert bl.peer_bin("pasta") == "pasta"
    monkeypatch.setenv("SLIRPY_BENCH_PASTA", "/opt/pasta-2026/pasta")
    assert bl.peer_bin("pasta") == "/opt/pasta-2026/pasta"
