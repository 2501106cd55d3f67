"""`slirpy run` in the network modes where slirpy serves no TAP: `--network none`, `host`,
`sandbox:NAME`, and a named network's member (the networks code calls `run_light` with
net_mode "member").

Here P only starts the sandbox, lets the command run, passes the signals sent to it on to the
command and returns the command's exit code: no event loop, no runtime, no stack.  So this module
imports neither asyncio, uvloop nor the runtime: a member's start-up time and memory are what a
user pays per sandbox.
"""

from __future__ import annotations

import signal
from typing import Callable

from slirpy import registry
from slirpy.config import NetConfig
from slirpy.sandbox import FORWARDED_SIGNALS, Sandbox, SandboxError, SandboxOptions
from slirpy.sandbox import etcfiles

_WAIT_MASK = FORWARDED_SIGNALS | {signal.SIGCHLD}


def run_light(opts: SandboxOptions, started: Callable[[Sandbox], object] | None = None) -> int:
    """Start the sandbox (any mode but private), release it, pass signals on until it exits;
    the command's exit code.  `started(sandbox)` runs before the command is released (record
    its pid).  Raises SandboxError if the sandbox could not be started."""
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _WAIT_MASK)
    try:
        with Sandbox.start(opts) as sandbox:
            if started is not None:
                started(sandbox)
            sandbox.release()
            return _wait_passing_signals(sandbox)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


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
