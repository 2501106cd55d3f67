"""Hardening of the process that runs the stack: the empty mount view, capabilities, no_new_privs
and the seccomp filter (seccompfilter.py), applied once set-up is over and before the first
frame from the guest is read.

Why: that process parses frames a container sends, so a bug in it should reach as little as
possible. `harden(HardenOptions(...))` is the one entry point; `slirpy run` (hardened unless
`--no-sandbox`), slirp4netns mode (`--enable-sandbox`, `--enable-seccomp`) and the networks'
router (networks/router.py, unless SLIRPY_HOLDER_NO_SANDBOX is set) call it. The steps, in this order:

1. a mount namespace of its own (and first a user namespace of its own when the process has no
   CAP_SYS_ADMIN, mapping only its own uid and gid: the network namespace does not change, so
   the host sockets and ping sockets keep working);
2. its root becomes a small read-only tmpfs holding `/etc` and `/run` (read-only binds: the
   host's resolv.conf is followed there, its symlink into /run included) and any directory the
   caller still needs at its own path (the API socket's, so that it can be removed at exit, and
   the one a `--resolv-conf FILE` lives in); nothing else: no /home, /root, /var, /proc, /usr.
   `/proc` directories the runtime still reads (its own fd table for `slirpy stats`, the
   sandbox's socket tables for `-p auto`) are kept as open directory fds of detached bind
   mounts, from which `..` leads nowhere;
3. every capability dropped except CAP_NET_BIND_SERVICE (bounding, ambient, effective,
   permitted, inheritable), as slirp4netns's sandbox does;
4. no_new_privs, then the seccomp allow-list.

Modules that the runtime would import lazily are imported before step 2: the Python library is
not in the new root.
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import Any

from .hardenopts import HardenError as HardenError, HardenOptions as HardenOptions

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x20, 0x1000, 0x4000, 0x40000
MNT_DETACH = 2
PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 24, 38, 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
CAP_NET_BIND_SERVICE = 10
_CAP_V3 = 0x20080522
KEPT_DIRS = ("/etc", "/run")          # what the new root holds, always
# Where the new root is built (hidden by a tmpfs meanwhile): the first of these that exists and
# is neither a kept directory nor under one. A kept directory's source is bound with its
# submounts, so `--stats-file /tmp/x` with the root built on /tmp would carry the scratch tmpfs
# itself (read-only at the end) instead of the real /tmp.
_SCRATCH_CHOICES = ("/tmp", "/mnt", "/var", "/opt", "/srv", "/media", "/home")
_LAZY_IMPORTS = ("slirpy.pcap", "slirpy.api", "slirpy.impair", "slirpy.autoports")


class Hardened:
    """What `harden` did: warnings to print, and the directory fds of `proc_dirs`.

    A plain class, not a dataclass: a hardened `slirpy run` imports this module while its
    sandbox's child sets up tap0, before its command is released (launch._import_harden), and
    the `dataclasses` module (with its `inspect`) would be imported there for it."""

    __slots__ = ("warnings", "dir_fds", "keep_alive")

    def __init__(self, warnings: list[str] | None = None, dir_fds: dict[str, int] | None = None,
                 keep_alive: list[Any] | None = None) -> None:
        self.warnings: list[str] = warnings if warnings is not None else []
        self.dir_fds: dict[str, int] = dir_fds if dir_fds is not None else {}
        # The SIGSYS handler's ctypes callback: keep this object for the life of the process (a
        # freed callback would crash the process at its first forbidden call instead of reporting it).
        self.keep_alive: list[Any] = keep_alive if keep_alive is not None else []

    def __repr__(self) -> str:
        return f"Hardened({', '.join(f'{k}={getattr(self, k)!r}' for k in self.__slots__)})"


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.capset.argtypes = [ctypes.c_void_p, ctypes.c_void_p]


def _check(ret: int, what: str) -> None:
    if ret != 0:
        e = ctypes.get_errno()
        raise HardenError(f"{what}: {os.strerror(e)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = (lambda s: s.encode() if s is not None else None)
    _check(_libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def harden(opts: HardenOptions) -> Hardened:
    """Apply `opts` to this process (single-threaded, set-up done). Raises HardenError; the
    process is then half-hardened and should exit."""
    out = Hardened()
    if not (opts.sandbox or opts.seccomp or opts.no_new_privs):
        return out
    for name in _LAZY_IMPORTS:
        __import__(name)
    if opts.seccomp:
        from . import seccompfilter
        prepared = seccompfilter.prepare()      # loads libseccomp while /usr is still there
    if opts.sandbox:
        _enter_empty_root(opts, out)
        _drop_capabilities()
    if opts.no_new_privs or opts.seccomp:
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    if opts.seccomp:
        out.keep_alive.append(seccompfilter.install(prepared))
    return out


def _unshare_mount_namespace() -> None:
    """A mount namespace of our own; first a user namespace where we lack CAP_SYS_ADMIN."""
    if _libc.unshare(CLONE_NEWNS) == 0:
        return
    if ctypes.get_errno() != errno.EPERM:
        _check(-1, "unshare(CLONE_NEWNS)")
    uid, gid = os.geteuid(), os.getegid()
    _check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNS), "unshare(CLONE_NEWUSER|CLONE_NEWNS)")
    try:
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1\n"),
                           ("gid_map", f"{gid} {gid} 1\n")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    except OSError as e:
        raise HardenError(f"writing /proc/self/{name}: {e.strerror}") from None


def scratch_dir(kept: tuple[str, ...]) -> str:
    """The directory to build the new root on (see _SCRATCH_CHOICES). Raises HardenError."""
    for d in _SCRATCH_CHOICES:
        if os.path.isdir(d) and not any(d == k or d.startswith(k + "/") for k in kept):
            return d
    raise HardenError("no directory to build the new root on: every one of "
                      + ", ".join(_SCRATCH_CHOICES) + " is kept or missing")


def _enter_empty_root(opts: HardenOptions, out: Hardened) -> None:
    """Steps 1 and 2 of the module docstring."""
    scratch = scratch_dir((*KEPT_DIRS, *opts.keep_dirs))
    _unshare_mount_namespace()
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    # Sources are opened (in the new namespace: a bind takes only its own mounts) before the
    # tmpfs hides the scratch directory, under which a kept directory may be.
    sources: list[tuple[str, int]] = []
    try:
        for path in (*KEPT_DIRS, *opts.keep_dirs, *opts.proc_dirs):
            try:
                sources.append((path, os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)))
            except OSError as e:
                raise HardenError(f"cannot keep {path}: {e.strerror}") from None
        _mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=64k,mode=0755")
        handles = []
        for i, (path, fd) in enumerate(sources):
            proc = path in opts.proc_dirs
            inside = f"/.proc{i}" if proc else path
            os.makedirs(scratch + inside, exist_ok=True)
            _mount(f"/proc/self/fd/{fd}", scratch + inside, None, MS_BIND | MS_REC)
            if proc:
                handles.append((path, inside))
            elif path in KEPT_DIRS:
                _read_only(scratch + inside, inside, out)
    finally:
        for _, fd in sources:
            os.close(fd)
    os.mkdir(scratch + "/.old")
    os.chdir(scratch)
    _pivot_root(".", ".old")
    os.chdir("/")
    _check(_libc.umount2(b"/.old", MNT_DETACH), "umount /.old")
    os.rmdir("/.old")
    for path, inside in handles:
        out.dir_fds[path] = os.open(inside, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        _check(_libc.umount2(inside.encode(), MNT_DETACH), f"umount {inside}")
        os.rmdir(inside)
    try:
        _mount("tmpfs", "/", "tmpfs", MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except HardenError as e:
        out.warnings.append(f"the new root stays writable ({e})")


def _read_only(target: str, name: str, out: Hardened) -> None:
    try:
        _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except HardenError as e:
        out.warnings.append(f"{name} stays writable ({e})")


def _pivot_root(new: str, old: str) -> None:
    from pyseccomp import resolve_syscall, system_arch   # libseccomp knows this machine's number
    nr = resolve_syscall(system_arch(), "pivot_root")
    _check(_libc.syscall(nr, new.encode(), old.encode()), "pivot_root")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _drop_capabilities() -> None:
    """Step 3: CAP_NET_BIND_SERVICE is all that is left, in every set."""
    _check(_libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "prctl(PR_CAP_AMBIENT)")
    for cap in range(64):
        if cap == CAP_NET_BIND_SERVICE:
            continue
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            if ctypes.get_errno() == errno.EINVAL:      # past the last capability
                break
            _check(-1, "prctl(PR_CAPBSET_DROP)")
    bit = 1 << CAP_NET_BIND_SERVICE
    data = (_CapData * 2)(_CapData(bit, bit, bit), _CapData(0, 0, 0))
    _check(_libc.capset(ctypes.byref(_CapHeader(_CAP_V3, 0)), data), "capset")


def probe() -> str | None:
    """Whether this machine lets a process harden itself as `slirpy run` does: None if it
    does, else the reason. Tried in a forked child, which exits at once."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:                                     # pragma: no cover (child)
        os.close(r)
        try:
            harden(HardenOptions(keep_dirs=(), proc_dirs=("/proc/self/fd",)))
            msg = b""
        except BaseException as e:                   # noqa: BLE001 - reported to the parent
            msg = (str(e) or type(e).__name__).encode()[:500]
        os.write(w, msg)
        os._exit(0)
    os.close(w)
    try:
        with os.fdopen(r, "rb") as f:
            text = f.read().decode(errors="replace")
    finally:
        _, status = os.waitpid(pid, 0)
    if not text and status != 0:
        return f"the probe process ended with status {status}"
    return text or None


# ------------------------------------------------------------------ the runtime's use

TEST_HOOK_ENV = "SLIRPY_TEST_FORBIDDEN_CALL"     # tests only: make a forbidden call after S s


def runtime_options(base: HardenOptions, *, api_socket: str | None, resolv_conf: str | None,
                    autoports_pid: int | None, stats_file: str | None = None) -> HardenOptions:
    """`base` plus what a runtime still reaches after hardening: the API socket's directory
    (removed at exit), the `--stats-file`'s (written at exit), a resolv.conf outside /etc and
    /run (and where its symlink leads), its own fd table (`slirpy stats`), the sandbox's socket
    tables (`-p auto`)."""
    keep: list[str] = []
    paths = [os.path.abspath(p) for p in (api_socket, stats_file) if p is not None]
    if resolv_conf is not None:
        paths += [os.path.abspath(resolv_conf), os.path.realpath(resolv_conf)]
    for path in paths:
        d = os.path.dirname(path)
        if d != "/" and d not in keep and not any(d == k or d.startswith(k + "/") for k in KEPT_DIRS):
            keep.append(d)
    proc = ["/proc/self/fd"]
    if autoports_pid is not None:
        proc.append(f"/proc/{autoports_pid}/net")
    return HardenOptions(sandbox=base.sandbox, seccomp=base.seccomp, no_new_privs=base.no_new_privs,
                         keep_dirs=tuple(keep), proc_dirs=tuple(proc))


def before_loop(opts: HardenOptions) -> None:
    """Call before the event loop exists: with seccomp on, io_uring_setup fails from now on, so
    libuv keeps to plain epoll instead of batching epoll_ctl through an io_uring. The allow-list
    forbids io_uring_enter: operations submitted to a ring are not seen by seccomp, so a ring set
    up before the filter would be a way around it. (UV_USE_IO_URING=0 does not stop libuv's
    epoll_ctl ring.) Raises HardenError."""
    if opts.seccomp:
        from . import seccompfilter
        try:
            seccompfilter.refuse_io_uring()
        except (OSError, ImportError, RuntimeError) as e:   # RuntimeError: pyseccomp without libseccomp
            raise HardenError(f"seccomp (io_uring_setup): {e}") from None


def harden_runtime(runtime: Any, opts: HardenOptions) -> Hardened:
    """Harden this process for `runtime` (a runtime.Runtime, attached or not; not yet reading
    frames) and point its /proc readers at the kept directory fds. The result is also kept as
    `runtime.hardened`: the SIGSYS handler it holds must live as long as the process."""
    try:
        done = harden(opts)
    except (OSError, ImportError, RuntimeError) as e:   # RuntimeError: pyseccomp without libseccomp
        raise HardenError(str(e)) from None
    runtime.hardened = done
    fd_dir = done.dir_fds.get("/proc/self/fd")
    if fd_dir is not None:
        runtime.fd_dir = fd_dir
    auto = getattr(runtime, "autoports", None)
    if auto is not None:
        net = next((fd for path, fd in done.dir_fds.items() if path.endswith("/net")), None)
        if net is not None:
            auto.read_from(net)
    _arm_test_hook()
    return done


def _arm_test_hook() -> None:
    """Tests only (TEST_HOOK_ENV set): after that many seconds, call execve, which the filter
    forbids, so that a test can see the process end and the line it writes."""
    delay = os.environ.get(TEST_HOOK_ENV)
    if not delay:
        return
    import asyncio
    asyncio.get_running_loop().call_later(float(delay), os.execv, "/bin/true", ["true"])
