"""The sandbox against the real kernel: namespaces, tap0 configuration, the TAP fd handoff,
exit codes, signals and teardown.  Runs inside helpers/testns (see tests/conftest.py); the
frames read here never leave the test: nothing answers them."""

from __future__ import annotations

import errno
import os
import select
import signal
import struct
import sys
import time
import uuid
from pathlib import Path

import pytest

from slirpy import tap as tapmod
from slirpy.config import NetConfig, build_net_config, parse_cidr
from slirpy.sandbox import Sandbox, SandboxError, SandboxOptions
from slirpy.tap import VNET_HDR_LEN, TapDevice

DEADLINE = 20.0   # seconds; a hang fails the test instead of blocking the suite


def start(argv: list[str], net: NetConfig | None = None, **kw) -> Sandbox:
    return Sandbox.start(SandboxOptions(argv=argv, net=net or NetConfig(), **kw))


def wait_for(pred, what: str, timeout: float = DEADLINE):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def run(argv: list[str], net: NetConfig | None = None, **kw) -> int:
    sb = start(argv, net, **kw)
    try:
        sb.release()
        r, _, _ = select.select([sb.pidfd], [], [], DEADLINE)
        assert r, f"sandboxed command {argv} did not exit within {DEADLINE} s"
        return sb.wait()
    finally:
        sb.close()


def sandbox_children(sb: Sandbox) -> list[int]:
    """Outer pids of the supervisor's children (the sandbox's PID 1 and the command)."""
    path = f"/proc/{sb.pid}/task/{sb.pid}/children"
    return [int(x) for x in Path(path).read_text().split()]


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# -- network configuration inside ---------------------------------------------------------------

@pytest.mark.parametrize("cidr,mtu", [("10.0.2.0/24", 65520), ("192.168.77.0/24", 1500),
                                      ("172.20.0.0/16", 9000)])
def test_tap0_is_configured(cidr, mtu, capfd, no_stray_processes):
    net = NetConfig(network=parse_cidr(cidr), mtu=mtu)
    # tap0's queue length is set beside the command's start (an `ip` the run does not wait for,
    # commit 672cdc5): give it up to 5 s before looking.
    wait_qlen = ("i=0; until ip -o link show dev tap0 | grep -q ' qlen 10000'; do "
                 "i=$((i+1)); [ $i -gt 100 ] && break; sleep 0.05; done; ")
    code = run(["sh", "-c", wait_qlen + "ip -o -4 addr show; echo ROUTES; ip -4 route show; "
                "echo LINKS; ip -o link show"], net)
    out = capfd.readouterr().out
    assert code == 0, out
    addrs, rest = out.split("ROUTES\n")
    routes, links = rest.split("LINKS\n")
    guest = f"{net.guest}/{net.network.prefixlen}"
    assert any(" tap0 " in ln and f"inet {guest} " in ln for ln in addrs.splitlines()), addrs
    assert f"default via {net.gateway} dev tap0" in routes, routes
    names = [ln.split(":")[1].strip() for ln in links.splitlines() if ln.strip()]
    assert names == ["lo", "tap0"], links
    tap_line = next(ln for ln in links.splitlines() if ": tap0:" in ln)
    assert f" mtu {mtu} " in tap_line and " qlen 10000" in tap_line and ",UP," in tap_line, tap_line
    lo_line = next(ln for ln in links.splitlines() if ": lo:" in ln)
    assert ",UP," in lo_line, lo_line


IPV6_PROBE = ("ip -o -6 addr show dev tap0; echo ROUTES; ip -6 route show; echo SYSCTL; "
              "cat /proc/sys/net/ipv6/conf/tap0/accept_dad /proc/sys/net/ipv6/conf/tap0/accept_ra "
              "/proc/sys/net/ipv6/conf/tap0/disable_ipv6")


@pytest.mark.parametrize("cidr6", ["fd00::/64", "fd12:3456:789a:1::/64"])
def test_tap0_gets_ipv6_statically_without_dad(cidr6, capfd, no_stray_processes):
    net = build_net_config(cidr6=cidr6, mtu=1500)
    assert run(["sh", "-c", IPV6_PROBE], net) == 0
    out = capfd.readouterr().out
    addrs, rest = out.split("ROUTES\n")
    routes, sysctls = rest.split("SYSCTL\n")
    glob = [ln for ln in addrs.splitlines() if "scope global" in ln]
    # exactly the static address, usable at once (not tentative: no DAD), no SLAAC one beside it
    assert len(glob) == 1 and f"inet6 {net.guest6}/64 " in glob[0], addrs
    # (no IFA_F_NODAD flag since tap0 is configured by ioctl: accept_dad=0, checked below, does it)
    assert "tentative" not in addrs, addrs
    assert f"default via {net.gateway6} dev tap0" in routes, routes
    assert sysctls.split() == ["0", "0", "0"], sysctls


def test_no_ipv6_disables_it_on_tap0(capfd, no_stray_processes):
    net = build_net_config(ipv6=False)
    assert run(["sh", "-c", IPV6_PROBE], net) == 0
    addrs, rest = capfd.readouterr().out.split("ROUTES\n")
    routes, sysctls = rest.split("SYSCTL\n")
    assert "inet6" not in addrs and "tap0" not in routes, (addrs, routes)
    assert sysctls.split()[-1] == "1", sysctls


def test_guest_mac_is_set(capfd):
    net = NetConfig(guest_mac=bytes.fromhex("020000aabbcc"))
    assert run(["ip", "-o", "link", "show", "tap0"], net) == 0
    assert "link/ether 02:00:00:aa:bb:cc " in capfd.readouterr().out


def test_fresh_pid_namespace_and_proc(capfd):
    # The command is PID 2 (not PID 1: it keeps default signal actions); /proc is the new
    # namespace's: only the init, the shell and ls are in it.
    code = run(["sh", "-c", "echo pid=$$; echo /proc/[0-9]*"])
    out = capfd.readouterr().out
    assert code == 0, out
    assert out.split() == ["pid=2", "/proc/1", "/proc/2"], out


# -- the TAP fd in the parent -------------------------------------------------------------------

def read_arp_for(fd: int, target: str, vnet: bool) -> bytes:
    """Read frames from the TAP until an ARP request for `target`; return that raw frame."""
    want = bytes(int(x) for x in target.split("."))
    off = VNET_HDR_LEN if vnet else 0
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], 0.5)
        if not r:
            continue
        while True:
            try:
                frame = os.read(fd, 65600)
            except BlockingIOError:
                break
            eth = frame[off:]
            if len(eth) >= 42 and eth[12:14] == b"\x08\x06" and eth[20:22] == b"\x00\x01" and eth[38:42] == want:
                return frame
    pytest.fail(f"no ARP request for {target} read from the TAP within {DEADLINE} s")


@pytest.mark.parametrize("offload", [True, False])
def test_tap_fd_reads_guest_frames(offload, no_stray_processes):
    net = NetConfig(offload=offload)
    sender = f"import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('{net.gateway}', 9))"
    sb = start([sys.executable, "-c", sender], net)
    try:
        assert sb.vnet_hdr is offload and sb.offload is offload and sb.fallback_reason is None
        assert not os.get_blocking(sb.tap_fd)
        assert not os.get_inheritable(sb.tap_fd)
        sb.release()
        frame = read_arp_for(sb.tap_fd, str(net.gateway), vnet=offload)
        if offload:
            assert frame[:VNET_HDR_LEN] == bytes(VNET_HDR_LEN)   # ARP: all-zero virtio-net header
            eth = frame[VNET_HDR_LEN:]
        else:
            eth = frame
        assert eth[:6] == b"\xff" * 6                             # broadcast destination first
        assert eth[28:32] == net.guest.packed                     # sender protocol address
        assert sb.wait() == 0
    finally:
        sb.close()


def test_tap_fallback_without_offload(monkeypatch):
    # The kernel here accepts the offloads; make TUNSETOFFLOAD fail to exercise the fallback.
    real_ioctl = tapmod.fcntl.ioctl

    class FakeFcntl:
        @staticmethod
        def ioctl(fd, req, arg=0, *rest):
            if req == tapmod.TUNSETOFFLOAD:
                raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
            return real_ioctl(fd, req, arg, *rest)

    monkeypatch.setattr(tapmod, "fcntl", FakeFcntl)
    name = f"tfb{uuid.uuid4().hex[:8]}"
    dev = TapDevice.create(name, offload=True)
    try:
        assert (dev.vnet_hdr, dev.offload) == (False, False)
        assert "TUNSETOFFLOAD" in dev.fallback_reason and "Invalid argument" in dev.fallback_reason
        flags = struct.unpack_from("=H", real_ioctl(dev.fd, tapmod.TUNGETIFF, bytes(40)), 16)[0]
        assert flags & tapmod.IFF_VNET_HDR == 0 and flags & tapmod.IFF_TAP
    finally:
        dev.close()


# -- exit codes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("script,code", [("exit 0", 0), ("exit 3", 3), ("kill -TERM $$", 128 + 15),
                                         ("kill -KILL $$", 128 + 9)])
def test_exit_codes(script, code):
    assert run(["sh", "-c", script]) == code


def test_meanwhile_runs_once_before_the_tap_is_handed_over(no_stray_processes):
    calls = []
    sb = Sandbox.start(SandboxOptions(argv=["true"], net=NetConfig()), lambda: calls.append(os.getpid()))
    try:
        assert calls == [os.getpid()]          # in slirpy's own process, exactly once
        assert sb.tap_fd >= 0
        sb.release()
        r, _, _ = select.select([sb.pidfd], [], [], DEADLINE)
        assert r and sb.wait() == 0
    finally:
        sb.close()


def test_meanwhile_failing_kills_the_child_and_propagates(no_stray_processes):
    def boom() -> None:
        raise RuntimeError("import failed")

    with pytest.raises(RuntimeError, match="import failed"):
        Sandbox.start(SandboxOptions(argv=["true"], net=NetConfig()), boom)


def test_command_not_found(capfd, no_stray_processes):
    name = f"slirpy-no-such-command-{uuid.uuid4().hex[:6]}"
    assert run([name, "arg"]) == 127
    assert f"slirpy: {name}: command not found" in capfd.readouterr().err


def test_command_not_executable(tmp_path, capfd):
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    assert run([str(script)]) == 126
    assert f"slirpy: {script}: Permission denied" in capfd.readouterr().err


# -- signals ------------------------------------------------------------------------------------

def test_send_signal_reaches_command_handler(tmp_path):
    ready, got = tmp_path / "ready", tmp_path / "got"
    sb = start(["sh", "-c", f"trap 'echo term > {got}; exit 7' TERM; : > {ready}; "
                            "while :; do sleep 0.05; done"])
    try:
        sb.release()
        wait_for(ready.exists, "the command to start")
        sb.send_signal(signal.SIGTERM)
        r, _, _ = select.select([sb.pidfd], [], [], DEADLINE)
        assert r
        assert sb.wait() == 7
        assert got.read_text() == "term\n"
        sb.send_signal(signal.SIGTERM)      # gone: no error
    finally:
        sb.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_send_signal_default_action(sig, tmp_path, no_stray_processes):
    ready = tmp_path / "ready"
    sb = start(["sh", "-c", f": > {ready}; exec sleep 60"])
    try:
        sb.release()
        wait_for(ready.exists, "the command to start")
        wait_for(lambda: len(sandbox_children(sb)) == 2, "the command process")
        sb.send_signal(sig)
        r, _, _ = select.select([sb.pidfd], [], [], DEADLINE)
        assert r, "command survived the signal"
        assert sb.wait() == 128 + sig
    finally:
        sb.close()


# -- nothing left behind ------------------------------------------------------------------------

def test_background_processes_die_with_the_command(tmp_path, no_stray_processes):
    token = f"1000.{uuid.uuid4().int % 10**9}"
    ready = tmp_path / "ready"
    # One plain background child and one double-forked into a new session (reparented to PID 1).
    script = (f"sleep {token} & (setsid sleep {token} &); "
              f"while [ $(pgrep -fc 'sleep {token}') -lt 2 ]; do sleep 0.02; done; : > {ready}; "
              "read line")
    rfd, wfd = os.pipe()
    saved = os.dup(0)
    os.dup2(rfd, 0)
    try:
        sb = start(["sh", "-c", script])
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        os.close(rfd)
    try:
        sb.release()
        wait_for(ready.exists, "the background processes")
        init_pid, cmd_pid = sorted(sandbox_children(sb))
        sleepers = [int(p) for p in os.listdir("/proc") if p.isdigit() and _cmdline(int(p)) == f"sleep {token}"]
        assert len(sleepers) == 2 and all(alive(p) for p in sleepers)
        os.write(wfd, b"\n")               # let the command exit
        r, _, _ = select.select([sb.pidfd], [], [], DEADLINE)
        assert r
        assert sb.wait() == 0
        for pid in [init_pid, cmd_pid, *sleepers]:
            assert not alive(pid), f"process {pid} ({_cmdline(pid)!r}) outlived the command"
    finally:
        os.close(wfd)
        sb.close()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def test_command_inherits_no_slirpy_fds(tmp_path):
    ready = tmp_path / "ready"
    ours = {int(fd) for fd in os.listdir("/proc/self/fd") if _inheritable(int(fd))}
    sb = start(["sh", "-c", f": > {ready}; exec sleep 60"])
    try:
        sb.release()
        wait_for(ready.exists, "the command to start")
        cmd_pid = max(sandbox_children(sb))
        wait_for(lambda: _cmdline(cmd_pid) == "sleep 60", "the exec")
        fds = {int(fd): os.readlink(f"/proc/{cmd_pid}/fd/{fd}") for fd in os.listdir(f"/proc/{cmd_pid}/fd")}
        assert set(fds) <= ours | {0, 1, 2}, fds
        assert not any("tun" in target or "socket:" in target or "pidfd" in target for target in fds.values()), fds
    finally:
        sb.send_signal(signal.SIGKILL)
        sb.wait()
        sb.close()


def _inheritable(fd: int) -> bool:
    try:
        return os.get_inheritable(fd)
    except OSError:
        return False


def test_close_without_release_leaves_nothing(no_stray_processes):
    sb = start(["sh", "-c", "exit 0"])
    children = sandbox_children(sb)
    assert len(children) == 1        # only the sandbox's PID 1 before release()
    sb.close()                       # the supervisor sees the socket close and gives up
    pidfd = os.pidfd_open(sb.pid)
    try:
        r, _, _ = select.select([pidfd], [], [], DEADLINE)
    finally:
        os.close(pidfd)
    assert r
    assert sb.wait() == 125
    assert not alive(children[0])


# -- start-up errors ----------------------------------------------------------------------------

def test_child_setup_error_is_one_line(no_stray_processes):
    with pytest.raises(SandboxError) as ei:
        start(["true"], NetConfig(guest_mac=b"\x02\x00\x00"))
    msg = str(ei.value)
    assert "\n" not in msg and "invalid guest MAC" in msg


def test_empty_argv_is_refused():
    with pytest.raises(SandboxError):
        start([])


PARENT_SCRIPT = """
import os, sys, time
from slirpy.config import NetConfig
from slirpy.sandbox import Sandbox, SandboxOptions
sb = Sandbox.start(SandboxOptions(argv=sys.argv[1:], net=NetConfig()))
sb.release()
print(sb.pid, flush=True)
time.sleep(600)
"""


def test_everything_dies_with_slirpy(tmp_path, no_stray_processes):
    """SIGKILL to slirpy itself (no cleanup code runs): the supervisor, the sandbox's PID 1,
    the command and its background children all go (PR_SET_PDEATHSIG + PID namespace)."""
    import subprocess
    token = f"1000.{uuid.uuid4().int % 10**9}"
    ready = tmp_path / "ready"
    parent = subprocess.Popen([sys.executable, "-c", PARENT_SCRIPT, "sh", "-c",
                               f"sleep {token} & : > {ready}; exec sleep {token}"],
                              stdout=subprocess.PIPE, text=True, cwd=str(Path(tapmod.__file__).parents[1]))
    try:
        sup = int(parent.stdout.readline())
        wait_for(ready.exists, "the command to start")
        victims = [sup, *[int(x) for x in Path(f"/proc/{sup}/task/{sup}/children").read_text().split()]]
        def sleeps() -> list[int]:
            found = [int(p) for p in os.listdir("/proc") if p.isdigit() and _cmdline(int(p)) == f"sleep {token}"]
            return found if len(found) == 2 else []

        # both sleeps: the background one may not have exec'd yet when `ready` appears
        victims += wait_for(sleeps, "both sleeps to start")
        assert len(victims) == 5 and all(alive(p) for p in victims), victims
        parent.kill()
        assert parent.wait(DEADLINE) == -signal.SIGKILL
        wait_for(lambda: not any(alive(p) for p in victims), "every sandbox process to die")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()


TTY_SCRIPT = """
import select, signal, sys
from slirpy.config import NetConfig
from slirpy.sandbox import Sandbox, SandboxOptions
signal.signal(signal.SIGINT, signal.SIG_IGN)     # like a runtime that does not forward ^C
sb = Sandbox.start(SandboxOptions(argv=sys.argv[1:], net=NetConfig()))
sb.release()
select.select([sb.pidfd], [], [])
print("exit", sb.wait(), flush=True)
"""


@pytest.mark.parametrize("foreground", [True, False])
def test_terminal_interrupt(foreground, tmp_path):
    """^C on a terminal reaches the command directly (same process group), and the sandbox's
    PID 1 survives it.  The supervisor, which gets it too, must not forward a second copy: a
    command that moved to its own session (not in the terminal's foreground group) gets none."""
    import pty
    got, ready, go = tmp_path / "got", tmp_path / "ready", tmp_path / "go"
    script = (f"trap 'echo int >> {got}' INT; : > {ready}; "
              f"while [ ! -e {go} ]; do sleep 0.05; done; exit 5")
    argv = ["sh", "-c", script] if foreground else ["setsid", "sh", "-c", script]
    pid, master = pty.fork()
    if pid == 0:  # pragma: no cover - child: session leader with the pty as controlling tty
        try:
            os.chdir(Path(tapmod.__file__).parents[1])
            os.execv(sys.executable, [sys.executable, "-c", TTY_SCRIPT, *argv])
        finally:
            os._exit(99)
    try:
        wait_for(ready.exists, "the command to start")
        os.write(master, b"\x03")                      # the terminal's interrupt character
        if foreground:
            wait_for(got.exists, "the SIGINT handler")
        time.sleep(0.3)                                # room for a (wrong) forwarded copy
        go.touch()
        out = b""
        end = time.monotonic() + DEADLINE
        while b"exit" not in out or not out.endswith(b"\n"):
            r, _, _ = select.select([master], [], [], max(0.0, end - time.monotonic()))
            assert r, f"no exit report; terminal output so far: {out!r}"
            try:
                out += os.read(master, 4096)
            except OSError:
                break
        assert b"exit 5" in out, out
        if foreground:
            assert got.read_text() == "int\n"
        else:
            assert not got.exists(), "the supervisor forwarded a terminal-generated SIGINT"
    finally:
        os.close(master)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)


PROC_SCRIPT = """
import select
from slirpy.config import NetConfig
from slirpy.sandbox import Sandbox, SandboxOptions
sb = Sandbox.start(SandboxOptions(argv=["sh", "-c", "echo pid=$$"], net=NetConfig()))
print("proc_warning:", sb.proc_warning, flush=True)
sb.release()
select.select([sb.pidfd], [], [])
print("exit", sb.wait(), flush=True)
"""


def test_proc_mount_refused_is_reported():
    """With part of /proc covered (as in many containers) the kernel refuses a fresh proc
    mount in a new user namespace; the sandbox still runs and says so clearly."""
    import shlex
    import subprocess
    inner = f"mount -t tmpfs none /proc/sys && exec {shlex.quote(sys.executable)} -c {shlex.quote(PROC_SCRIPT)}"
    res = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", inner],
                         capture_output=True, text=True, timeout=DEADLINE,
                         cwd=str(Path(tapmod.__file__).parents[1]))
    assert res.returncode == 0, res.stderr
    assert "proc_warning: cannot mount a fresh /proc" in res.stdout
    assert "pid=2" in res.stdout and "exit 0" in res.stdout
    assert "slirpy: warning: cannot mount a fresh /proc for the sandbox's PID namespace" in res.stderr
