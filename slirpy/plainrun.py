"""`slirpy run` in the network modes where slirpy serves no TAP: `--network none`, `host`,
`sandbox:NAME`, and a named network's member (the networks code calls `run_light` with
net_mode "member").

Here P only starts the sandbox, lets the command run, passes the signals sent to it on to the
command and returns the command's exit code: no event loop, no runtime, no stack.  So this module
imports neither asyncio, uvloop nor the runtime: a member's start-up time and memory are what a
user pays per sandbox.  Once the command runs, P execs the native waiter (a small C program,
slirpy/sandbox/waiter.c, see `nativewaiter`), or `sandbox.waiter` on a bare interpreter where
that is not built (the command and the sandbox's PID 1 are its children by then): an idle
sandbox is those two small processes.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Callable

from slirpy import registry
from slirpy.config import NetConfig
from slirpy.sandbox import FORWARDED_SIGNALS, Sandbox, SandboxError, SandboxOptions
from slirpy.sandbox import etcfiles

_WAIT_MASK = FORWARDED_SIGNALS | {signal.SIGCHLD}


def run_light(opts: SandboxOptions, started: Callable[[Sandbox], object] | None = None,
              record: str | None = None) -> int:
    """Start the sandbox (any mode but private), release it, pass signals on until it exits;
    the command's exit code.  `started(sandbox)` runs before the command is released (record
    its `ns_pid`).  Raises SandboxError if the sandbox could not be started.

    Once the command runs, this process normally exec()s a waiter (which also removes
    the registry record `record`, ours) and never returns; it returns only if that exec failed,
    or the supervisor did (the caller unregisters then, as before)."""
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _WAIT_MASK)
    try:
        with Sandbox.start(opts) as sandbox:
            if started is not None:
                started(sandbox)
            sandbox.release()
            cmd = sandbox.command_pid()
            if cmd is None:
                return _wait_passing_signals(sandbox)
            return _become_waiter(sandbox, cmd, record)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


def _become_waiter(sandbox: Sandbox, cmd: int, record: str | None) -> int:
    """exec the native waiter (nativewaiter) or else `waiter` on a bare interpreter, keeping I's
    pipe, our record's lock and the blocked signal mask (pending signals too); if neither exec
    works, wait here.  The command's exit code."""
    from slirpy import nativewaiter
    from slirpy.sandbox import waiter

    keep, sandbox.keep_fd = sandbox.keep_fd, -1
    init = sandbox.init_pid or 0
    pids = [str(sandbox.pid), str(cmd), str(init), str(keep)]
    candidates = []
    native = nativewaiter.to_use()
    if native is not None:
        candidates.append([native, "wait", *pids, *_record_args(record)])
    script = os.path.join(os.path.dirname(os.path.abspath(waiter.__file__)), "waiter.py")
    if sys.executable and os.path.isfile(script):
        root = os.path.dirname(os.path.dirname(os.path.dirname(script)))
        candidates.append([sys.executable, "-I", "-S", script, *pids, record or "-", root])
    if candidates:
        os.set_inheritable(keep, True)
        if record:
            registry.keep_across_exec(record)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        for argv in candidates:
            try:
                os.execv(argv[0], argv)
            except OSError:
                pass
    code = waiter.wait_command(sandbox.pid, cmd, init, keep)
    sandbox.ended(code)
    return code


def _record_args(record: str | None) -> list[str]:
    """The native waiter's NAME SANDBOXES_DIR LOCK_FILE: what registry.unregister would use."""
    if record:
        try:
            return [record, registry.sandboxes_dir(), registry.state_lock_path()]
        except (OSError, registry.RegistryError):
            pass
    return ["-", "-", "-"]


def _wait_passing_signals(sandbox: Sandbox) -> int:
    """With _WAIT_MASK blocked: pass on each signal sent to us (kill(2): si_code <= 0; not one
    the terminal sent, which reached the command's process group already) until it exits."""
    while True:
        code = sandbox.poll()
        if code is not None:
            return code
        info = signal.sigwaitinfo(_WAIT_MASK)
        if info.si_signo != signal.SIGCHLD and info.si_code <= 0:
            sandbox.send_signal(info.si_signo)


def mode_options(mode: str, argv: list[str], net: NetConfig, rec: registry.SandboxRecord, *,
                 add_hosts: list[tuple[str, str]], dns: list[str], map_subuids: bool,
                 resolv_conf: str = "/etc/resolv.conf") -> SandboxOptions:
    """SandboxOptions of `--network none|host|sandbox:NAME` for the registered run `rec` (its
    mode, hostname and api_socket are filled in here).  Raises SandboxError (one line)."""
    host_resolv = etcfiles.read_text(resolv_conf)
    resolv = etcfiles.dns_resolv_text(dns, host_resolv) if dns else None
    if mode in ("none", "host"):
        names = [rec.name] + ([rec.hostname] if rec.hostname else [])
        hosts = etcfiles.hosts_text(names, [etcfiles.NO_ADDRESS], add_hosts, etcfiles.read_text("/etc/hosts"))
        rec.mode = mode
        return SandboxOptions(argv=argv, net=net, map_subuids=map_subuids, resolv_conf_text=resolv,
                              hosts_text=hosts, hostname=rec.hostname, net_mode=mode)
    target_name = mode.removeprefix("sandbox:")
    target = registry.lookup(target_name)
    if target is None:
        raise SandboxError(f"no running sandbox named {target_name!r} (see `slirpy ps`)")
    if target.ns_pid is None:
        raise SandboxError(f"sandbox {target_name!r} is still starting; try again")
    root = f"/proc/{target.ns_pid}/root/etc"
    if resolv is None:
        resolv = etcfiles.read_text(f"{root}/resolv.conf") or None
    hosts = etcfiles.read_text(f"{root}/hosts")
    rec.mode, rec.hostname, rec.api_socket = f"sandbox:{target.name}", target.hostname, target.api_socket
    return SandboxOptions(argv=argv, net=net, map_subuids=map_subuids, resolv_conf_text=resolv,
                          hosts_text=etcfiles.append_add_hosts(hosts, add_hosts) if hosts or add_hosts else None,
                          net_mode="join", join_pid=target.ns_pid)
