"""`slirpy slirp4netns` / `slirpy-slirp4netns`: a drop-in for slirp4netns 1.2.

It serves a network namespace that someone else created (RootlessKit, Podman, a shell with
`unshare -Urn`), with slirp4netns's command line: the same options, defaults, error messages
and exit codes, so that a caller written against slirp4netns drives slirpy unmodified.

Flow: parse the options exactly as slirp4netns does (GNU getopt_long, so long options may be
abbreviated and options may follow the operands), build a NetConfig (for the default network
only once the ready fd is written: quickready.py), then
`sandbox.attach_tap()` forks a child that joins the target's user and net namespaces, creates
or opens TAPNAME (with the same offloads as `slirpy run`), configures it with `-c`, and hands
the fd back.  This process then serves that fd with the ordinary Runtime through
`serve.serve_sandbox()`, fed by `AttachedTarget`, an adapter for "a process we did not start".
It writes "1" to the ready fd as soon as the TAP is configured (with --api-socket: once that
socket listens too), before importing its event loop; see `_attach`.  It exits (status 0) when the
target process exits, when the exit fd reports any poll event (typically: its writer closed),
or on SIGINT/SIGTERM/SIGHUP.

IPv6 (`-6`): off by default, as in slirp4netns; with it the namespace gets fd00::/64 (guest
fd00::100, gateway fd00::2, DNS fd00::3), advertised by Router Advertisements, and with `-c`
the guest address and default route are also set statically (slirp4netns leaves that to
SLAAC). `--disable-host-loopback` covers fd00::2 as it covers the IPv4 gateway.

Deliberate differences from slirp4netns (every one is an error at start, never silent):
`--target-type=bess` and MTUs outside 576..65520 are not supported.  See README.md for the
full table of options.
"""

from __future__ import annotations

import getopt
import os
import select
import signal
import socket
import sys

from . import __version__
from .exitnow import exit_now       # imported now: the sandbox may hide slirpy's files later
from .quickready import default_network

TYPE_CHECKING = False   # typing's, without importing typing on the way to the ready fd (quickready.py)
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Callable

    from .config import NetConfig
    from .netconf import TapNetwork
    from .sandbox import AttachedTap

COMPAT_VERSION = "1.2.0"            # the slirp4netns release whose interface this follows
DEFAULT_MTU = 1500                  # slirp4netns's default (slirpy run uses 65520)
SUN_PATH_MAX = 108                  # sizeof(struct sockaddr_un.sun_path) on Linux
# `--version` prints libslirp's SLIRP_CONFIG_VERSION_MAX, the SlirpConfig level the stack was
# built with; scripts (slirp4netns's own tests among them) gate features on it. Each level adds
# fields: 1 the base (IPv6, disable_host_loopback), 2 outbound_addr/outbound_addr6, 3
# disable_dns, 4 disable_dhcp (a DHCP server that can be switched off), 5 NC-SI. slirpy
# implements everything up to 3; it claims no more than it does.
SLIRP_CONFIG_VERSION_MAX = 3

_SHORT = "ce:r:m:a:6hv"
_LONG = [
    "configure", "exit-fd=", "ready-fd=", "mtu=", "cidr=", "disable-host-loopback",
    "no-host-loopback", "netns-type=", "userns-path=", "api-socket=", "enable-ipv6",
    "enable-sandbox", "create-sandbox", "enable-seccomp", "help", "version",
    "outbound-addr=", "outbound-addr6=", "disable-dns", "macaddress=", "target-type=",
    "pcap=", "pcap-max-size=",          # slirpy's own: slirp4netns has no packet capture
]

_HELP = """\
Usage: {prog} [OPTION]... PID|PATH TAPNAME
User-mode networking for unprivileged network namespaces (slirpy, slirp4netns-compatible).

-c, --configure          configure TAPNAME: address, default route, MTU, up (and lo up)
-e, --exit-fd=FD         exit when a poll event occurs on FD (e.g. its writer closed)
-r, --ready-fd=FD        write "1" to FD and close it once the network is being served
-m, --mtu=MTU            MTU (default=1500, max=65521; slirpy supports 576-65520)
-6, --enable-ipv6        enable IPv6 (fd00::/64: guest fd00::100, gateway fd00::2, DNS fd00::3)
-a, --api-socket=PATH    serve the JSON port-forwarding API on the UNIX socket PATH
--cidr=CIDR              network of the namespace (default=10.0.2.0/24, prefix 1-25)
--disable-host-loopback  prohibit connecting to host 127.0.0.1:*, [::1]:* through the gateways
                         (the guest gets "network unreachable", as slirp4netns)
--netns-type=TYPE        what PID|PATH names ([path|pid], default=pid)
--userns-path=PATH       user namespace to join (default: the one of PID)
--enable-sandbox         once serving: own mount namespace holding only /etc and /run,
                         every capability dropped but CAP_NET_BIND_SERVICE
--enable-seccomp         once serving: a seccomp allow-list of system calls (slirpy's own)
--outbound-addr=IPv4     bind outbound sockets to this IPv4 address or interface
--outbound-addr6=IPv6    bind outbound IPv6 sockets to this IPv6 address or interface
--disable-dns            no DNS forwarder at network+3 (10.0.2.3 by default)
--macaddress=MAC         MAC address of TAPNAME (only valid with -c)
--target-type=TYPE       [netns|bess], default=netns (bess is not supported)
--pcap=FILE              (slirpy) capture every frame crossing TAPNAME to this pcap file
--pcap-max-size=SIZE     (slirpy) stop the capture before FILE exceeds SIZE (default 1G)
-h, --help               show this help and exit
-v, --version            show version and exit
"""


class Exit(Exception):
    """Stop with `code`; `err` lines go to stderr, then the usage text to stdout if `usage`."""

    def __init__(self, code: int, err: str = "", usage: bool = False) -> None:
        super().__init__(err)
        self.code, self.err, self.usage = code, err, usage


class Options:
    # A plain class, not a dataclass: the way to the ready fd does not import dataclasses
    # (quickready.py says why).
    def __init__(self) -> None:
        self.target, self.tap_name = "", ""
        self.configure = False
        self.exit_fd = self.ready_fd = -1
        self.mtu = DEFAULT_MTU
        self.cidr: str | None = None
        self.disable_host_loopback = False
        self.netns_type = "pid"
        self.userns_path: str | None = None
        self.api_socket: str | None = None
        self.enable_ipv6 = self.enable_sandbox = self.enable_seccomp = False
        self.outbound_addr: str | None = None
        self.outbound_addr6: str | None = None
        self.disable_dns = False
        self.macaddress: str | None = None
        self.target_type = "netns"
        self.pcap: str | None = None
        self.pcap_max_size = 1 << 30
        self.warnings: list[str] = []      # printed on stdout, as slirp4netns does

    @property
    def pid(self) -> int | None:
        return int(self.target) if self.netns_type == "pid" else None


# ------------------------------------------------------------------ parsing

def _int_text(text: str) -> bool:
    r"""Whether re.fullmatch(r"\s*[+-]?\d+", text) would match (without importing re)."""
    digits = text.lstrip()
    if digits[:1] in ("+", "-"):
        digits = digits[1:]
    return digits.isdecimal()


def _nonneg_int(text: str, what: str) -> int:
    if not _int_text(text) or int(text) < 0 or int(text) > 0x7FFFFFFF:
        raise Exit(1, f"{what} must be a non-negative integer", usage=True)
    return int(text)


def _getopt_error(prog: str, e: getopt.GetoptError) -> Exit:
    """getopt_long's wording for the same mistakes."""
    opt, msg = e.opt, e.msg
    dashed = ("--" if len(opt) > 1 else "-") + opt
    if "not a unique prefix" in msg:
        text = f"{prog}: option '{dashed}' is ambiguous"
    elif "requires argument" in msg:
        text = (f"{prog}: option '{dashed}' requires an argument" if len(opt) > 1
                else f"{prog}: option requires an argument -- '{opt}'")
    elif "must not have an argument" in msg:
        text = f"{prog}: option '{dashed}' doesn't allow an argument"
    elif len(opt) > 1:
        text = f"{prog}: unrecognized option '{dashed}'"
    else:
        text = f"{prog}: invalid option -- '{opt}'"
    return Exit(1, text, usage=True)


def parse_args(argv: list[str], prog: str = "slirp4netns") -> Options:
    """Parse like slirp4netns's parse_args(); raises Exit (code 0 for --help/--version)."""
    try:
        pairs, operands = getopt.gnu_getopt(argv, _SHORT, _LONG)
    except getopt.GetoptError as e:
        raise _getopt_error(prog, e) from None
    o = Options()
    for opt, val in pairs:
        _apply_option(o, opt, val)
    if o.macaddress is not None and not o.configure:
        raise Exit(1, "--macaddr cannot be specified when --configure or -c is not specified", usage=True)
    if len(operands) < 2:
        raise Exit(1, usage=True)
    o.target, o.tap_name = operands[0], operands[1]
    _check_target(o)
    return o


_FLAGS = {      # options that set a flag, with the deprecation warning slirp4netns prints
    "-c": ("configure", None), "--configure": ("configure", None),
    "--disable-host-loopback": ("disable_host_loopback", None),
    "--no-host-loopback": ("disable_host_loopback",
                           "WARNING: --no-host-loopback is deprecated, use --disable-host-loopback"),
    "--enable-sandbox": ("enable_sandbox", None),
    "--create-sandbox": ("enable_sandbox",
                         "WARNING: --create-sandbox is deprecated, use --enable-sandbox"),
    "--enable-seccomp": ("enable_seccomp", None),
    "-6": ("enable_ipv6", None), "--enable-ipv6": ("enable_ipv6", None),
    "--disable-dns": ("disable_dns", None),
}
_TEXTS = {      # options whose argument is kept as given
    "--cidr": "cidr", "--netns-type": "netns_type", "-a": "api_socket", "--api-socket": "api_socket",
    "--outbound-addr": "outbound_addr", "--outbound-addr6": "outbound_addr6",
    "--macaddress": "macaddress", "--target-type": "target_type", "--pcap": "pcap",
}


def _apply_option(o: Options, opt: str, val: str) -> None:
    """One option from getopt, checked as slirp4netns checks it."""
    if opt in _FLAGS:
        name, warning = _FLAGS[opt]
        if warning is not None:
            o.warnings.append(warning)
        setattr(o, name, True)
    elif opt in _TEXTS:
        setattr(o, _TEXTS[opt], val)
    elif opt in ("-e", "--exit-fd"):
        o.exit_fd = _nonneg_int(val, "exit-fd")
    elif opt in ("-r", "--ready-fd"):
        o.ready_fd = _nonneg_int(val, "ready-fd")
    elif opt in ("-m", "--mtu"):
        if not _int_text(val) or not 0 < int(val) <= 65521:
            raise Exit(1, "MTU must be a positive integer (< 65522)", usage=True)
        o.mtu = int(val)
    elif opt == "--pcap-max-size":
        from .pcap import parse_size
        try:
            o.pcap_max_size = parse_size(val)
        except ValueError as e:
            raise Exit(1, f"--pcap-max-size: {e}", usage=True) from None
    elif opt == "--userns-path":
        if not os.path.lexists(val):
            raise Exit(1, f"userns path doesn't exist: {val}", usage=True)
        o.userns_path = val
    elif opt in ("-h", "--help"):
        raise Exit(0, usage=True)
    elif opt in ("-v", "--version"):
        raise Exit(0)


def _check_target(o: Options) -> None:
    """PID|PATH as --netns-type says it is."""
    if o.netns_type == "pid":
        if not _int_text(o.target) or not 0 < int(o.target) <= 0x7FFFFFFF:
            raise Exit(1, "PID must be a positive integer", usage=True)
    elif o.netns_type == "path":
        if not os.path.lexists(o.target):
            raise Exit(1, "existing path expected when --netns-type=path: No such file or directory",
                       usage=True)
    else:
        raise Exit(1, f"netns-type must be pid or path, not {o.netns_type!r}", usage=True)


def parse_mac(text: str) -> bytes:
    parts = text.split(":")
    try:
        octets = [int(p, 16) for p in parts]
    except ValueError:
        octets = []
    if len(parts) != 6 or len(octets) != 6 or any(not 0 <= b <= 255 or len(p) > 2 for b, p in zip(octets, parts)):
        raise Exit(1, f'"{text}" is an invalid MAC address.\nmacaddress has to be a valid MAC address '
                      "(hex string, 6 bytes, each byte separated by a ':').")
    return bytes(octets)


# slirp4netns's own messages for the shared parsers' rules (config.ConfigError.rule)
_WORDING = {
    "cidr.syntax": "invalid CIDR: {cidr}",
    "cidr.address": "invalid network address: {address}",
    "cidr.prefix": "prefix length needs to be {prefix_min}-{prefix_max}",
    "cidr.host_bits": "CIDR needs to be a network address like 10.0.2.0/24, not like 10.0.2.100/24",
    "mtu.range": "slirpy: MTU {mtu} is not supported: must be from {mtu_min} to {mtu_max}",
}


def build_config(o: Options) -> NetConfig:
    """The NetConfig for these options; Exit(1) for what slirp4netns or slirpy rejects."""
    from .config import (CIDR_PREFIX_MAX, CIDR_PREFIX_MIN, DEFAULT_CIDR, MTU_MAX, MTU_MIN, ConfigError,
                         build_net_config)
    _refuse_unsupported(o)
    mac = parse_mac(o.macaddress) if o.macaddress is not None else None
    cidr = o.cidr if o.cidr is not None else DEFAULT_CIDR
    try:
        return build_net_config(cidr=cidr, exact_cidr=True, mtu=o.mtu,
                                allow_host_loopback=not o.disable_host_loopback, guest_mac=mac,
                                dns_enabled=not o.disable_dns, outbound_addr=o.outbound_addr,
                                ipv6=o.enable_ipv6, outbound_addr6=o.outbound_addr6)
    except ConfigError as e:
        wording = _WORDING.get(e.rule, "slirpy: {error}")
        raise Exit(1, wording.format(cidr=cidr, address=cidr.partition("/")[0], mtu=o.mtu, error=e,
                                     prefix_min=CIDR_PREFIX_MIN, prefix_max=CIDR_PREFIX_MAX,
                                     mtu_min=MTU_MIN, mtu_max=MTU_MAX)) from None


def _refuse_unsupported(o: Options) -> None:
    """What slirp4netns takes and slirpy does not (yet): an error at start, never silent."""
    if o.target_type != "netns":
        raise Exit(1, f"slirpy: --target-type={o.target_type}: only netns is supported")
    if o.api_socket is not None and len(os.fsencode(o.api_socket)) >= SUN_PATH_MAX:
        raise Exit(1, f"the specified API socket path is too long (>= {SUN_PATH_MAX})")


def _check_fd(fd: int, what: str) -> None:
    if fd < 0:
        return
    try:
        os.fstat(fd)
    except OSError as e:
        raise Exit(1, f"{what} {fd}: {e.strerror}") from None


# ------------------------------------------------------------------ the served target

class AttachedTarget:
    """What serve_sandbox() needs from "the sandbox", for a namespace we did not create.

    `pidfd` is an epoll fd: it becomes readable when the target process exits (its pidfd),
    when the exit fd reports any poll event, or when a stop signal arrives (a self-pipe), so the
    one reader serve_sandbox() installs covers every reason to stop.  `release()` (called once
    everything is listening) writes the ready fd and takes SIGINT/SIGTERM/SIGHUP as "stop":
    there is no command to forward them to.
    """

    def __init__(self, target_pidfd: int | None, exit_fd: int, ready_fd: int) -> None:
        self._target_pidfd = target_pidfd
        self._ready_fd = ready_fd
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._epoll = select.epoll()
        self._epoll.register(self._stop_r, select.EPOLLIN)
        if target_pidfd is not None:
            self._epoll.register(target_pidfd, select.EPOLLIN)
        if exit_fd >= 0:
            try:
                self._epoll.register(exit_fd, select.EPOLLIN | select.EPOLLPRI)
            except OSError as e:
                self.close()
                raise Exit(1, f"exit-fd {exit_fd}: cannot wait on it: {e.strerror}") from None
        self.pidfd = self._epoll.fileno()
        self.reason: str | None = None

    def release(self) -> None:
        import asyncio
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, self.send_signal, sig)
        self.ready()

    def ready(self) -> None:
        """Write "1" to the ready fd and close it (once; release() does it if nothing did).
        From then on a stop signal is noted for the loop, which may not run yet."""
        if self._ready_fd >= 0:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, lambda got, _frame: self.send_signal(got))
            fd, self._ready_fd = self._ready_fd, -1
            try:
                os.write(fd, b"1")
            except OSError:
                pass
            os.close(fd)

    def send_signal(self, sig: int) -> None:
        try:
            os.write(self._stop_w, bytes([sig & 0xFF]))
        except OSError:
            pass

    def wait(self) -> int:
        return 0

    def close(self) -> None:
        for fd in (self._stop_r, self._stop_w, self._target_pidfd):
            if fd is not None and fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._stop_r = self._stop_w = -1
        self._target_pidfd = None
        self._epoll.close()


# ------------------------------------------------------------------ main

def _prog(argv0: str | None) -> str:
    name = os.path.basename(argv0) if argv0 else ""
    return "slirpy slirp4netns" if not name or name.endswith(".py") else name


def run(argv: list[str], prog: str = "slirp4netns") -> int:
    """The whole command; returns the exit status (prints as slirp4netns does)."""
    try:
        o = parse_args(argv, prog)
        for w in o.warnings:
            print(w, flush=True)
        # None: the TAP is configured from default_network(o), and the NetConfig built once the
        # ready fd is written (quickready.py)
        config = build_config(o) if default_network(o) is None else None
        _check_fd(o.exit_fd, "exit-fd")
        _check_fd(o.ready_fd, "ready-fd")
        if o.api_socket is not None and not api_available():
            raise Exit(1, "slirpy: --api-socket: this slirpy has no port-forwarding API yet")
    except Exit as e:
        if e.err:
            print(e.err, file=sys.stderr, flush=True)
        if e.usage:
            sys.stdout.write(_HELP.format(prog=prog))
        elif e.code == 0:
            from .native import describe
            sys.stdout.write(f"slirp4netns version {COMPAT_VERSION}\nslirpy: {__version__}\n"
                             f"SLIRP_CONFIG_VERSION_MAX: {SLIRP_CONFIG_VERSION_MAX}\n"
                             f"slirpy build: {describe()}\n")
        sys.stdout.flush()
        return e.code
    return _serve(o, config, prog)


def api_available() -> bool:
    """Whether the runtime can serve the JSON API (slirpy/api.py through Runtime.prepare_ports)."""
    from .runtime import Runtime
    return hasattr(Runtime, "prepare_ports") and hasattr(Runtime, "start_control")


def _serve(o: Options, config: NetConfig | None, prog: str) -> int:
    def fail(msg: str) -> int:
        print(f"{prog}: {msg}", file=sys.stderr, flush=True)
        return 1

    pidfd = None
    if o.pid is not None:
        try:
            pidfd = os.pidfd_open(o.pid)     # before attaching: the PID cannot be reused under us
        except OSError as e:
            return fail(f"process {o.pid}: {e.strerror}")
    try:
        tap = _attach(o, config if config is not None else _default_network(o))
    except Exit as e:
        if pidfd is not None:
            os.close(pidfd)
        return fail(e.err)
    try:
        target = AttachedTarget(pidfd, o.exit_fd, o.ready_fd)
    except Exit as e:
        os.close(tap.fd)
        return fail(e.err)
    if o.api_socket is None:
        target.ready()             # the TAP is configured: see _attach
    import uvloop

    from .harden import HardenError
    from .runtime import Runtime
    from .serve import serve_sandbox
    tap.reap_child()
    try:
        if config is None:
            config = build_config(o)   # cannot raise Exit: default_network(o) took these options
        if tap.fallback_reason:
            print(f"{prog}: notice: TAP offloads unavailable ({tap.fallback_reason}); running without them",
                  file=sys.stderr, flush=True)
        for warning in tap.warnings:
            print(f"{prog}: warning: {warning}", file=sys.stderr, flush=True)
        _print_banner(o, config)
        runtime = Runtime(config, tap.fd, vnet_hdr=tap.vnet_hdr, offload=tap.offload)
        runtime.linger = 0.0       # the target decides when flows end; do not outlive it
        if o.pcap is not None:
            from .pcap import start_capture
            try:
                start_capture(runtime, o.pcap, o.pcap_max_size)
            except (OSError, ValueError) as e:
                return fail(f"--pcap {o.pcap}: {getattr(e, 'strerror', None) or e}")
        setup = None
        if o.api_socket is not None:
            try:
                path = os.path.abspath(o.api_socket) if o.enable_sandbox else o.api_socket
                runtime.prepare_ports((), api_socket=path)      # absolute: the sandbox moves "/"
            except OSError as e:
                return fail(f"cannot listen on the API socket {o.api_socket}: {e.strerror or e}")
            setup = runtime.start_control          # listening before the ready fd is written
        return uvloop.run(serve_sandbox(runtime, target, setup, _harden_step(o, runtime, prog)))
    except HardenError as e:
        return fail(f"cannot harden: {e}")
    except Exit as e:
        return fail(e.err)
    finally:
        target.close()
        os.close(tap.fd)


def _harden_step(o: Options, runtime: Any, prog: str) -> Callable[[], None] | None:
    """`--enable-sandbox` / `--enable-seccomp`: harden.py before the first frame is read."""
    if not (o.enable_sandbox or o.enable_seccomp):
        return None
    from .harden import HardenOptions, before_loop, harden_runtime, runtime_options
    cfg = runtime.config
    opts = runtime_options(
        HardenOptions(sandbox=o.enable_sandbox, seccomp=o.enable_seccomp, no_new_privs=True),
        api_socket=o.api_socket, autoports_pid=None,
        resolv_conf=cfg.resolv_conf if cfg.dns_enabled and cfg.dns_upstream is None else None)
    before_loop(opts)

    def step() -> None:
        for warning in harden_runtime(runtime, opts).warnings:
            print(f"{prog}: warning: {warning}", file=sys.stderr, flush=True)
    return step


def _default_network(o: Options) -> TapNetwork:
    net = default_network(o)
    if net is None:
        raise Exit(1, "slirpy: internal error: no NetConfig built")     # run() builds it first
    return net


def _attach(o: Options, config: TapNetwork) -> AttachedTap:
    """Fork the child that opens and configures the TAP, then take the TAP.  Raises Exit(1,
    message).

    The ready fd is written as soon as the TAP is configured (`_serve`), before this process
    imports its event loop and runtime (the bulk of its start-up): frames the guest sends
    meanwhile wait in the TAP's queue until the loop reads them.  Not with --api-socket: that
    socket must be listening when the ready fd says so, and the runtime binds it; the imports
    then run here, while the child works."""
    from .sandbox import AttachOptions, SandboxError, start_attach

    try:
        pending = start_attach(AttachOptions(tap_name=o.tap_name, net=config, configure=o.configure,
                                             pid=o.pid, netns_path=None if o.pid is not None else o.target,
                                             userns_path=o.userns_path))
    except SandboxError as e:
        raise Exit(1, str(e)) from None
    try:
        if o.api_socket is not None:
            import uvloop  # noqa: F401
            from . import runtime, serve  # noqa: F401
            if o.enable_sandbox or o.enable_seccomp:
                from .seccompbinding import preload
                preload()
    except BaseException:
        pending.abort()
        raise
    try:
        return pending.finish(wait=False)        # _serve reaps the child once ready
    except SandboxError as e:
        raise Exit(1, str(e)) from None


def _print_banner(o: Options, config: NetConfig) -> None:
    lines = [
        "Starting slirpy (slirp4netns mode)",
        f"* MTU:             {config.mtu}",
        f"* Network:         {config.network.network_address}",
        f"* Netmask:         {config.network.netmask}",
        f"* Gateway:         {config.gateway}",
        f"* DNS:             {config.dns if config.dns_enabled else 'disabled'}",
        f"* Recommended IP:  {config.guest}",
    ]
    if config.network6 is not None:
        lines += [
            f"* IPv6 Network:    {config.network6}",
            f"* IPv6 Gateway:    {config.gateway6}",
            f"* IPv6 DNS:        {config.dns6 if config.dns_enabled else 'disabled'}",
            f"* IPv6 guest:      {config.guest6}",
        ]
    if o.api_socket is not None:
        lines.append(f"* API Socket:      {o.api_socket}")
    if config.outbound_addr is not None:
        lines.append(f"* Outbound IPv4:    {config.outbound_addr}")
    if config.outbound_addr6 is not None:
        lines.append(f"* Outbound IPv6:    {config.outbound_addr6}")
    if config.guest_mac is not None:
        lines.append("* MAC address:     " + ":".join(f"{b:02x}" for b in config.guest_mac))
    if config.allow_host_loopback:
        also = f" and [::1]:* as {config.gateway6}" if config.ipv6 else ""
        lines.append(f"WARNING: 127.0.0.1:* on the host is reachable as {config.gateway}{also} "
                     "(--disable-host-loopback refuses it)")
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> None:
    """Console script `slirpy-slirp4netns`."""
    if argv is None:
        argv = sys.argv[1:]
    exit_now(run(list(argv), _prog(sys.argv[0])))    # no interpreter teardown: Podman waits for it


if __name__ == "__main__":  # pragma: no cover
    main()
