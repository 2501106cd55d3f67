#!/usr/bin/env python3
"""perf/plot.py: PNG charts of perf/bench results, one per workload.

perf/bench prints tables; a reader of the README wants to see at a glance where slirpy stands
next to its peers and how far it is from the kernel. This draws, for each workload in a results
JSON, the workload's headline metric (its first one: throughput, latency, req/s, ...) as grouped
bars, slirpy and each userspace peer side by side per variant, the bar at the median of the runs
and the whiskers at their min and max. The kernel references (loopback, veth) have no network
process to compare and set the ceiling, so they are drawn as horizontal lines across each
variant's group (a faint band for their min-max) rather than as bars.

matplotlib is an optional extra (`pip install -e '.[perf]'`), never a dependency of slirpy:
importing this module does not need it, plotting does (MissingMatplotlib says how to get it).

    perf/plot.py perf/results/bench-*.json --out docs/charts
    perf/bench --plot DIR ...          (the same charts for the run just made)

One input file: DIR/WORKLOAD.png. Several: DIR/STEM/WORKLOAD.png, STEM the file's name without
.json. Workload titles, metrics and units come from perf/bench's own table, so saved results
of any age are labelled as the bench labels them now.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import json
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "perf" / "bench"
INSTALL_HINT = "pip install -e '.[perf]' (matplotlib)"
KERNEL_PEERS = ("loopback", "veth")
PEER_ORDER = ["slirpy", "slirpy-ipv4", "slirp4netns", "pasta", "rootlesskit"]
BAR_COLORS = {"slirpy": "#1f77b4", "slirpy-ipv4": "#6baed6", "slirp4netns": "#ff7f0e",
              "pasta": "#2ca02c", "rootlesskit": "#9467bd"}
LINE_STYLES = {"loopback": ("#222222", "--"), "veth": ("#d62728", ":")}
WIDTH_PX, HEIGHT_PX, DPI = 1000, 500, 100
MAX_CHARTS = 64          # a results file has a dozen workloads; refuse anything absurd


class MissingMatplotlib(RuntimeError):
    """matplotlib is not installed: the message says how to install it."""


@dataclass(frozen=True)
class ChartSpec:
    """What one workload's chart shows: its description and its headline metric."""
    workload: str
    title: str
    metric: str
    label: str
    unit: str
    higher_is_better: bool
    fmt: str = "{:.2f}"


@dataclass(frozen=True)
class Stat:
    median: float
    min: float
    max: float


def specs_from_workloads(workloads: dict[str, Any]) -> dict[str, ChartSpec]:
    """ChartSpecs from perf/bench's WORKLOADS (name -> Workload with .title and .metrics)."""
    out = {}
    for name, w in workloads.items():
        m = w.metrics[0]
        out[name] = ChartSpec(name, w.title, m.name, m.label, m.unit, m.higher_is_better, m.fmt)
    return out


def load_bench() -> Any:
    """perf/bench loaded as a module (a script without .py; loading it defines, runs nothing)."""
    loader = importlib.machinery.SourceFileLoader("slirpy_perf_bench", str(BENCH))
    mod = sys.modules.get(loader.name)
    if mod is not None:
        return mod
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = mod          # its dataclasses look their module up there
    try:
        loader.exec_module(mod)
    except BaseException:
        del sys.modules[loader.name]
        raise
    return mod


def bench_specs() -> dict[str, ChartSpec]:
    """ChartSpecs for perf/bench's workloads, as the bench describes them now."""
    return specs_from_workloads(load_bench().WORKLOADS)


def fallback_spec(workload: str, summaries: list[dict]) -> ChartSpec:
    """A workload perf/bench no longer knows: its first non-host metric, unlabelled."""
    names = sorted({k for s in summaries if s.get("workload") == workload
                    for k in (s.get("summary") or {}) if k != "host_idle_pct"})
    metric = names[0] if names else "value"
    return ChartSpec(workload, workload, metric, metric, "", True)


def cell_stats(summaries: list[dict], spec: ChartSpec) -> tuple[list[str], list[str],
                                                                  dict[tuple[str, str], Any]]:
    """(variants, peers, {(peer, variant): Stat | "n/a" | "failed"}) of one workload."""
    variants: list[str] = []
    peers: list[str] = []
    cells: dict[tuple[str, str], Any] = {}
    for s in summaries:
        if s.get("workload") != spec.workload:
            continue
        v, p = str(s["variant"]), str(s["peer"])
        if v not in variants:
            variants.append(v)
        if p not in peers:
            peers.append(p)
        m = (s.get("summary") or {}).get(spec.metric)
        if m and m.get("n"):
            cells[(p, v)] = Stat(float(m["median"]), float(m["min"]), float(m["max"]))
        else:
            cells[(p, v)] = "n/a" if s.get("na") else "failed"
    rank = {p: i for i, p in enumerate(PEER_ORDER + list(KERNEL_PEERS))}
    peers.sort(key=lambda p: (rank.get(p, len(rank)), p))
    return variants, peers, cells


def footnote(meta: dict) -> str:
    """The run's date, shape and how busy the machine was, for the chart's foot."""
    started = str(meta.get("started", "?"))
    if len(started) == 15 and started[8] == "-":
        started = (f"{started[:4]}-{started[4:6]}-{started[6:8]} "
                   f"{started[9:11]}:{started[11:13]}")

    def load(key: str) -> str:
        d = meta.get(key) or {}
        la = " ".join(str(x) for x in d.get("loadavg", [])) or "?"
        idle = d.get("idle_pct")
        return f"loadavg {la}" + ("" if idle is None else f", {idle}% idle")

    return (f"perf/bench run {started}, {meta.get('runs', '?')} run(s) x {meta.get('seconds', '?')}"
            f" s per cell; kernel {meta.get('kernel', '?')}, {meta.get('cpus', '?')} CPUs; "
            f"host before: {load('load_before')}; after: {load('load_after')}. "
            "Bars: median of the runs, whiskers: min-max.")


def _require_matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError as e:
        raise MissingMatplotlib(f"plotting needs matplotlib: {INSTALL_HINT}") from e
    matplotlib.use("Agg")            # files only, never a display
    from matplotlib.figure import Figure
    return Figure


def _rectangle(*args: Any, **kw: Any) -> Any:
    from matplotlib.patches import Rectangle
    return Rectangle(*args, **kw)


def _draw_bars(ax: Any, spec: ChartSpec, variants: list[str], bar_peers: list[str],
               cells: dict[tuple[str, str], Any]) -> None:
    width = 0.8 / max(1, len(bar_peers))
    labels = len(variants) * len(bar_peers) <= 24
    for j, p in enumerate(bar_peers):
        xs, meds, lo, hi = [], [], [], []
        for i, v in enumerate(variants):
            x = i - 0.4 + width * (j + 0.5)
            c = cells.get((p, v))
            if isinstance(c, Stat):
                xs.append(x)
                meds.append(c.median)
                lo.append(c.median - c.min)
                hi.append(c.max - c.median)
                if labels:
                    ax.annotate(spec.fmt.format(c.median), (x, c.max), xytext=(0, 2),
                                textcoords="offset points", ha="center", va="bottom", fontsize=7)
            elif c is not None:
                ax.text(x, 0, f" {p}: {c}", rotation=90, ha="center", va="bottom", fontsize=7,
                        color="0.4")
        color = BAR_COLORS.get(p, "0.6")
        if not xs:                  # no bar at all: a legend entry of the right colour still
            ax.add_patch(_rectangle((0, 0), 0, 0, color=color, label=p))
            continue
        ax.bar(xs, meds, width * 0.92, yerr=[lo, hi], capsize=3, label=p, color=color, zorder=2,
               error_kw={"elinewidth": 1, "ecolor": "0.2", "zorder": 2})


def _draw_references(ax: Any, variants: list[str], ref_peers: list[str],
                     cells: dict[tuple[str, str], Any]) -> None:
    for p in ref_peers:
        color, style = LINE_STYLES.get(p, ("0.3", "-."))
        at = [(i, c) for i, v in enumerate(variants) if isinstance(c := cells.get((p, v)), Stat)]
        if not at:
            continue
        for i, c in at:
            ax.fill_between([i - 0.45, i + 0.45], c.min, c.max, color=color, alpha=0.12, lw=0,
                            zorder=1)
        ax.hlines([c.median for _, c in at], [i - 0.45 for i, _ in at], [i + 0.45 for i, _ in at],
                  colors=color, linestyles=style, lw=2, zorder=3, label=f"{p} (kernel reference)")


def plot_workload(spec: ChartSpec, summaries: list[dict], meta: dict) -> Any:
    """One workload's chart as a matplotlib Figure (1000x500 px at its dpi), not yet saved."""
    Figure = _require_matplotlib()
    variants, peers, cells = cell_stats(summaries, spec)
    bar_peers = [p for p in peers if p not in KERNEL_PEERS]
    ref_peers = [p for p in peers if p in KERNEL_PEERS]
    fig = Figure(figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI)
    title = textwrap.wrap(spec.title, 95)
    fig.subplots_adjust(left=0.08, right=0.78, top=0.87 if len(title) == 1 else 0.83, bottom=0.2)
    ax = fig.add_subplot()
    fig.suptitle("\n".join(title), fontsize=11, fontweight="bold")
    better = "higher is better" if spec.higher_is_better else "lower is better"
    ax.set_title(f"{spec.label} ({better})", fontsize=9)
    _draw_bars(ax, spec, variants, bar_peers, cells)
    _draw_references(ax, variants, ref_peers, cells)
    ax.set_xticks(range(len(variants)), variants, fontsize=8)
    ax.set_xlim(-0.5, len(variants) - 0.5)
    ax.set_xlabel("variant", fontsize=9)
    unit = "\u00b5s" if spec.unit == "us" else spec.unit
    ax.set_ylabel(f"{spec.metric}, {unit}" if unit else spec.metric, fontsize=9)
    top = max((c.max for c in cells.values() if isinstance(c, Stat)), default=0.0)
    ax.set_ylim(0, top * 1.15 if top > 0 else 1.0)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    handles, labels = ax.get_legend_handles_labels()
    rank = {p: i for i, p in enumerate(peers)}         # bars in peer order, then references
    order = sorted(range(len(labels)), key=lambda k: rank.get(labels[k].split(" ")[0], len(rank)))
    ax.legend([handles[k] for k in order], [labels[k] for k in order], loc="upper left",
              bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.text(0.01, 0.015, "\n".join(textwrap.wrap(footnote(meta), 175)), fontsize=7,
             color="0.35", ha="left", va="bottom")
    return fig


def plot_results(data: dict, out_dir: Path | str,
                 specs: dict[str, ChartSpec] | None = None) -> list[tuple[Path, Any]]:
    """Write OUT_DIR/WORKLOAD.png for each workload in a perf/bench results dict; returns
    (path, figure) pairs in the bench's workload order. Raises MissingMatplotlib."""
    _require_matplotlib()
    summaries = list(data.get("summaries") or [])
    meta = dict(data.get("meta") or {})
    specs = bench_specs() if specs is None else specs
    present = list(dict.fromkeys(str(s["workload"]) for s in summaries))
    order = [w for w in specs if w in present] + [w for w in present if w not in specs]
    if len(order) > MAX_CHARTS:
        raise ValueError(f"{len(order)} workloads in one results file (at most {MAX_CHARTS})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for w in order:
        spec = specs.get(w) or fallback_spec(w, summaries)
        fig = plot_workload(spec, summaries, meta)
        path = out / f"{w}.png"
        fig.savefig(path, dpi=DPI, format="png")
        written.append((path, fig))
    return written


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="perf/plot.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", help="perf/bench results JSON file(s)")
    ap.add_argument("--out", required=True, help="directory for the PNG charts")
    a = ap.parse_args(argv)
    specs = bench_specs()
    for name in a.results:
        try:
            data = json.loads(Path(name).read_text())
        except (OSError, ValueError) as e:
            print(f"perf/plot.py: {name}: {e}", file=sys.stderr)
            return 1
        out = Path(a.out) if len(a.results) == 1 else Path(a.out) / Path(name).stem
        try:
            written = plot_results(data, out, specs)
        except MissingMatplotlib as e:
            print(f"perf/plot.py: {e}", file=sys.stderr)
            return 1
        for path, _ in written:
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
