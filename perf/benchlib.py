"""The pure half of perf/bench: parse tool output, summarise samples, compare, print.

Nothing here runs a process or reads a clock; everything takes text or numbers and returns
numbers or text, so tests/unit/test_perf_parse.py can check it from fixed sample output.

- ``parse_iperf3_tcp`` / ``parse_iperf3_udp``: iperf3 ``-J`` output (3.12 layout) -> numbers,
  taken at the receiver (``end.sum_received``), because what the sender wrote into a socket
  buffer is not what crossed the network.
- ``parse_sockperf``: ``sockperf ping-pong`` text -> average and 99th percentile latency (us).
- ``parse_wrk``: ``wrk`` text -> requests/s and error counts.
- ``parse_pingpong_json``: the JSON line of perf/bench's own PINGPONG client (IPv6 and IPv4
  alike) -> average and 99th percentile latency (us).
- ``proc_cpu_ticks`` / ``proc_rss_kib`` / ``cpu_idle_fraction``: /proc/PID/stat, /proc/PID/status,
  /proc/stat text -> numbers.
- ``summarize``: samples -> median/min/max; ``ratio_rows`` and ``evaluate_targets`` compare the
  slirpy cell with each peer's; ``format_report`` prints the tables.
"""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass, field

SUBJECT = "slirpy"

# Peer binaries: `perf/bench --slirp4netns PATH` (and --pasta, --rootlesskit) or the environment
# (SLIRPY_BENCH_SLIRP4NETNS, ...) pick another build of a peer, e.g. a newer pasta; else PATH.
PEER_BINARIES = ("slirp4netns", "pasta", "rootlesskit")


def peer_bin(name: str) -> str:
    """The executable to run for peer `name` (see PEER_BINARIES)."""
    import os
    return os.environ.get(f"SLIRPY_BENCH_{name.upper()}") or name


# A peer cell is a "peer anomaly" (shown, but no ratio claimed) when the peer moved less than
# slirp4netns in the same cell while the machine sat at least this idle: it was stalled, not
# busy (pasta's single-stream uploads on this machine: perf/NOTES.md).
ANOMALY_IDLE_PCT = 25.0


class ToolOutputError(ValueError):
    """Tool output that does not carry the figure we need (an error, or a changed format)."""


# -- iperf3 ----------------------------------------------------------------------------------------

def _iperf3_end(text: str) -> dict:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ToolOutputError(f"iperf3: not JSON ({e.msg}): {text.strip()[-200:]!r}") from None
    if not isinstance(data, dict):
        raise ToolOutputError("iperf3: JSON is not an object")
    if data.get("error"):
        raise ToolOutputError(f"iperf3: {data['error']}")
    end = data.get("end")
    if not isinstance(end, dict) or "sum_received" not in end:
        raise ToolOutputError("iperf3: no end.sum_received in the output")
    return end


def parse_iperf3_tcp(text: str) -> dict[str, float]:
    """``iperf3 -J`` TCP (any -P, either direction): receiver goodput and bytes moved."""
    end = _iperf3_end(text)
    rcv = end["sum_received"]
    out = {"gbps": rcv["bits_per_second"] / 1e9, "bytes": float(rcv["bytes"])}
    sent = end.get("sum_sent") or {}
    if "retransmits" in sent:
        out["retransmits"] = float(sent["retransmits"])
    return out


def parse_iperf3_udp(text: str) -> dict[str, float]:
    """``iperf3 -u -J``: delivered Mbit/s, loss % and datagrams, as counted by the receiver."""
    end = _iperf3_end(text)
    rcv = end["sum_received"]
    if "lost_percent" not in rcv:
        raise ToolOutputError("iperf3: end.sum_received has no lost_percent (not a UDP test?)")
    sent = end.get("sum_sent") or {}
    out = {"delivered_mbps": rcv["bits_per_second"] / 1e6, "loss_pct": float(rcv["lost_percent"]),
           "bytes": float(rcv["bytes"])}
    if "bits_per_second" in sent:
        out["sent_mbps"] = sent["bits_per_second"] / 1e6
    return out


# -- sockperf, wrk ---------------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SOCKPERF_AVG = re.compile(r"avg-latency=\s*([0-9.]+)")
_SOCKPERF_PCT = re.compile(r"percentile\s+([0-9.]+)\s*=\s*([0-9.]+)")
_SOCKPERF_OBS = re.compile(r"Total\s+(\d+)\s+observations")
_SOCKPERF_TOTAL = re.compile(r"\[Total Run\][^\n]*ReceivedMessages=(\d+)")


def parse_sockperf(text: str) -> dict[str, float]:
    """``sockperf ping-pong`` output -> avg_us, p99_us (sockperf reports half round trips, us),
    observations (round trips in the measured part) and exchanges (round trips of the whole
    run, warm-up included: what the network process's CPU was measured over)."""
    clean = _ANSI.sub("", text)
    avg = _SOCKPERF_AVG.search(clean)
    pcts = {float(p): float(v) for p, v in _SOCKPERF_PCT.findall(clean)}
    if avg is None or 99.0 not in pcts:
        raise ToolOutputError(f"sockperf: no avg-latency/percentile 99 in: {clean.strip()[-300:]!r}")
    out = {"avg_us": float(avg.group(1)), "p99_us": pcts[99.0]}
    obs = _SOCKPERF_OBS.search(clean)
    if obs:
        out["observations"] = float(obs.group(1))
    total = _SOCKPERF_TOTAL.search(clean)
    if total:
        out["exchanges"] = float(total.group(1))
    return out


def with_cost(sample: dict) -> dict:
    """Add the network process's CPU per unit of work to a sample that has its CPU (net_cpu_s):
    per GB moved (bytes), or per exchange (a ping-pong round trip, an HTTP request: exchanges
    or requests) for the small-packet workloads. Returns the sample."""
    cpu = sample.get("net_cpu_s")
    if cpu is None:
        return sample
    if sample.get("bytes"):
        sample["cpu_s_per_gb"] = cpu / (sample["bytes"] / 1e9)
    exchanges = sample.get("exchanges") or sample.get("requests")
    if exchanges:
        sample["cpu_us_per_exchange"] = cpu / exchanges * 1e6
    return sample


_WRK_RPS = re.compile(r"^Requests/sec:\s*([0-9.]+)", re.M)
_WRK_REQS = re.compile(r"^\s*(\d+) requests in ([0-9.]+)(us|ms|s|m)\b", re.M)
_WRK_SOCKERR = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s*(\d+)")


def parse_wrk(text: str) -> dict[str, float]:
    """``wrk`` output -> rps, requests, errors (socket errors + non-2xx/3xx responses)."""
    rps = _WRK_RPS.search(text)
    reqs = _WRK_REQS.search(text)
    if rps is None or reqs is None:
        raise ToolOutputError(f"wrk: no Requests/sec in: {text.strip()[-300:]!r}")
    errors = 0
    sock = _WRK_SOCKERR.search(text)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    non2xx = _WRK_NON2XX.search(text)
    if non2xx:
        errors += int(non2xx.group(1))
    return {"rps": float(rps.group(1)), "requests": float(reqs.group(1)), "errors": float(errors)}


def parse_pingpong_json(text: str) -> dict[str, float]:
    """The last JSON object line of perf/bench's PINGPONG client -> avg_us, p99_us, observations
    and server_family (4 or 6: what the server saw the connection arrive over)."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                break
            if isinstance(data, dict) and {"avg_us", "p99_us"} <= data.keys():
                return {k: float(data[k]) for k in ("avg_us", "p99_us", "observations", "server_family")
                        if k in data}
            break
    raise ToolOutputError(f"pingpong: no result line in: {text.strip()[-300:]!r}")


# -- /proc -----------------------------------------------------------------------------------------

def proc_cpu_ticks(stat_text: str) -> int:
    """utime + stime (clock ticks, all threads) from the text of /proc/PID/stat."""
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = stat_text[stat_text.rindex(")") + 2:].split()
    # rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(rest[11]) + int(rest[12])


def proc_rss_kib(status_text: str) -> int:
    """VmRSS (KiB) from the text of /proc/PID/status."""
    m = re.search(r"^VmRSS:\s*(\d+)\s*kB", status_text, re.M)
    if m is None:
        raise ToolOutputError("no VmRSS in /proc/PID/status (process exited?)")
    return int(m.group(1))


def proc_stat_cpu(stat_text: str) -> tuple[int, int]:
    """(idle + iowait, total) jiffies of the aggregate ``cpu`` line of /proc/stat."""
    for line in stat_text.splitlines():
        if line.startswith("cpu "):
            vals = [int(v) for v in line.split()[1:]]
            # user nice system idle iowait irq softirq steal guest guest_nice; guest time is
            # already counted in user/nice, so only the first eight add up to the total.
            return vals[3] + (vals[4] if len(vals) > 4 else 0), sum(vals[:8])
    raise ToolOutputError("no aggregate cpu line in /proc/stat")


def cpu_idle_fraction(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    didle, dtotal = after[0] - before[0], after[1] - before[1]
    return didle / dtotal if dtotal > 0 else None


# -- summaries and comparisons ---------------------------------------------------------------------

@dataclass(frozen=True)
class Summary:
    median: float
    min: float
    max: float
    n: int

    def as_dict(self) -> dict:
        return {"median": self.median, "min": self.min, "max": self.max, "n": self.n}


def summarize(values: list[float]) -> Summary | None:
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    return Summary(statistics.median(vals), min(vals), max(vals), len(vals))


@dataclass(frozen=True)
class Metric:
    name: str            # key in a sample dict
    label: str
    unit: str
    higher_is_better: bool
    fmt: str = "{:.2f}"
    compare: bool = True     # print slirpy/peer ratio columns


@dataclass
class Cell:
    """All runs of one (workload, variant, peer): samples are dicts of metric -> value."""
    workload: str
    variant: str
    peer: str
    samples: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    na: str | None = None            # not applicable / not available, with the reason

    def summary(self, metric: str) -> Summary | None:
        return summarize([s[metric] for s in self.samples if metric in s])

    def to_json(self) -> dict:
        return {"workload": self.workload, "variant": self.variant, "peer": self.peer,
                "samples": self.samples, "errors": self.errors, "na": self.na}

    @classmethod
    def from_json(cls, d: dict) -> "Cell":
        return cls(d["workload"], d["variant"], d["peer"], list(d.get("samples", [])),
                   list(d.get("errors", [])), d.get("na"))


def ratio(subject: Summary | None, peer: Summary | None) -> float | None:
    """subject/peer of medians; None when either is missing or the peer's median is 0."""
    if subject is None or peer is None or peer.median == 0:
        return None
    return subject.median / peer.median


@dataclass(frozen=True)
class Target:
    """``slirpy/peer`` ratio of one metric must be ``>= value`` (op ">=") or ``<=`` (op "<=").

    ``peer`` may be ``None`` for an absolute target on slirpy's own median; ``variant_prefix``
    selects variants ("" = every variant of the workload); ``baseline_variant`` makes it a
    ratio against another variant of slirpy itself (e.g. 100 streams vs 1 stream)."""
    workload: str
    metric: str
    op: str
    value: float
    peer: str | None = None
    variant_prefix: str = ""
    baseline_variant: str | None = None
    text: str = ""
    difference: bool = False    # compare ``slirpy - peer`` (medians) with value, not the ratio


REFERENCES = ("loopback", "veth")     # kernel references: the same ratio, for context


@dataclass(frozen=True)
class TargetResult:
    target: Target
    variant: str
    observed: float | None
    met: bool | None        # None: cannot tell (a cell is missing)
    # For a ratio against another variant: the same ratio for the kernel references run
    # alongside (e.g. loopback's own 100-stream/1-stream), so a fall the kernel shows too
    # can be told apart from one of ours.
    references: tuple = ()
    anomaly: str | None = None   # the peer's cell looks broken: the ratio is not claimed

    def describe(self) -> str:
        t = self.target
        if t.peer:
            what = f"{SUBJECT} - {t.peer}" if t.difference else f"{SUBJECT}/{t.peer}"
        elif t.baseline_variant:
            what = f"{SUBJECT} {self.variant} / {t.baseline_variant}"
        else:
            what = SUBJECT
        if self.observed is None:
            obs = "n/a"
        elif abs(self.observed) >= 100:
            obs = f"{self.observed:.0f}"
        else:
            obs = f"{self.observed:.3g}"
        verdict = {True: "met", False: "MISSED", None: "unknown"}[self.met]
        if self.anomaly:
            verdict = f"not claimed: peer anomaly ({self.anomaly})"
        line = f"{t.text or t.metric}: {what} {t.op} {t.value:g}: {obs} -> {verdict}"
        if self.references:
            line += " (same ratio for " + ", ".join(f"{p} {r:.3g}" for p, r in self.references) + ")"
        return line


def _compare(op: str, observed: float, value: float) -> bool:
    if op == ">=":
        return observed >= value
    if op == "<=":
        return observed <= value
    raise ValueError(f"unknown op {op!r}")


def evaluate_targets(cells: list[Cell], targets: list[Target]) -> list[TargetResult]:
    index = {(c.workload, c.variant, c.peer): c for c in cells}
    variants: dict[str, list[str]] = {}
    for c in cells:
        lst = variants.setdefault(c.workload, [])
        if c.variant not in lst:
            lst.append(c.variant)
    out = []
    for t in targets:
        for v in variants.get(t.workload, []):
            if not v.startswith(t.variant_prefix) or v == t.baseline_variant:
                continue
            mine = index.get((t.workload, v, SUBJECT))
            if mine is None:
                continue
            s = mine.summary(t.metric)
            if t.peer is not None:
                other = index.get((t.workload, v, t.peer))
                if other is None:
                    continue
                theirs = other.summary(t.metric)
                if t.difference:
                    observed = s.median - theirs.median if s and theirs else None
                else:
                    observed = ratio(s, theirs)
            elif t.baseline_variant is not None:
                base = index.get((t.workload, t.baseline_variant, SUBJECT))
                observed = ratio(s, base.summary(t.metric) if base else None)
            else:
                observed = s.median if s else None
            refs = []
            if t.baseline_variant is not None:
                for p in REFERENCES:
                    here = index.get((t.workload, v, p))
                    there = index.get((t.workload, t.baseline_variant, p))
                    if here is not None and there is not None:
                        r = ratio(here.summary(t.metric), there.summary(t.metric))
                        if r is not None:
                            refs.append((p, r))
            met = None if observed is None else _compare(t.op, observed, t.value)
            anomaly = peer_anomaly(index, t, v)
            if anomaly:
                met = None
            out.append(TargetResult(t, v, observed, met, tuple(refs), anomaly))
    return out


def peer_anomaly(index: dict, t: Target, variant: str) -> str | None:
    """Why target `t`'s peer cell in `variant` looks like a peer problem, not a measurement: a
    higher-is-better figure below slirp4netns's in the same cell, measured while the machine was
    at least ANOMALY_IDLE_PCT idle (the peer was neither fast nor busy: it stalled)."""
    if t.peer is None or t.peer == "slirp4netns" or t.op != ">=" or t.difference:
        return None
    theirs, ref = index.get((t.workload, variant, t.peer)), index.get((t.workload, variant, "slirp4netns"))
    if theirs is None or ref is None:
        return None
    a, b, idle = theirs.summary(t.metric), ref.summary(t.metric), theirs.summary("host_idle_pct")
    if a is None or b is None or idle is None or a.median >= b.median or idle.median < ANOMALY_IDLE_PCT:
        return None
    return (f"{t.peer} {a.median:.3g} below slirp4netns {b.median:.3g} with the machine "
            f"{idle.median:.0f}% idle: stalled, not busy")


def fmt_summary(s: Summary | None, metric: Metric) -> str:
    if s is None:
        return "-"
    f = metric.fmt
    if s.n == 1:
        return f.format(s.median)
    return f"{f.format(s.median)} ({f.format(s.min)}-{f.format(s.max)})"


def fmt_cell(cell: Cell | None, metric: Metric) -> str:
    if cell is None:
        return "-"
    if cell.na:
        return f"n/a ({cell.na})"
    s = cell.summary(metric.name)
    if s is None:
        return "failed" if cell.errors else "-"
    return fmt_summary(s, metric)


def ratio_rows(cells: list[Cell], workload: str, metric: Metric,
               peers: list[str]) -> list[tuple[str, dict[str, str], dict[str, float | None]]]:
    """Per variant: formatted cell of every peer, and the slirpy/peer ratio for each other peer."""
    index = {(c.workload, c.variant, c.peer): c for c in cells}
    rows = []
    seen: list[str] = []
    for c in cells:
        if c.workload == workload and c.variant not in seen:
            seen.append(c.variant)
    for v in seen:
        texts = {p: fmt_cell(index.get((workload, v, p)), metric) for p in peers}
        mine = index.get((workload, v, SUBJECT))
        ratios = {}
        for p in peers:
            if p == SUBJECT:
                continue
            other = index.get((workload, v, p))
            ratios[p] = ratio(mine.summary(metric.name) if mine else None,
                              other.summary(metric.name) if other else None)
        rows.append((v, texts, ratios))
    return rows


def format_table(cells: list[Cell], workload: str, metric: Metric, peers: list[str]) -> str:
    rows = ratio_rows(cells, workload, metric, peers)
    if not rows:
        return ""
    present = [p for p in peers if any(r[1][p] != "-" for r in rows)]
    others = [p for p in present if p != SUBJECT] if metric.compare else []
    head = ["variant", *present, *[f"/{p}" for p in others]]
    body = []
    for variant, texts, ratios in rows:
        body.append([variant, *[texts[p] for p in present],
                     *["-" if ratios[p] is None else f"{ratios[p]:.2f}x" for p in others]])
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    if metric.compare:
        lines = [f"{metric.label} [{metric.unit}] ({'higher' if metric.higher_is_better else 'lower'}"
                 f" is better; /peer = {SUBJECT} median / peer median)"]
    else:
        lines = [f"{metric.label} [{metric.unit}]"]
    for r in [head, *body]:
        lines.append("  " + "  ".join(x.ljust(w) if i == 0 else x.rjust(w)
                                      for i, (x, w) in enumerate(zip(r, widths))))
    return "\n".join(lines)
