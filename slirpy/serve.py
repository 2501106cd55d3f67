"""Serve a sandbox's TAP until its command exits: what `slirpy run`, `slirpy selfcheck` and
slirp4netns mode share once the runtime exists.

`serve_sandbox` attaches the runtime to the running loop, starts the published ports and the
API socket, lets the command run, passes stop signals on to it, and when it has exited lets
the flows finish (up to `runtime.linger` seconds) before detaching. It sees the runtime and
the command only through the two small protocols below, so this module imports neither
runtime.py nor sandbox/ (runtime.py re-exports `serve_sandbox` under its old name).
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Awaitable, Callable, Protocol

_FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class ServedCommand(Protocol):
    """What serve_sandbox needs of the command it serves: a sandbox.Sandbox that `slirpy run`
    made, or slirp4netns mode's AttachedTarget (someone else's namespace)."""

    pidfd: int                 # readable once the command is gone

    def release(self) -> None: ...
    def send_signal(self, sig: int) -> None: ...
    def wait(self) -> int: ...


class ServedRuntime(Protocol):
    """What serve_sandbox needs of the runtime (runtime.Runtime)."""

    linger: float              # seconds to let flows finish after the command exited

    def attach(self, loop: asyncio.AbstractEventLoop) -> None: ...
    async def start_control(self) -> None: ...
    async def drain(self, timeout: float) -> None: ...
    def detach(self) -> None: ...


def _foreground_on_tty() -> bool:
    for fd in (0, 1, 2):
        try:
            if os.isatty(fd):
                return os.tcgetpgrp(fd) == os.getpgrp()
        except OSError:
            continue
    return False


async def serve_sandbox(runtime: ServedRuntime, sandbox: ServedCommand,
                        setup: Callable[[], Awaitable[None]] | None = None,
                        harden: Callable[[], object] | None = None) -> int:
    """Serve the sandbox's TAP until its command exits; return the command's exit code.

    `setup`, if given, is awaited inside the loop before the command starts (the self-check
    starts its host-side servers with it). `harden`, if given, is called once set-up is over
    and before the first frame can be read (harden.py); what it raises propagates.
    """
    loop = asyncio.get_running_loop()
    if harden is not None:
        harden()
    runtime.attach(loop)
    await runtime.start_control()
    if setup is not None:
        await setup()
    exited = loop.create_future()

    def on_child_exit() -> None:
        loop.remove_reader(sandbox.pidfd)
        if not exited.done():
            exited.set_result(None)

    def forward(sig: int) -> None:
        # A terminal's ^C already reached the command: it is in our foreground process
        # group. Forward only signals that were sent to slirpy alone.
        if sig == signal.SIGINT and _foreground_on_tty():
            return
        sandbox.send_signal(sig)

    loop.add_reader(sandbox.pidfd, on_child_exit)
    for sig in _FORWARDED_SIGNALS:
        loop.add_signal_handler(sig, forward, sig)
    sandbox.release()
    try:
        await exited
        # The command is gone, but the guest kernel may still be sending what it wrote
        # before it exited (close() returns before the data has left): keep serving until
        # the flows have finished or the linger time is up.
        await runtime.drain(runtime.linger)
    finally:
        for sig in _FORWARDED_SIGNALS:
            loop.remove_signal_handler(sig)
        runtime.detach()
    return sandbox.wait()
