"""perf/plot.py and perf/bench --plot: PNG charts of benchmark results.

From a small synthetic results dict and from a real perf/bench JSON (tests/unit/data/): one
valid 1000x500 PNG per workload, titled with the workload's description, the userspace peers
as bars at their medians with min-max whiskers, the kernel references as lines; without
matplotlib the bench still writes its JSON and says in one line how to install it.
Nothing here runs a benchmark or touches the network.
"""

from __future__ import annotations

import json
import re
import struct
import sys
from pathlib import Path

import pytest
from matplotlib.collections import LineCollection
from matplotlib.colors import to_hex
from matplotlib.container import BarContainer, ErrorbarContainer

from perf import plot

DATA = Path(__file__).parent / "data"
REAL = DATA / "bench-quick-bulk-pingpong.json"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def stat(med: float, lo: float, hi: float, n: int = 3) -> dict:
    return {"median": med, "min": lo, "max": hi, "n": n}


def row(workload: str, variant: str, peer: str, metrics: dict | None = None,
        na: str | None = None, errors: int = 0) -> dict:
    return {"workload": workload, "variant": variant, "peer": peer, "na": na,
            "errors": errors, "summary": metrics or {}}


def synthetic() -> dict:
    rows = []
    for i, v in enumerate(["1500/up", "1500/down", "65520/up", "65520/down"]):
        base = 2.0 + i
        rows += [row("bulk", v, "slirpy", {"gbps": stat(base * 3, base * 2.5, base * 3.5),
                                             "host_idle_pct": stat(5, 1, 9)}),
                 row("bulk", v, "slirp4netns", {"gbps": stat(base, base * 0.9, base * 1.2)}),
                 row("bulk", v, "pasta", na="pasta not installed"),
                 row("bulk", v, "loopback", {"gbps": stat(base * 10, base * 9, base * 11)}),
                 row("bulk", v, "veth", {"gbps": stat(base * 8, base * 7, base * 8.5)})]
    for v in ["sandbox->host", "host->published"]:
        rows += [row("pingpong", v, "slirpy", {"avg_us": stat(40.0, 38.0, 45.0)}),
                 row("pingpong", v, "rootlesskit", errors=3),
                 row("pingpong", v, "loopback", {"avg_us": stat(8.0, 7.5, 9.0)})]
    meta = {"started": "20260102-030405", "runs": 3, "seconds": 5, "kernel": "6.1.0-test",
            "cpus": 2, "load_before": {"loadavg": ["0.10", "0.20", "0.30"], "idle_pct": 97.5},
            "load_after": {"loadavg": ["1.10", "0.90", "0.50"], "idle_pct": 99.0}}
    return {"meta": meta, "summaries": rows}


def one_line(text: str) -> str:
    return " ".join(text.split())


def bars(ax) -> dict[str, BarContainer]:
    return {c.get_label(): c for c in ax.containers if isinstance(c, BarContainer)}


def test_synthetic_one_png_per_workload_with_title_and_size(tmp_path):
    specs = plot.bench_specs()
    written = plot.plot_results(synthetic(), tmp_path / "charts")
    assert [p.name for p, _ in written] == ["bulk.png", "pingpong.png"]
    assert sorted(x.name for x in (tmp_path / "charts").iterdir()) == ["bulk.png", "pingpong.png"]
    for path, fig in written:
        assert png_size(path) == (1000, 500)
        spec = specs[path.stem]
        assert one_line(fig.get_suptitle()) == spec.title
        ax = fig.axes[0]
        better = "higher is better" if spec.higher_is_better else "lower is better"
        assert ax.get_title() == f"{spec.label} ({better})"
        assert spec.metric in ax.get_ylabel()
        foot = one_line(" ".join(t.get_text() for t in fig.texts))
        assert "2026-01-02 03:04" in foot
        assert "loadavg 0.10 0.20 0.30, 97.5% idle" in foot
        assert "loadavg 1.10 0.90 0.50" in foot
    assert written[0][1].axes[0].get_ylabel() == "gbps, Gbit/s"
    assert written[1][1].axes[0].get_ylabel() == "avg_us, \u00b5s"
    assert "higher is better" in written[0][1].axes[0].get_title()
    assert "lower is better" in written[1][1].axes[0].get_title()


def test_bars_for_userspace_peers_lines_for_kernel_references(tmp_path):
    (_, fig), _ = plot.plot_results(synthetic(), tmp_path)
    ax = fig.axes[0]
    got = bars(ax)
    assert list(got) == ["slirpy", "slirp4netns"]     # none for loopback/veth, nor n/a pasta
    assert [b.get_height() for b in got["slirpy"]] == [6.0, 9.0, 12.0, 15.0]
    assert [b.get_height() for b in got["slirp4netns"]] == [2.0, 3.0, 4.0, 5.0]
    assert sum(t.get_text().strip() == "pasta: n/a" for t in ax.texts) == 4   # one per variant
    # whiskers from min to max: slirpy's first variant spans 5.0 .. 7.0
    err = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    segs = err[0].lines[2][0].get_segments()
    assert [tuple(float(y) for y in s[:, 1]) for s in segs][0] == (5.0, 7.0)
    # slirpy's bars left of slirp4netns's within each variant group
    assert all(a.get_x() < b.get_x() for a, b in zip(got["slirpy"], got["slirp4netns"]))
    refs = {c.get_label(): c for c in ax.collections
            if isinstance(c, LineCollection) and not c.get_label().startswith("_")}
    assert set(refs) == {"loopback (kernel reference)", "veth (kernel reference)"}
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["slirpy", "slirp4netns", "pasta", "loopback (kernel reference)",
                      "veth (kernel reference)"]
    colours = dict(zip(legend, ax.get_legend().legend_handles))
    assert to_hex(colours["pasta"].get_facecolor()) == plot.BAR_COLORS["pasta"]
    assert to_hex(colours["slirpy"].get_facecolor()) == plot.BAR_COLORS["slirpy"]
    # one horizontal segment per variant at the reference's median, across the variant's group
    loop = [tuple(float(v) for v in (*s[0], *s[1]))
            for s in refs["loopback (kernel reference)"].get_segments()]
    assert loop == [(i - 0.45, m, i + 0.45, m) for i, m in enumerate([20.0, 30.0, 40.0, 50.0])]
    veth = [float(s[0][1]) for s in refs["veth (kernel reference)"].get_segments()]
    assert veth == [16.0, 24.0, 32.0, 40.0]


def test_failed_cells_marked_and_axis_starts_at_zero(tmp_path):
    _, (_, fig) = plot.plot_results(synthetic(), tmp_path)
    ax = fig.axes[0]
    assert list(bars(ax)) == ["slirpy"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["slirpy", "rootlesskit", "loopback (kernel reference)"]
    assert sum(t.get_text().strip() == "rootlesskit: failed" for t in ax.texts) == 2
    lo, hi = ax.get_ylim()
    assert lo == 0 and hi >= 45.0
    assert [t.get_text() for t in ax.get_xticklabels()] == ["sandbox->host", "host->published"]


def test_real_results_file(tmp_path):
    data = json.loads(REAL.read_text())
    workloads = list(dict.fromkeys(s["workload"] for s in data["summaries"]))
    specs = plot.bench_specs()
    written = plot.plot_results(data, tmp_path)
    assert sorted(p.stem for p, _ in written) == sorted(workloads)
    for path, fig in written:
        assert png_size(path) == (1000, 500)
        assert path.stat().st_size < 100_000
        assert one_line(fig.get_suptitle()) == specs[path.stem].title
        labels = list(bars(fig.axes[0]))
        assert labels[0] == "slirpy" and "loopback" not in labels
        assert any(isinstance(c, LineCollection) and c.get_label().startswith("loopback")
                   for c in fig.axes[0].collections)


def test_unknown_workload_gets_a_chart_named_after_it(tmp_path):
    data = {"meta": {}, "summaries": [row("mystery", "a", "slirpy", {"zeta": stat(1, 1, 1),
                                                                    "alpha": stat(2, 1, 3)})]}
    [(path, fig)] = plot.plot_results(data, tmp_path)
    assert path.name == "mystery.png" and png_size(path) == (1000, 500)
    assert fig.get_suptitle() == "mystery"
    assert [b.get_height() for b in bars(fig.axes[0])["slirpy"]] == [2.0]     # first metric


def test_cli_several_files_one_directory_each(tmp_path, capsys):
    a, b = tmp_path / "run-a.json", tmp_path / "run-b.json"
    a.write_text(json.dumps(synthetic()))
    b.write_text(REAL.read_text())
    assert plot.main([str(a), str(b), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out.split()
    assert sorted(Path(p).relative_to(tmp_path / "out").as_posix() for p in printed) == sorted(
        ["run-a/bulk.png", "run-a/pingpong.png"]
        + [f"run-b/{w}.png" for w in {s["workload"] for s in json.loads(REAL.read_text())
                                      ["summaries"]}])
    assert plot.main([str(tmp_path / "missing.json"), "--out", str(tmp_path)]) == 1


def test_without_matplotlib_bench_writes_json_and_one_line(tmp_path, monkeypatch, capsys):
    bench = plot.load_bench()
    monkeypatch.setitem(sys.modules, "matplotlib", None)      # import matplotlib -> ImportError
    with pytest.raises(plot.MissingMatplotlib, match=r"pip install -e '\.\[perf\]'"):
        plot.plot_results(synthetic(), tmp_path / "x")
    out = tmp_path / "res.json"
    bench.save_results(out, synthetic(), str(tmp_path / "charts"))
    assert json.loads(out.read_text()) == synthetic()
    assert not (tmp_path / "charts").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "matplotlib" in err[0] and "pip install" in err[0]


def test_bench_save_results_plots_with_its_own_workloads(tmp_path, capsys):
    bench = plot.load_bench()
    assert bench.parse_args(["--plot", str(tmp_path / "charts")]).plot == str(tmp_path / "charts")
    assert bench.parse_args([]).plot is None
    out = tmp_path / "res.json"
    bench.save_results(out, synthetic(), str(tmp_path / "charts"))
    assert json.loads(out.read_text()) == synthetic()
    assert sorted(x.name for x in (tmp_path / "charts").iterdir()) == ["bulk.png", "pingpong.png"]
    assert "charts:" in capsys.readouterr().out


def test_readme_charts_exist_and_stay_small():
    repo = Path(__file__).resolve().parents[2]
    linked = re.findall(r"\]\((docs/charts/[^)]+\.png)\)", (repo / "README.md").read_text())
    assert linked, "the README shows no chart"
    for name in linked:
        path = repo / name
        assert png_size(path) == (1000, 500)
        assert path.stat().st_size < 100_000
