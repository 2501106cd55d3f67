"""Start-up order of a hardened `slirpy run` (issue 18): the command may start before the serving
process is hardened, but only once the machine has shown it can be hardened (libseccomp found,
the io_uring filter loaded: `harden.before_loop`), and the process reads no frame before it is
hardened (`serve_sandbox` hardens, then attaches the TAP).  Checked here with stand-ins for the
sandbox and the runtime; tests/netns/test_harden_e2e.py checks the real processes.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from slirpy import harden, launch
from slirpy.config import NetConfig, PortSpec
from slirpy.harden import HardenError, HardenOptions
from slirpy.serve import serve_sandbox


class FakeSandbox:
    """What launch.run_sandbox and serve_sandbox use of a sandbox.Sandbox; every call logged."""

    def __init__(self, log: list[str]) -> None:
        self.log = log
        r, w = os.pipe()
        os.close(w)                       # readable at once: the command has "exited"
        self.pidfd = r
        self.tap_fd = -1
        self.pid = 12345
        self.fallback_reason = None
        self.vnet_hdr = self.offload = False

    def release(self) -> None:
        self.log.append("release")

    def send_signal(self, sig: int) -> None:
        self.log.append(f"signal {signal.Signals(sig).name}")

    def wait(self) -> int:
        self.log.append("wait")
        return 0

    def close(self) -> None:
        os.close(self.pidfd)


class FakeRuntime:
    linger = 0.0

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.log.append("attach")         # the TAP reader: the first frame can be read from now on

    async def start_control(self) -> None:
        self.log.append("start_control")

    async def drain(self, timeout: float) -> None:
        self.log.append("drain")

    def detach(self) -> None:
        self.log.append("detach")


def test_serve_sandbox_hardens_before_it_attaches_the_tap():
    log: list[str] = []
    sb = FakeSandbox(log)
    try:
        code = asyncio.run(serve_sandbox(FakeRuntime(log), sb, harden=lambda: log.append("harden")))
    finally:
        sb.close()
    assert code == 0
    assert log[:3] == ["harden", "attach", "start_control"], log


def test_serve_sandbox_reads_nothing_when_hardening_fails():
    log: list[str] = []
    sb = FakeSandbox(log)

    def fails() -> None:
        raise HardenError("seccomp: refused")
    try:
        with pytest.raises(HardenError):
            asyncio.run(serve_sandbox(FakeRuntime(log), sb, harden=fails))
    finally:
        sb.close()
    assert log == [], log                 # no TAP reader, no release


def _config(**kw) -> NetConfig:
    return NetConfig(**kw)


@pytest.mark.parametrize("ports, pcap, api_given, early", [
    ((), None, False, True),
    ((PortSpec("tcp", "127.0.0.1", 8080, 80),), None, False, False),
    ((), ("/tmp/x.pcap", 1 << 20), False, False),
    ((), None, True, False),
])
def test_which_runs_release_their_command_early(ports, pcap, api_given, early):
    assert launch.releases_early(_config(ports=ports), pcap, api_given) is early


def _start_with(monkeypatch, log: list[str], before_loop) -> FakeSandbox:
    from slirpy import sandbox as sandbox_pkg
    sb = FakeSandbox(log)

    class Start:
        @staticmethod
        def start(opts, meanwhile=None):
            log.append("start")
            if meanwhile is not None:
                meanwhile()
            return sb
    monkeypatch.setattr(sandbox_pkg, "Sandbox", Start)
    monkeypatch.setattr(harden, "before_loop", before_loop)
    return sb


def test_a_machine_that_cannot_harden_never_runs_the_command(monkeypatch, capsys):
    """before_loop's refusal (libseccomp missing, seccomp refused) comes before the release:
    the sandbox is killed, one line says why, the exit status is 1."""
    log: list[str] = []

    def refuse(opts: HardenOptions) -> None:
        log.append("before_loop")
        raise HardenError("seccomp (io_uring_setup): libseccomp not found")
    sb = _start_with(monkeypatch, log, refuse)
    try:
        with pytest.raises(SystemExit) as exc:
            launch.run_sandbox(_config(), ["true"], harden=HardenOptions())
    finally:
        sb.close()
    assert exc.value.code == 1
    assert log == ["start", "before_loop", "signal SIGKILL", "wait"], log
    err = capsys.readouterr().err
    assert err.startswith("slirpy: cannot harden the network process: seccomp (io_uring_setup): "), err


class Released(Exception):
    pass


def test_a_hardened_run_checks_before_loop_then_releases_before_importing_the_runtime(monkeypatch):
    """The early path: start, before_loop, release, and only then the event loop and runtime
    (stopped here at the release)."""
    log: list[str] = []

    def ok(opts: HardenOptions) -> None:
        log.append("before_loop")
    sb = _start_with(monkeypatch, log, ok)

    def release() -> None:
        log.append("release")
        raise Released
    sb.release = release                  # type: ignore[method-assign]
    try:
        with pytest.raises(Released):
            launch.run_sandbox(_config(), ["true"], harden=HardenOptions())
    finally:
        sb.close()
    assert log == ["start", "before_loop", "release"], log
