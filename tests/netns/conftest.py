"""Fixtures for the netns tests.  tests/conftest.py has already made sure (by re-executing
pytest under helpers/testns if needed) that we run in the throw-away outer test namespace;
the autouse guard below re-checks it per test and fails -- never skips -- if not."""

from __future__ import annotations

import pytest

from tests.conftest import in_testns
from tests.netns.util import HostServer, process_table, stray_processes


@pytest.fixture(autouse=True)
def _inside_testns():
    ok, reason = in_testns()
    if not ok:
        pytest.fail(f"netns test outside helpers/testns ({reason}); run it via helpers/test "
                    "or plain pytest from the repository root", pytrace=False)


@pytest.fixture
def host_server():
    """Factory: host_server(mode, addr=HOST_ADDR, **kw) -> a running HostServer, closed at
    teardown."""
    servers: list[HostServer] = []

    def make(mode: str, *args, **kwargs) -> HostServer:
        srv = HostServer(mode, *args, **kwargs)
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.close()


@pytest.fixture
def no_stray_processes():
    """Fail the test if it leaves any process behind (testns has its own PID namespace and
    /proc, so the process table is exactly ours)."""
    before = process_table()
    yield
    stray = stray_processes(before)
    assert not stray, "processes left behind:\n" + "\n".join(
        f"  {pid} [{state}] {cmd}" for pid, (state, cmd) in sorted(stray.items()))


@pytest.fixture
def short_tmp():
    """A fresh directory with a short path. UNIX socket paths under it must fit in 107 bytes,
    and pytest's tmp_path grows with the user's and the test's names (a CI user's
    `/tmp/slirpy-testns.X/pytest-of-slirpyci/pytest-0/test_two_concurrent_runs_creat0/run/...`
    did not)."""
    import shutil
    import tempfile
    from pathlib import Path
    d = tempfile.mkdtemp(prefix="st")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)
