"""helpers/testns gives every run its own scratch space (issue 12).

Inside the test namespace everyone is uid 0, so with a shared /tmp every user's pytest would
use /tmp/pytest-of-root (as it names the directory after $USER only when that is set) and the second user's run would fail on the first one's directory.
helpers/testns therefore exports TMPDIR as a fresh tmpfs mounted, in its own mount namespace
only, on a new directory under the caller's temp dir; pytest's temporary root and every
`tempfile` user of the run live in there.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import TESTNS

pytestmark = pytest.mark.netns


def mount_of(path: str) -> tuple[str, str] | None:
    """(fstype, mount source) of the mount whose mount point is exactly `path`, if any."""
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, right = line.split(" - ", 1)
            if left.split()[4] == path:
                fstype, source = right.split()[:2]
                found = (fstype, source)          # the last one is the one on top
    return found


def test_pytest_temporary_root_is_on_this_runs_own_tmpfs(tmp_path_factory):
    tmpdir = os.environ.get("TMPDIR", "")
    assert Path(tmpdir).name.startswith("slirpy-testns."), tmpdir
    assert mount_of(tmpdir) == ("tmpfs", "slirpy-testns"), tmpdir
    assert tempfile.gettempdir() == tmpdir
    assert Path(tmpdir) in tmp_path_factory.getbasetemp().parents
    # the sandbox records and network definitions of this run are its own too
    assert os.environ["XDG_RUNTIME_DIR"] == f"{tmpdir}/run" and os.environ["XDG_DATA_HOME"] == f"{tmpdir}/data"


def test_a_second_run_gets_a_fresh_scratch_that_it_does_not_share(tmp_path_factory):
    mine = tmp_path_factory.getbasetemp().parent       # this run's own pytest-of-USER
    assert mine.parent == Path(os.environ["TMPDIR"]) and mine.is_dir()
    script = (f'echo "$TMPDIR"; ls -A "$TMPDIR" | wc -l; mkdir "$TMPDIR/{mine.name}"; '
              f': > "$TMPDIR/{mine.name}/theirs"; echo ready; read _ || :')
    proc = subprocess.Popen([str(TESTNS), "sh", "-c", script], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        theirs_dir = proc.stdout.readline().strip()
        entries = proc.stdout.readline().strip()
        ready = proc.stdout.readline().strip()
        assert ready == "ready", (theirs_dir, entries, ready, proc.stderr.read() if proc.poll() else "")
        assert theirs_dir != os.environ["TMPDIR"] and Path(theirs_dir).name.startswith("slirpy-testns.")
        assert entries == "2"                   # only its own run/ and data/: nothing of ours in there
        # while it runs, its files are not visible from here: its tmpfs is its own
        assert not (Path(theirs_dir) / mine.name).exists()
        assert not (mine / "theirs").exists()
    finally:
        proc.stdin.close()
        proc.wait(30)
    assert proc.returncode == 0
    assert not Path(theirs_dir).exists()        # and it removed its directory on exit
