"""`slirpy doctor`: can this machine run slirpy as this user, and if not, what is the fix?

Each check yields a `Finding` with the exact command that fixes it.  The namespace and TAP checks
are not guesses from sysctls: a forked child unshares user+net+mount+pid namespaces exactly like
the sandbox does and creates a throw-away TAP device with offloads in them; the namespaces
vanish when it exits.  `explain()` turns an error seen while starting a sandbox into the same
one-line explanation with its fix.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import json
import os
import pwd
import shutil
import socket
from dataclasses import dataclass
from typing import TextIO

from slirpy.tap import TUN_PATH, TapDevice, TapError

PROC_SYS = "/proc/sys"
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
SANDBOX_FLAGS = CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS | CLONE_NEWPID

FIX_TUN_MISSING = "sudo modprobe tun"
FIX_TUN_PERMS = "sudo chmod 0666 /dev/net/tun"
FIX_USERNS_CLONE = "sudo sysctl -w kernel.unprivileged_userns_clone=1"
FIX_MAX_USERNS = "sudo sysctl -w user.max_user_namespaces=28633"
FIX_APPARMOR = "sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"
FIX_PING = 'sudo sysctl -w net.ipv4.ping_group_range="0 2147483647"'
FIX_UIDMAP = "sudo apt-get install uidmap"


def ping_denied_message() -> str:
    """What slirpy says (once) when it may not open ICMP echo sockets."""
    return ("ping from the sandbox does not work: net.ipv4.ping_group_range excludes this user's "
            "groups, so slirpy cannot open ICMP echo sockets; echo requests are dropped and "
            f"counted (fix: {FIX_PING}; `slirpy doctor` checks it)")


class NamespaceError(OSError):
    """unshare(2) of the sandbox namespaces failed (raised by slirpy.sandbox)."""


@dataclass
class Finding:
    name: str
    ok: bool
    required: bool
    detail: str
    fix: str        # the command that fixes it; "" when there is nothing to run


# -- small pure helpers (unit-tested) -----------------------------------------------------------

def read_sysctl(name: str, root: str = PROC_SYS) -> str | None:
    """The value of sysctl `name` ("a.b.c"), stripped; None when this kernel has no such knob."""
    try:
        with open(os.path.join(root, *name.split(".")), encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return None


def userns_blocker(values: dict[str, str | None], err: int | None = None) -> tuple[str, str] | None:
    """Which setting keeps unprivileged user namespaces from working: (detail, fix), or None.

    `values` maps the three sysctl names to their values (None = absent); `err` is the errno of
    a failed unshare, when there was one.
    """
    if values.get("kernel.unprivileged_userns_clone") == "0":
        return "kernel.unprivileged_userns_clone is 0 (unprivileged user namespaces disabled)", FIX_USERNS_CLONE
    if values.get("user.max_user_namespaces") == "0":
        return "user.max_user_namespaces is 0", FIX_MAX_USERNS
    if values.get("kernel.apparmor_restrict_unprivileged_userns") == "1" and err in (None, errno.EPERM, errno.EACCES):
        return ("kernel.apparmor_restrict_unprivileged_userns is 1 (AppArmor denies capabilities in "
                "unprivileged user namespaces)"), FIX_APPARMOR
    if err == errno.ENOSPC:
        return "the per-user limit of user namespaces (user.max_user_namespaces) is reached", FIX_MAX_USERNS
    if err == errno.EUSERS:
        return "user namespaces are nested too deeply (limit 32)", ""
    if err == errno.EINVAL:
        return "this kernel lacks user/net/pid namespace support (CONFIG_USER_NS etc.)", ""
    return None


def ping_range_ok(text: str | None, gids: set[int]) -> bool:
    """Does net.ipv4.ping_group_range ("lo hi") include one of `gids`?"""
    if text is None:
        return False
    try:
        lo, hi = (int(x) for x in text.split())
    except ValueError:
        return False
    return any(lo <= g <= hi for g in gids)


def subid_range(path: str, user: str, uid: int) -> tuple[int, int] | None:
    """First (start, count) for `user` (or its numeric uid) in /etc/subuid-style `path`."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) != 3 or parts[0] not in (user, str(uid)):
            continue
        try:
            start, count = int(parts[1]), int(parts[2])
        except ValueError:
            continue
        if count > 0:
            return start, count
    return None


def _userns_sysctls(root: str = PROC_SYS) -> dict[str, str | None]:
    return {name: read_sysctl(name, root) for name in (
        "kernel.unprivileged_userns_clone", "user.max_user_namespaces",
        "kernel.apparmor_restrict_unprivileged_userns")}


# -- explain ------------------------------------------------------------------------------------

def _with_fix(text: str, fix: str) -> str:
    return f"{text} (fix: {fix})" if fix else text


def explain(exc: BaseException, sysctls: dict[str, str | None] | None = None) -> str:
    """One line for an error seen while starting a sandbox, with the command that fixes it.

    `sysctls` (the three user-namespace knobs) is read from /proc/sys when not given.
    """
    if isinstance(exc, (NamespaceError, TapError)) and sysctls is None:
        sysctls = _userns_sysctls()
    if isinstance(exc, NamespaceError):
        text = exc.strerror or str(exc)
        found = userns_blocker(sysctls or {}, exc.errno)
        if found is None:
            return _with_fix(text, "") + "; run `slirpy doctor` for details"
        detail, fix = found
        return _with_fix(f"{text}: {detail}", fix)
    if isinstance(exc, TapError) or (isinstance(exc, OSError) and exc.filename == TUN_PATH):
        text = exc.strerror or str(exc)
        if exc.filename == TUN_PATH:
            if exc.errno in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
                return _with_fix(text, FIX_TUN_MISSING)
            if exc.errno in (errno.EACCES, errno.EPERM):
                return _with_fix(text, FIX_TUN_PERMS)
        if exc.errno in (errno.EPERM, errno.EACCES):
            found = userns_blocker(sysctls or {}, exc.errno)
            if found is not None:
                return _with_fix(f"{text}: {found[0]}", found[1])
        return text
    if isinstance(exc, OSError):
        text = exc.strerror or str(exc)
        if exc.filename is not None:
            return _one_line(f"{exc.filename}: {text}")
        return _one_line(text)
    return _one_line(str(exc)) or type(exc).__name__


def _one_line(text: str) -> str:
    return " ".join(text.split())


# -- checks -------------------------------------------------------------------------------------

def _probe() -> dict:
    """In a forked child: unshare like the sandbox, create a TAP with offloads; report as a dict."""
    r, w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        result: dict = {}
        try:
            os.close(r)
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(ctypes.c_int(SANDBOX_FLAGS)) != 0:
                result["unshare_errno"] = ctypes.get_errno()
            else:
                result["unshare_errno"] = 0
                try:
                    tap = TapDevice.create("tap0", offload=True)
                    result.update(tap=True, offload=tap.offload, fallback_reason=tap.fallback_reason)
                    tap.close()
                except OSError as e:
                    result.update(tap=False, tap_error=explain(e))
            os.write(w, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    with os.fdopen(r, "rb") as f:
        chunks.append(f.read())
    _, status = os.waitpid(pid, 0)
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        return {"probe_failed": f"probe process ended without a report (status {status})"}


def run_checks() -> list[Finding]:
    """Every check, in the order `print_report` shows them."""
    sysctls = _userns_sysctls()
    uid, gid = os.getuid(), os.getgid()
    user = user_name(uid)
    return [*_userns_knob_findings(sysctls), _tun_finding(user), *_namespace_findings(sysctls),
            _ping_finding(gid), _ipv6_finding(), *_subid_findings(user, uid), _harden_finding(),
            _fd_limit_finding(), _build_finding(), _waiter_finding()]


def _harden_finding() -> Finding:
    """Whether the network process can harden itself as `slirpy run` does (harden.py), tried
    in a throw-away child."""
    from .harden import probe
    reason = probe()
    if reason is None:
        return Finding("hardening", True, False, "own mount namespace with /etc and /run only, "
                       "capabilities dropped, no_new_privs, seccomp allow-list: all work", "")
    return Finding("hardening", False, False, f"{reason}: `slirpy run` will refuse to start "
                   "unless given --no-sandbox (then the network process is not hardened)", "")


FD_FLOWS_OK = 4096       # TCP flows with a host socket that leave a sandbox room to work


def fd_limit_finding(soft: int, hard: int) -> Finding:
    """How many flows RLIMIT_NOFILE (`soft`, `hard`, as getrlimit gives them) leaves room for:
    slirpy raises its soft limit to the hard one and keeps its flow caps below that
    (hostres.nofile_target, fit_limits_to_fds). Fewer than FD_FLOWS_OK TCP flows is a warning:
    past the cap, new connections are refused with RST (counter tcp.rx.drop.flow_limit)."""
    import resource

    from .config import Limits
    from .hostres import fit_limits_to_fds, nofile_target
    lim = fit_limits_to_fds(Limits(), nofile_target(soft, hard))
    ok = lim.max_tcp_flows >= FD_FLOWS_OK

    def text(n: int) -> str:
        return "unlimited" if n == resource.RLIM_INFINITY else str(n)

    detail = (f"RLIMIT_NOFILE {text(soft)} soft / {text(hard)} hard: room for "
              f"{lim.max_tcp_flows} TCP flows with a host socket, {lim.max_udp_flows} UDP and "
              f"{lim.max_icmp_flows} ping flows at once")
    fix = "" if ok else ("raise the hard limit, e.g. `* hard nofile 65536` in "
                         "/etc/security/limits.conf (then log in again), or LimitNOFILE=65536 "
                         "for a systemd service")
    return Finding("fd limit", ok, False, detail, fix)


def _fd_limit_finding() -> Finding:
    import resource
    return fd_limit_finding(*resource.getrlimit(resource.RLIMIT_NOFILE))


def _build_finding() -> Finding:
    """Which build runs (mypyc-compiled or pure Python); compiled files older than their
    sources (an editable install edited since its build) are a warning."""
    from . import native
    stale = (not native.pure_requested() and native.built_in_place()
             and native.stale_modules(native.compiled_modules()))
    return Finding("build", not stale, False, native.describe(),
                   "pip install -e . (rebuilds)" if stale else "")


def _waiter_finding() -> Finding:
    """Which waiter a light run (--network none|host|sandbox:NAME, a member) leaves running: the
    native one (nativewaiter) or the Python fallback; a stale native one is a warning."""
    from . import nativewaiter
    line = nativewaiter.describe()
    stale = "STALE" in line
    return Finding("waiter", not stale, False, line, "pip install -e . (rebuilds)" if stale else "")


def user_name(uid: int) -> str:
    """The login name of `uid`, or the number when the passwd database has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _userns_knob_findings(sysctls: dict[str, str | None]) -> list[Finding]:
    """The kernel knobs for user namespaces, where this kernel has them."""
    findings = []
    v = sysctls["kernel.unprivileged_userns_clone"]
    if v is not None:
        findings.append(Finding("kernel.unprivileged_userns_clone", v == "1", True,
                                f"= {v}", "" if v == "1" else FIX_USERNS_CLONE))
    v = sysctls["user.max_user_namespaces"]
    if v is not None:
        ok = v.isdigit() and int(v) > 0
        findings.append(Finding("user.max_user_namespaces", ok, True, f"= {v}", "" if ok else FIX_MAX_USERNS))
    return findings


def _tun_finding(user: str) -> Finding:
    if not os.path.exists(TUN_PATH):
        return Finding("/dev/net/tun", False, True, "missing (tun module not loaded)", FIX_TUN_MISSING)
    if not os.access(TUN_PATH, os.R_OK | os.W_OK):
        return Finding("/dev/net/tun", False, True, f"not readable and writable by {user}", FIX_TUN_PERMS)
    return Finding("/dev/net/tun", True, True, "readable and writable", "")


def _namespace_findings(sysctls: dict[str, str | None]) -> list[Finding]:
    """The real thing: namespaces + TAP + offload, in a throw-away child; then AppArmor's knob,
    which only matters if that failed."""
    probe = _probe()
    err = probe.get("unshare_errno")
    findings = []
    if "probe_failed" in probe:
        findings.append(Finding("user namespaces", False, True, probe["probe_failed"], ""))
    elif err:
        found = userns_blocker(sysctls, err)
        detail = f"unshare(user+net+mount+pid) failed: {os.strerror(err)}"
        findings.append(Finding("user namespaces", False, True,
                                f"{detail}; {found[0]}" if found else detail, found[1] if found else ""))
    else:
        findings.append(Finding("user namespaces", True, True, "unshare(user+net+mount+pid) works", ""))
        findings += _tap_findings(probe)
    apparmor = sysctls["kernel.apparmor_restrict_unprivileged_userns"]
    if apparmor is not None:
        ok = apparmor != "1" or (err == 0 and bool(probe.get("tap")))
        detail = f"= {apparmor}" + (" (but this user's namespaces work)" if apparmor == "1" and ok else "")
        findings.append(Finding("kernel.apparmor_restrict_unprivileged_userns", ok, True, detail,
                                "" if ok else FIX_APPARMOR))
    return findings


def _tap_findings(probe: dict) -> list[Finding]:
    """The TAP device the probe created in its namespaces, and its offloads."""
    if not probe.get("tap"):
        return [Finding("TAP device", False, True, probe.get("tap_error", "failed"), "")]
    if probe.get("offload"):
        offload = Finding("TAP offload", True, False, "IFF_VNET_HDR + TUNSETOFFLOAD CSUM|TSO4|TSO6 accepted", "")
    else:
        offload = Finding("TAP offload", False, False,
                          f"refused ({probe.get('fallback_reason')}); slirpy runs without offloads, much slower", "")
    return [Finding("TAP device", True, True, "created tap0 in a throw-away namespace", ""), offload]


def _ping_finding(gid: int) -> Finding:
    """ICMP echo through unprivileged ping sockets (the ICMP proxy)."""
    text = read_sysctl("net.ipv4.ping_group_range")
    gids = {gid, os.getegid(), *os.getgroups()}
    ok = ping_range_ok(text, gids)
    return Finding("net.ipv4.ping_group_range", ok, False,
                   f"= {' '.join((text or 'absent').split())}; " + (f"includes gid {gid}" if ok else
                                       f"excludes gid {gid}: ping from the sandbox will not work"),
                   "" if ok else FIX_PING)


IF_INET6 = "/proc/net/if_inet6"
IPV6_ROUTE = "/proc/net/ipv6_route"
_RTF_REJECT = 0x0200


def global_ipv6_addresses(if_inet6: str) -> list[tuple[str, str]]:
    """(address, interface) of each global-scope address in /proc/net/if_inet6's text."""
    found = []
    for line in if_inet6.splitlines():
        parts = line.split()
        if len(parts) == 6 and parts[3] == "00":
            try:
                found.append((str(ipaddress.IPv6Address(bytes.fromhex(parts[0]))), parts[5]))
            except ValueError:
                continue
    return found


def ipv6_default_route(ipv6_route: str) -> str | None:
    """The interface of a usable IPv6 default route in /proc/net/ipv6_route's text, or None
    (the kernel's own `unreachable default dev lo` route has RTF_REJECT)."""
    for line in ipv6_route.splitlines():
        parts = line.split()
        if (len(parts) == 10 and parts[0] == "0" * 32 and parts[1] == "00"
                and not int(parts[8], 16) & _RTF_REJECT):
            return parts[9]
    return None


def ipv6_finding(if_inet6: str | None, ipv6_route: str, ping6_errno: int) -> Finding:
    """The host's IPv6, as the sandbox's IPv6 connections will find it (never required: the
    sandbox's IPv4 and DNS do not depend on it). `if_inet6` None: the kernel has no IPv6."""
    effect = "the sandbox's connections to IPv6 addresses fail at once (IPv4 is not affected)"
    if if_inet6 is None:
        return Finding("IPv6", False, False, f"this kernel has IPv6 turned off; {effect}",
                       "slirpy run --no-ipv6 (hides IPv6 from the sandbox)")
    addrs = global_ipv6_addresses(if_inet6)
    route = ipv6_default_route(ipv6_route)
    if not addrs:
        return Finding("IPv6", False, False, f"no global IPv6 address on this host; {effect}", "")
    ping = ("ICMPv6 ping sockets allowed" if ping6_errno == 0 else
            f"ICMPv6 ping sockets refused ({os.strerror(ping6_errno)}): ping -6 from the sandbox will not work")
    addr, ifname = addrs[0]
    if route is None:
        return Finding("IPv6", False, False, f"{addr} on {ifname} but no IPv6 default route: IPv6 "
                       f"destinations beyond this host's own networks are unreachable; {ping}", "")
    return Finding("IPv6", True, False, f"{addr} on {ifname}, default route via {route}; {ping}",
                   "" if ping6_errno == 0 else FIX_PING)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _ipv6_finding() -> Finding:
    try:
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_ICMPV6).close()
        ping6_errno = 0
    except OSError as e:
        ping6_errno = e.errno or errno.EACCES
    return ipv6_finding(_read(IF_INET6), _read(IPV6_ROUTE) or "", ping6_errno)


def _subid_findings(user: str, uid: int) -> list[Finding]:
    """--map-subuids needs the setuid helpers and a subordinate id range."""
    missing = [t for t in ("newuidmap", "newgidmap") if shutil.which(t) is None]
    tools = Finding("newuidmap/newgidmap", not missing, False,
                    "installed" if not missing else f"missing {', '.join(missing)} (needed for --map-subuids)",
                    "" if not missing else FIX_UIDMAP)
    sub_u = subid_range("/etc/subuid", user, uid)
    sub_g = subid_range("/etc/subgid", user, uid)
    ok = sub_u is not None and sub_g is not None
    detail = (f"subuid {sub_u[0]}+{sub_u[1]}, subgid {sub_g[0]}+{sub_g[1]}"
              if sub_u is not None and sub_g is not None else
              f"no entry for {user} in " + " and ".join(
                  p for p, r in (("/etc/subuid", sub_u), ("/etc/subgid", sub_g)) if r is None)
              + " (needed for --map-subuids)")
    ranges = Finding("/etc/subuid, /etc/subgid", ok, False, detail,
                     "" if ok else f"sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}")
    return [tools, ranges]


def print_report(stream: TextIO) -> int:
    """Print every finding; 0 when every required check passed, else 1."""
    findings = run_checks()
    for f in findings:
        mark = "ok  " if f.ok else ("FAIL" if f.required else "warn")
        stream.write(f"[{mark}] {f.name}: {f.detail}\n")
        if not f.ok and f.fix:
            stream.write(f"       fix: {f.fix}\n")
    bad = [f for f in findings if f.required and not f.ok]
    stream.write("slirpy can run here.\n" if not bad else
                 f"slirpy cannot run here: {len(bad)} required check(s) failed.\n")
    stream.flush()
    return 1 if bad else 0
