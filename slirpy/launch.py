"""Start a sandbox and serve it: what `slirpy run` and `slirpy selfcheck` share.

cli.py parses arguments and selfcheck.py sets up its host-side servers; both then hand a
NetConfig and a command to `run_sandbox`, which starts the sandbox, binds the published ports
and the API socket, runs the loop until the command exits and returns its exit code. Errors
at start are printed as `slirpy: ...` and end the process (`fail`).
"""

from __future__ import annotations

import signal
import sys
from typing import TYPE_CHECKING, Awaitable, Callable, NoReturn

import click

if TYPE_CHECKING:  # pragma: no cover
    from .config import NetConfig
    from .impair import ImpairSpec
    from .named import NamedRun
    from .runtime import Runtime
    from .sandbox import Sandbox


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `slirpy: message` on stderr and exit with `code`."""
    click.echo(f"slirpy: {message}", err=True)
    sys.exit(code)


def run_sandbox(config: NetConfig, argv: list[str], *, map_subuids: bool = False,
                stats_file: str | None = None, quiet: bool = False,
                setup: Callable[[], Awaitable[None]] | None = None,
                impair: ImpairSpec | None = None, api_socket: str | None = None,
                pcap: tuple[str, int] | None = None, named: NamedRun | None = None) -> int:
    """Start the sandbox, serve it until the command exits, return the command's exit code.
    `named`: the run's name, hostname and /etc files (`slirpy run`), told when it has started."""
    import asyncio  # noqa: F401  (before the fork: the child's pyroute2 needs it too)

    from .sandbox import Sandbox, SandboxError, SandboxOptions

    resolv_text = named.resolv_text if named is not None else None
    if resolv_text is None and config.dns_enabled:
        from .resolvconf import ResolvConf
        resolv_text = ResolvConf(config.resolv_conf).sandbox_text(
            str(config.dns), str(config.dns6) if config.ipv6 else None)
    try:
        sandbox = Sandbox.start(SandboxOptions(argv=list(argv), net=config, map_subuids=map_subuids,
                                               resolv_conf_text=resolv_text,
                                               **(named.options() if named is not None else {})),
                                meanwhile=_import_loop_and_runtime)
    except SandboxError as e:
        fail(str(e), 1)
    import uvloop                      # already imported, by Sandbox.start (meanwhile)

    from .runtime import Runtime
    from .serve import serve_sandbox
    try:
        if sandbox.fallback_reason and not quiet:
            click.echo(f"slirpy: notice: TAP offloads unavailable ({sandbox.fallback_reason}); "
                       "running without them (slower)", err=True)
        runtime = Runtime(config, sandbox.tap_fd, vnet_hdr=sandbox.vnet_hdr, offload=sandbox.offload,
                          impair=impair)
        if config.auto_publish is not None:
            from .autoports import AutoPorts
            runtime.autoports = AutoPorts(runtime.ports, config.auto_publish, sandbox.pid,
                                          runtime.counters)
        from .ports import PortError, host_port_text
        if pcap is not None:
            _start_pcap(runtime, sandbox, *pcap)
        try:
            published = runtime.prepare_ports(config.ports, api_socket)
        except (PortError, OSError) as e:
            sandbox.send_signal(signal.SIGKILL)
            sandbox.wait()
            if isinstance(e, PortError):
                fail(str(e), 1)
            fail(f"cannot create the API socket {api_socket}: {e.strerror or e}", 1)
        for asked, spec in zip(config.ports, published):
            if asked.host_port == 0 and not quiet:
                click.echo(f"slirpy: published {host_port_text(spec.host_addr, spec.host_port)} -> "
                           f"container port {spec.guest_port}/{spec.proto}", err=True)
        if named is not None:
            named.started(sandbox.pid, published)
        code = uvloop.run(serve_sandbox(runtime, sandbox, setup))
        if stats_file:
            runtime.write_stats(stats_file)
        return code
    finally:
        sandbox.close()


def _import_loop_and_runtime() -> None:
    """What serving needs, imported while the sandbox's child sets up tap0 (start-up time)."""
    import uvloop  # noqa: F401

    from . import api, runtime, serve  # noqa: F401


def _start_pcap(runtime: Runtime, sandbox: Sandbox, path: str, max_size: int) -> None:
    """`--pcap`: start capturing before the command runs; a file that cannot be written ends
    slirpy (and the sandbox) at start."""
    from .pcap import start_capture

    try:
        start_capture(runtime, path, max_size)
    except (OSError, ValueError) as e:
        sandbox.send_signal(signal.SIGKILL)
        sandbox.wait()
        fail(f"--pcap {path}: {getattr(e, 'strerror', None) or e}", 1)
