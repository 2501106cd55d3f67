"""Byte-exact transfers through `slirpy run --impair` (the fault injector on a real TAP).

5 % loss + 5 % reorder + 1 % duplication in both directions between tap0 and the stack: the
guest's kernel TCP and slirpy's TCP must both recover. The 64 MiB recovery requirement is
covered in-process by tests/unit/test_impair.py; here a smaller transfer proves the wiring
and the recovery against a real kernel peer.
"""

from __future__ import annotations

import json

import pytest

from .util import HOST_ADDR, expected, run_guest, run_slirpy

MiB = 1 << 20
IMPAIR = "loss=5%,reorder=5%,dup=1%,seed=7"
# Without TCP timestamps the guest's kernel TCP took no RTT sample in loss recovery after an RTO
# (Karn), and its backoff grew with each lost retransmission, up to Linux's TCP_RTO_MAX of 120 s
# per wait (perf/NOTES.md, "The --impair stall, pinned down"). slirpy offers timestamps now
# (tcp/timestamps.py), so the guest's backoff ends once recovery progresses; the bound stays
# generous (one socket operation may still wait out a few RTOs on a loaded machine).
IO_TIMEOUT = 300.0


@pytest.mark.parametrize("options, size", [
    (["--impair", IMPAIR], 4 * MiB),
    # ~1,400 frames per MiB each way here: 2 MiB is plenty of losses, and stays quick under load
    (["--impair", IMPAIR, "--no-offload", "--mtu", "1500"], 2 * MiB),
], ids=["offload", "nooffload-1500"])
def test_transfers_recover_through_loss_reorder_dup(options, size, host_server, tmp_path):
    stats = tmp_path / "stats.json"
    up = host_server("sink", io_timeout=IO_TIMEOUT)
    down = host_server("source", size=size + 3, seed=21, io_timeout=IO_TIMEOUT)
    r_up, r_down = run_guest(options + ["--stats-file", str(stats)], [
        {"op": "upload", "host": HOST_ADDR, "port": up.port, "size": size + 1, "seed": 20,
         "io_timeout": IO_TIMEOUT},
        {"op": "download", "host": HOST_ADDR, "port": down.port, "io_timeout": IO_TIMEOUT},
    ], timeout=4 * IO_TIMEOUT)
    assert r_up.get("server") == {"len": size + 1, "sha": expected(size + 1, 20)}, r_up
    assert r_down == {"len": size + 3, "sha": expected(size + 3, 21)}
    counters = json.loads(stats.read_text())["counters"]
    # the injector really did drop, reorder and duplicate frames both ways
    for direction in ("to_stack", "to_guest"):
        for kind in ("loss", "reorder", "dup"):
            assert counters.get(f"impair.{direction}.{kind}", 0) > 0, (direction, kind, counters)


def test_bad_impair_spec_is_one_line_and_exit_2():
    r = run_slirpy(["--impair", "loss=150%"], ["true"])
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "loss" in lines[0] and "100%" in lines[0], r.stderr
