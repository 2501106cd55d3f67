"""`slirpy slirp4netns`: a TAP inside namespaces someone else created, for us to serve.

Unlike `Sandbox.start`, nothing is unshared and nothing is exec'd: a forked child joins the
target's user and net namespaces, creates (or opens) the TAP, sends its fd back over the same
hand-off as the sandbox's and exits.
"""

from __future__ import annotations

import os
import signal
import socket

from slirpy import netconf
from slirpy.sandbox.errors import SandboxError
from slirpy.sandbox.handoff import SETUP_TIMEOUT, kill_and_reap, receive_tap, send_error, send_tap
from slirpy.sandbox.libc import CLONE_NEWNET, CLONE_NEWUSER, set_pdeathsig, setns, setns_fd
from slirpy.tap import TapDevice

TYPE_CHECKING = False   # typing's, without importing typing on the way to the ready fd (quickready.py)
if TYPE_CHECKING:  # pragma: no cover
    from slirpy.netconf import TapNetwork

# No dataclasses here (nor in what this imports): slirp4netns mode reaches its ready fd through
# this module before it imports dataclasses or config.py (perf/NOTES.md, "Start-up").


class AttachOptions:
    """Where the TAP goes: the net namespace of `pid` (or `netns_path`), joined through the user
    namespace of `pid` (or `userns_path`, which wins).  `net`: a config.NetConfig, or what
    quickready.py gives before that is built."""

    def __init__(self, tap_name: str, net: TapNetwork, configure: bool = False, pid: int | None = None,
                 netns_path: str | None = None, userns_path: str | None = None) -> None:
        self.tap_name, self.net = tap_name, net
        self.configure = configure          # address, route, MTU, MAC, up (slirp4netns -c)
        self.pid, self.netns_path, self.userns_path = pid, netns_path, userns_path

    def paths(self) -> tuple[str | None, str]:
        """(user namespace path or None, net namespace path)."""
        netns = self.netns_path if self.netns_path is not None else f"/proc/{self.pid}/ns/net"
        userns = self.userns_path
        if userns is None and self.pid is not None:
            userns = f"/proc/{self.pid}/ns/user"
        return userns, netns


class AttachedTap:
    def __init__(self, fd: int, name: str, vnet_hdr: bool, offload: bool,
                 fallback_reason: str | None = None, warnings: list[str] | None = None,
                 child: int = 0) -> None:
        self.fd, self.name, self.vnet_hdr, self.offload = fd, name, vnet_hdr, offload
        self.fallback_reason = fallback_reason
        self.warnings: list[str] = warnings if warnings is not None else []   # from configuring it
        self.child = child         # with finish(wait=False): the child to reap (reap_child)

    def reap_child(self) -> None:
        """Wait for the child that is still setting the TAP's queue length (finish(wait=False))."""
        child, self.child = self.child, 0
        if child:
            try:
                os.waitpid(child, 0)
            except ChildProcessError:
                pass


def attach_tap(opts: AttachOptions) -> AttachedTap:
    """Create (or open, if it exists) TAP `opts.tap_name` inside another process's namespaces.

    A forked child joins the user namespace (setns(CLONE_NEWUSER) needs a single-threaded
    process, which a fresh fork is) and the net namespace, opens the TAP with the same offloads
    as `slirpy run`, configures it with `--configure`, sends the fd back over SCM_RIGHTS and
    exits.  Call before any event loop or thread exists.  Raises SandboxError with one line.
    """
    return start_attach(opts).finish()


class PendingAttach:
    """attach_tap() in two halves: the child is already at work; `finish()` waits for its TAP.

    Between the two the caller may do other start-up work (slirp4netns mode with --api-socket
    imports its event loop and runtime there, while the child configures the TAP).  Call
    `finish()` or `abort()` exactly once."""

    def __init__(self, pid: int, sock: socket.socket, opts: AttachOptions) -> None:
        self.pid = pid               # the child's
        self._sock = sock
        self._opts = opts

    def finish(self, wait: bool = True) -> AttachedTap:
        """The TAP, once configured.  `wait=False`: return before the child has set its queue
        length (`ip`, a few ms that need not delay the ready fd); then `reap_child()` later,
        and that setting's problems, if any, reach stderr from the child."""
        sock, pid = self._sock, self.pid
        try:
            sock.settimeout(SETUP_TIMEOUT)
            tap_fd, note = receive_tap(sock, pid)
        except BaseException as e:
            sock.close()
            kill_and_reap(pid)
            if isinstance(e, socket.timeout):
                raise SandboxError(f"attaching to the namespace timed out after {SETUP_TIMEOUT:.0f} s") from None
            raise
        sock.close()
        os.set_blocking(tap_fd, False)
        tap = AttachedTap(fd=tap_fd, name=note.get("name", self._opts.tap_name),
                          vnet_hdr=bool(note.get("vnet_hdr")), offload=bool(note.get("offload")),
                          fallback_reason=note.get("fallback_reason"),
                          warnings=[str(w) for w in note.get("warnings") or ()], child=pid)
        if wait:
            tap.reap_child()
        return tap

    def abort(self) -> None:
        """Kill the child and forget it (start-up failed in between)."""
        self._sock.close()
        kill_and_reap(self.pid)


def start_attach(opts: AttachOptions) -> PendingAttach:
    """Fork the child of attach_tap() and return at once.  Raises SandboxError (cannot fork)."""
    parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        pid = os.fork()
    except OSError as e:
        parent_sock.close()
        child_sock.close()
        raise SandboxError(f"cannot fork: {e.strerror}") from None
    if pid == 0:  # pragma: no cover - runs in the forked child, reported over the socket
        code = 1
        try:
            parent_sock.close()
            code = _attach_child(child_sock, opts)
        except BaseException:
            pass
        finally:
            os._exit(code)
    child_sock.close()
    return PendingAttach(pid, parent_sock, opts)


def _attach_child(sock: socket.socket, opts: AttachOptions) -> int:  # pragma: no cover
    """The forked child of attach_tap: join, create, configure, send.  Returns the exit status."""
    set_pdeathsig(signal.SIGKILL)
    userns, netns = opts.paths()
    try:
        # Open both first: after setns(CLONE_NEWUSER) the target's /proc entries may look different.
        net_fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        send_error(sock, SandboxError(f"{netns}: {e.strerror}"))
        return 1
    user_problem = None
    if userns is not None:
        try:
            setns(userns, CLONE_NEWUSER)
        except OSError as e:
            # As slirp4netns: not fatal by itself (EINVAL = it is already our user namespace);
            # it only matters if joining the net namespace then fails.
            user_problem = f"{userns}: {e.strerror}"
    try:
        setns_fd(net_fd, CLONE_NEWNET)
    except OSError as e:
        why = f"cannot join network namespace {netns}: {e.strerror}"
        if user_problem:
            why += f" (joining user namespace {user_problem})"
        send_error(sock, SandboxError(why))
        return 1
    os.close(net_fd)
    try:
        tap = TapDevice.create(opts.tap_name, offload=opts.net.offload)
    except (OSError, ValueError) as e:
        send_error(sock, e)
        return 1
    try:
        # IPv6 off leaves the TAP's IPv6 as the kernel made it, as slirp4netns does.
        warnings = netconf.configure(tap.name, opts.net, txqueuelen=None) if opts.configure else []
        note = {"name": tap.name, "vnet_hdr": tap.vnet_hdr, "offload": tap.offload,
                "fallback_reason": tap.fallback_reason, "warnings": warnings}
        send_tap(sock, note, tap.fd)
    except (OSError, netconf.NetconfError) as e:
        send_error(sock, e)
        return 1
    finally:
        tap.close()
    if opts.configure:       # after the hand-off: the queue length is no reason to wait
        for warning in netconf.set_txqueuelen(tap.name, netconf.TXQUEUELEN):
            os.write(2, f"slirpy: warning: {warning}\n".encode())
    return 0
