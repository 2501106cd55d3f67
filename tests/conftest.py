"""Suite-wide pytest set-up.

- Hypothesis: profile "slirpy" (no example database: the checkout may be read-only; no
  deadline: CI machines are slow and noisy).  ``--long`` switches to "slirpy-long", with many
  more examples, and enables tests marked ``long`` (skipped otherwise).
- netns safety: tests under ``tests/netns`` start real namespaces and real traffic.  They must
  only ever run inside ``helpers/testns`` (a throw-away user+net+mount+pid namespace whose only
  interface is lo with 203.0.113.1 and 198.51.100.1).  If such a test is collected and we are
  not in there, the whole pytest command is re-executed under ``helpers/testns``; if that is
  impossible, the run fails loudly.  They are never run in the real network namespace and
  never silently skipped.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import sys
from pathlib import Path

import pytest

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # hypothesis is a test extra; unit tests that need it import it anyway
    settings = None

REPO = Path(__file__).resolve().parent.parent
TESTNS = REPO / "helpers" / "testns"
TESTNS_ADDRS = ("203.0.113.1", "198.51.100.1")

if settings is not None:
    settings.register_profile(
        "slirpy",
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.register_profile(
        "slirpy-long",
        database=None,
        deadline=None,
        max_examples=5000,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.load_profile("slirpy")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help="run tests marked 'long' and use many more Hypothesis examples")


def pytest_configure(config: pytest.Config) -> None:
    # The markers are also declared in pyproject.toml; declaring them here keeps
    # --strict-markers working when pytest is pointed at a different ini file.
    config.addinivalue_line("markers", "netns: runs real namespaces (inside helpers/testns)")
    config.addinivalue_line("markers", "long: long soak/fuzz runs, opt-in with --long")
    if settings is not None and config.getoption("--long"):
        settings.load_profile("slirpy-long")


def in_testns() -> tuple[bool, str]:
    """Are we inside helpers/testns?  Returns (yes, reason-if-not).

    Trusting the environment variable alone is not enough (it is inherited by anything), so
    also check the namespace itself: lo must be the only interface, it must carry the
    test addresses, and no route may point anywhere but lo.
    """
    if os.environ.get("SLIRPY_TESTNS") != "1":
        return False, "SLIRPY_TESTNS is not set"
    names = sorted(name for _, name in socket.if_nameindex())
    if names != ["lo"]:
        return False, f"network interfaces are {names}, expected only lo"
    for addr in TESTNS_ADDRS:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((addr, 0))
            except OSError as e:
                return False, f"{addr} is not a local address here ({e.strerror})"
    try:
        with open("/proc/net/route") as f:
            routes = f.read().splitlines()[1:]
    except OSError as e:
        return False, f"cannot read /proc/net/route: {e}"
    for line in routes:
        iface = line.split()[0] if line.split() else ""
        if iface != "lo":
            return False, f"found a route via {iface!r}"
    return True, ""


def _reexec_under_testns(config: pytest.Config, reason: str) -> None:
    if os.environ.get("SLIRPY_TESTNS_REEXEC") == "1":
        # We already re-executed once and still are not in a proper test namespace.
        pytest.exit(f"netns tests collected, but the test namespace is not usable: {reason}",
                    returncode=pytest.ExitCode.USAGE_ERROR)
    if not os.access(TESTNS, os.X_OK) or shutil.which("unshare") is None:
        pytest.exit(f"netns tests collected outside helpers/testns ({reason}) and {TESTNS} "
                    "cannot be run; refusing to run them in the real network namespace",
                    returncode=pytest.ExitCode.USAGE_ERROR)
    args = [str(TESTNS), sys.executable, "-m", "pytest", *config.invocation_params.args]
    # Stop output capturing and restore the real stdout/stderr before replacing the process.
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        capman.stop_global_capturing()
    sys.stdout.write(f"slirpy: netns tests collected outside the test namespace ({reason});\n"
                     f"slirpy: re-running under helpers/testns: {shlex.join(args)}\n")
    sys.stdout.flush()
    sys.stderr.flush()
    env = dict(os.environ, SLIRPY_TESTNS_REEXEC="1")
    os.chdir(config.invocation_params.dir)
    os.execve(str(TESTNS), args, env)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--long"):
        skip_long = pytest.mark.skip(reason="long test: run with --long")
        for item in items:
            if "long" in item.keywords:
                item.add_marker(skip_long)

    netns_dir = REPO / "tests" / "netns"
    for item in items:
        # Everything under tests/netns is a netns test, marked or not.
        if netns_dir in Path(item.path).parents and "netns" not in item.keywords:
            item.add_marker(pytest.mark.netns)
    netns_items = [item for item in items if "netns" in item.keywords]
    if not netns_items or config.getoption("collectonly"):
        return
    ok, reason = in_testns()
    if not ok:
        _reexec_under_testns(config, reason)
