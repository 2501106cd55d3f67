"""Start a sandbox and serve it: what `slirpy run` and `slirpy selfcheck` share.

runcmd.py (`slirpy run`, once its options are parsed) and selfcheck.py (after setting up its
host-side servers) both hand a NetConfig and a command to `run_sandbox`, which starts the
sandbox, binds the published ports and the API socket, runs the loop until the command exits
and returns its exit code. Errors at start are printed as `slirpy: ...` and end the process
(`fail`).
"""

from __future__ import annotations

import signal
import sys

from .hardenopts import HardenError
from .seccompbinding import preload as _preload_seccomp

TYPE_CHECKING = False   # typing.TYPE_CHECKING without importing typing before a run's command starts
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Awaitable, Callable, NoReturn, Protocol

    from .config import NetConfig, PortSpec
    from .hardenopts import HardenOptions
    from .impair import ImpairSpec
    from .runtime import Runtime
    from .sandbox import Sandbox

    class NamedRun(Protocol):
        """A named run's parts of the sandbox (named.NamedRun), and who to tell once it started."""
        resolv_text: str | None        # replaces the default resolv.conf text if set

        def options(self) -> dict[str, Any]: ...           # more SandboxOptions fields
        def started(self, ns_pid: int, published: list[PortSpec]) -> None: ...


def say(message: str) -> None:
    """Print `message` on stderr (the only output slirpy itself makes while a command runs)."""
    print(message, file=sys.stderr, flush=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print `slirpy: message` on stderr and exit with `code`."""
    say(f"slirpy: {message}")
    sys.exit(code)


def run_sandbox(config: NetConfig, argv: list[str], *, map_subuids: bool = False,
                stats_file: str | None = None, quiet: bool = False,
                setup: Callable[[], Awaitable[None]] | None = None,
                impair: ImpairSpec | None = None, api_socket: str | None = None,
                pcap: tuple[str, int] | None = None, named: NamedRun | None = None,
                harden: HardenOptions | None = None, api_socket_given: bool = False,
                busy_poll_us: int | None = None) -> int:
    """Start the sandbox, serve it until the command exits, return the command's exit code.
    `named`: the run's name, hostname and /etc files (`slirpy run`), told when it has started.
    With `harden`, the serving process hardens itself before the first frame (harden.py).
    `api_socket_given`: the user named `api_socket` (--api-socket), so the command may count on
    it from its first instruction (the default socket of a named run is bound once it runs)."""
    import os

    from .sandbox import Sandbox, SandboxError, SandboxOptions

    if harden is not None:        # the hardened process's working directory becomes its new root
        api_socket, stats_file = (None if p is None else os.path.abspath(p) for p in (api_socket, stats_file))
    early = releases_early(config, pcap, api_socket_given)
    resolv_text = named.resolv_text if named is not None else None
    if resolv_text is None and config.dns_enabled:
        from .resolvconf import ResolvConf
        resolv_text = ResolvConf(config.resolv_conf).sandbox_text(
            str(config.dns), str(config.dns6) if config.ipv6 else None)
    try:
        sandbox = Sandbox.start(SandboxOptions(argv=list(argv), net=config, map_subuids=map_subuids,
                                               resolv_conf_text=resolv_text,
                                               **(named.options() if named is not None else {})),
                                meanwhile=_meanwhile(early, harden))
    except SandboxError as e:
        fail(str(e), 1)
    if harden is not None:
        from .harden import before_loop
        try:
            before_loop(harden)         # libseccomp is there, io_uring refused: else nothing runs
        except HardenError as e:
            _refuse_unhardened(sandbox, e)
    if early:
        if named is not None:      # joinable by name (`--network sandbox:NAME`) once it runs
            named.started(sandbox.pid, [])
        _forward_signals(sandbox)
        sandbox.release()          # tap0 is configured: the command runs while we import the rest
    import uvloop                      # already imported, by Sandbox.start (meanwhile)

    from .runtime import Runtime
    from .serve import serve_sandbox
    try:
        if sandbox.fallback_reason and not quiet:
            say(f"slirpy: notice: TAP offloads unavailable ({sandbox.fallback_reason}); "
                "running without them (slower)")
        runtime = Runtime(config, sandbox.tap_fd, vnet_hdr=sandbox.vnet_hdr, offload=sandbox.offload,
                          impair=impair, busy_poll_us=busy_poll_us)
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
                say(f"slirpy: published {host_port_text(spec.host_addr, spec.host_port)} -> "
                    f"container port {spec.guest_port}/{spec.proto}")
        if named is not None and not early:     # (early: no published ports, told above)
            named.started(sandbox.pid, published)
        try:
            step = None if harden is None else _harden_step(runtime, harden, api_socket, stats_file,
                                                            sandbox.pid, quiet)
            code = uvloop.run(serve_sandbox(runtime, sandbox, setup, step))
        except HardenError as e:
            _refuse_unhardened(sandbox, e)
        if stats_file:
            runtime.write_stats(stats_file)
        return code
    finally:
        sandbox.close()


def releases_early(config: NetConfig, pcap: tuple[str, int] | None, api_socket_given: bool) -> bool:
    """Whether the command may start as soon as tap0 is configured, before this process imports
    its event loop and runtime (start-up time; frames the guest sends meanwhile wait in tap0's
    queue).  Hardened or not: a hardened process reads no frame before it is hardened either
    way (serve_sandbox hardens before it attaches the TAP), and what can refuse hardening on a
    machine (libseccomp missing, seccomp refused) is found by `before_loop` before the command
    is released.  Not when a user's mistake can still stop the run before it serves: published
    ports (in use, privileged) and --pcap (a file that cannot be written) are checked before
    the command starts, as before; and not with --api-socket, which the command may use at once
    (slirp4netns mode waits for it too)."""
    return not config.ports and pcap is None and not api_socket_given


def _meanwhile(early: bool, harden: HardenOptions | None) -> Callable[[], None] | None:
    """What to import while the sandbox's child sets up tap0: what runs before the command is
    released (libseccomp's binding, for `before_loop`), or everything serving needs when the
    command waits for it anyway."""
    if early:
        return None if harden is None else _import_harden
    return _import_loop_and_runtime if harden is None else _import_hardened


def _refuse_unhardened(sandbox: Sandbox, e: HardenError) -> NoReturn:
    """Hardening failed: the sandbox goes (its command never ran, unless it was released
    early and hardening failed past `before_loop`'s checks) and slirpy says why."""
    sandbox.send_signal(signal.SIGKILL)
    sandbox.wait()
    fail(f"cannot harden the network process: {e} (--no-sandbox runs without; "
         "see `slirpy doctor`)", 1)


def _forward_signals(sandbox: Sandbox) -> None:
    """Pass stop signals on to the command as serve_sandbox will, until it installs its own
    handlers (a command released before the event loop exists)."""
    def forward(sig: int, _frame: object) -> None:
        from .serve import _foreground_on_tty     # serve_sandbox's own rule for ^C
        if sig == signal.SIGINT and _foreground_on_tty():
            return
        sandbox.send_signal(sig)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)


def _harden_step(runtime: Runtime, opts: HardenOptions, api_socket: str | None,
                 stats_file: str | None, pid: int, quiet: bool) -> Callable[[], None]:
    """What serve_sandbox calls before the first frame: harden.py, with the paths this run
    still needs after it (API socket, stats file, a --resolv-conf outside /etc and /run)."""
    from .harden import harden_runtime, runtime_options

    cfg = runtime.config
    full = runtime_options(opts, api_socket=api_socket, stats_file=stats_file,
                           resolv_conf=cfg.resolv_conf if cfg.dns_enabled and cfg.dns_upstream is None else None,
                           autoports_pid=pid if runtime.autoports is not None else None)

    def step() -> None:
        for warning in harden_runtime(runtime, full).warnings:
            if not quiet:
                say(f"slirpy: warning: {warning}")
    return step


def _import_loop_and_runtime() -> None:
    """What serving needs, imported while the sandbox's child sets up tap0 (start-up time)."""
    import uvloop  # noqa: F401

    from . import api, runtime, serve  # noqa: F401


def _import_harden() -> None:
    """What `before_loop` needs: harden.py (ctypes), seccompfilter.py and libseccomp's binding."""
    from . import harden, seccompfilter  # noqa: F401

    _preload_seccomp()


def _import_hardened() -> None:
    """The same, and what serving needs."""
    _import_loop_and_runtime()
    _import_harden()


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
