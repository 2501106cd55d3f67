"""`slirpy run --map-subuids`: P writes the sandbox's maps with newuidmap/newgidmap while S waits
(sandbox/idmap.py: the one setup that keeps the ``unshared``/``mapped`` exchange; a single id is
written by S itself).  Needs the user's subordinate ranges, which newuidmap refuses inside
helpers/testns: runs in the machine's own namespaces (see conftest.py), with no network traffic.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from slirpy import doctor

SLIRPY = Path(sys.executable).parent / "slirpy"


def _own_range(path: str) -> tuple[int, int] | None:
    return doctor.subid_range(path, doctor.user_name(os.geteuid()), os.geteuid())


pytestmark = pytest.mark.skipif(
    shutil.which("newuidmap") is None or _own_range("/etc/subuid") is None or _own_range("/etc/subgid") is None,
    reason="needs newuidmap/newgidmap and this user's ranges in /etc/subuid and /etc/subgid")


def _maps(options: list[str]) -> list[list[str]]:
    res = subprocess.run([str(SLIRPY), "run", *options, "--", "cat", "/proc/self/uid_map", "/proc/self/gid_map"],
                         capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    return [line.split() for line in res.stdout.splitlines()]


def test_the_subordinate_ranges_are_mapped_after_our_own_id():
    (ustart, ucount), (gstart, gcount) = _own_range("/etc/subuid"), _own_range("/etc/subgid")
    assert _maps(["--map-subuids"]) == [
        ["0", str(os.geteuid()), "1"], ["1", str(ustart), str(ucount)],
        ["0", str(os.getegid()), "1"], ["1", str(gstart), str(gcount)]]


def test_without_it_the_sandbox_maps_our_own_id_alone():
    assert _maps([]) == [["0", str(os.geteuid()), "1"], ["0", str(os.getegid()), "1"]]
