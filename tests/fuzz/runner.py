"""Run the fuzz harnesses with the pure-Python engine: ``helpers/fuzz --inputs 1000000``.

Each harness gets N inputs from a seeded `Mutator` over its corpus. A finding (any exception
other than what the harness swallows) is recorded with its input and traceback, written to
``--crash-dir`` as ``<harness>-<sha1>.bin``, and the run goes on. Exit status 1 if anything
was found. Output: one line per harness with inputs, findings, seconds and inputs/s.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from tests.fuzz.harnesses import HARNESSES, make_target
from tests.fuzz.mutate import Mutator


@dataclass
class Finding:
    harness: str
    index: int
    data: bytes
    error: str
    trace: str


@dataclass
class Result:
    harness: str
    inputs: int = 0
    seconds: float = 0.0
    findings: list[Finding] = field(default_factory=list)
    distinct: dict = field(default_factory=dict)     # (exception type, last frame) -> first finding


def run_harness(name: str, inputs: int, seed: int = 0, max_findings: int = 50) -> Result:
    fn = make_target(name, seed)
    _, seeds = HARNESSES[name]
    mut = Mutator(seeds(), seed)
    res = Result(name)
    t0 = time.perf_counter()
    for i in range(inputs):
        data = mut.next()
        try:
            fn(data)
        except Exception as e:           # noqa: BLE001 - a finding, whatever it is
            tb = traceback.extract_tb(e.__traceback__)
            where = f"{tb[-1].filename}:{tb[-1].lineno}" if tb else "?"
            key = (type(e).__name__, where)
            f = Finding(name, i, data, f"{type(e).__name__}: {e}", traceback.format_exc())
            res.findings.append(f)
            res.distinct.setdefault(key, f)
            if name in ("stack", "stack6"):
                fn = make_target(name, seed + i + 1)     # a broken stack is not fuzzed further
            if len(res.findings) >= max_findings:
                res.inputs = i + 1
                break
    else:
        res.inputs = inputs
    res.seconds = time.perf_counter() - t0
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="helpers/fuzz", description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=100_000, help="inputs per harness (default 100000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--harness", action="append", choices=sorted(HARNESSES),
                    help="run only this harness (repeatable); default: all")
    ap.add_argument("--crash-dir", type=Path, default=None,
                    help="write findings here as <harness>-<sha1>.bin (+ .txt traceback)")
    args = ap.parse_args(argv)
    names = args.harness or list(HARNESSES)
    total_found = 0
    print(f"{'harness':10} {'inputs':>10} {'findings':>9} {'seconds':>9} {'inputs/s':>10}")
    for name in names:
        res = run_harness(name, args.inputs, args.seed)
        rate = res.inputs / res.seconds if res.seconds else 0.0
        print(f"{name:10} {res.inputs:>10} {len(res.findings):>9} {res.seconds:>9.1f} {rate:>10.0f}",
              flush=True)
        total_found += len(res.findings)
        for (etype, where), f in res.distinct.items():
            print(f"  finding: {f.error} at {where} (input #{f.index}, {len(f.data)} bytes)")
            print(f"    hex: {f.data.hex()}")
            if args.crash_dir is not None:
                args.crash_dir.mkdir(parents=True, exist_ok=True)
                stem = f"{name}-{hashlib.sha1(f.data).hexdigest()[:16]}"
                (args.crash_dir / f"{stem}.bin").write_bytes(f.data)
                (args.crash_dir / f"{stem}.txt").write_text(f.trace)
    return 1 if total_found else 0


if __name__ == "__main__":
    sys.exit(main())
