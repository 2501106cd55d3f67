"""`slirpy slirp4netns`: the slirp4netns drop-in, against namespaces it did not create.

The target is `unshare -Urn sleep` (a user+net namespace owned by us, as RootlessKit and
Podman make them); commands run in it with `nsenter -U -n --preserve-credentials`.  Checked:
option validation against the real slirp4netns binary (same message, same exit code), the
ready fd, the exit fd, exit when the target goes away, the `--configure` result as `ip` shows
it (with and without `--enable-ipv6`), a TCP transfer both ways (sha256),
`--disable-host-loopback` and its default, attaching by path with `--userns-path`, `--cidr`,
DNS at network+3.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.netns.test_dns_e2e import DnsServer
from tests.netns.util import HOST_ADDR, REPO, UTIL, expected

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_stray_processes")]

S4N = [sys.executable, "-m", "slirpy", "slirp4netns"]
REAL_S4N = shutil.which("slirp4netns")
TIMEOUT = 60.0


# ------------------------------------------------------------------ helpers

class Target:
    """`unshare -Urn sleep 600`: a user+net namespace pair owned by us, with nothing in it."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(["unshare", "-Urn", "sleep", "600"], stdin=subprocess.DEVNULL)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 10
        mine = os.readlink("/proc/self/ns/net")
        while os.readlink(f"/proc/{self.pid}/ns/net") == mine:   # unshare has not run yet
            assert time.monotonic() < deadline, "unshare -Urn did not create a namespace"
            time.sleep(0.02)
        while os.readlink(f"/proc/{self.pid}/exe").endswith("unshare"):  # not exec'd sleep yet
            assert time.monotonic() < deadline
            time.sleep(0.02)

    def run(self, *cmd: str, timeout: float = TIMEOUT, check: bool = True) -> subprocess.CompletedProcess:
        res = subprocess.run(["nsenter", "-t", str(self.pid), "-U", "-n", "--preserve-credentials", *cmd],
                             capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check:
            assert res.returncode == 0, f"{cmd} in the target failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
        return res

    def guest_ops(self, ops: list[dict]) -> list[dict]:
        out = self.run(sys.executable, str(UTIL), json.dumps(ops)).stdout
        return json.loads([l for l in out.splitlines() if l.startswith("[")][-1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class Slirpy:
    """`python -m slirpy slirp4netns OPTIONS TARGET TAP` with a ready pipe on fd 3 (unless told)."""

    def __init__(self, *args: str, ready: bool = True, exit_pipe: bool = False, wrap: list[str] = (),
                 cmd: list[str] = S4N) -> None:
        self.ready_r = self.exit_w = None
        fds = []
        opts = []
        if ready:
            self.ready_r, ready_w = os.pipe()
            fds.append(ready_w)
            opts += ["-r", str(ready_w)]
        if exit_pipe:
            exit_r, self.exit_w = os.pipe()
            fds.append(exit_r)
            opts += ["-e", str(exit_r)]
        self.proc = subprocess.Popen([*wrap, *cmd, *opts, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, pass_fds=fds, cwd=REPO, start_new_session=True)
        for fd in fds:
            os.close(fd)

    def wait_ready(self, timeout: float = TIMEOUT) -> bytes:
        """What arrives on the ready fd, up to EOF."""
        got = b""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no EOF on the ready fd after {timeout}s (got {got!r})\n{self.output()}"
            r, _, _ = select.select([self.ready_r], [], [], left)
            if r:
                chunk = os.read(self.ready_r, 16)
                if not chunk:
                    return got
                got += chunk

    def wait(self, timeout: float = 20.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"slirpy slirp4netns still running after {timeout}s\n{self.output()}") from None

    def output(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        return f"exit {self.proc.returncode}\n--- stdout\n{self.proc.stdout.read()}\n--- stderr\n{self.proc.stderr.read()}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        for fd in (self.ready_r, self.exit_w):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def target():
    t = Target()
    yield t
    t.kill()


@pytest.fixture
def slirpy():
    started: list[Slirpy] = []

    def start(*args: str, **kw) -> Slirpy:
        s = Slirpy(*args, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def run_cli(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL, cwd=REPO)


# ------------------------------------------------------------------ options: same as slirp4netns

BAD_ARGS = [
    ["--cidr", "foo", "1", "tap0"],
    ["--cidr", "10.0.2.100/24", "1", "tap0"],
    ["--cidr", "10.0.2.0/26", "1", "tap0"],
    ["--cidr", "10.0.2.0/0", "1", "tap0"],
    ["--cidr", "300.0.2.0/24", "1", "tap0"],
    ["-m", "0", "1", "tap0"],
    ["--mtu=65522", "1", "tap0"],
    ["-m", "15x", "1", "tap0"],
    ["-e", "-1", "1", "tap0"],
    ["--ready-fd", "x", "1", "tap0"],
    ["--macaddress=02:00:00:00:00:01", "1", "tap0"],
    ["-c", "--macaddress=zz", "1", "tap0"],
    ["abc", "tap0"],
    ["0", "tap0"],
    ["--netns-type=path", "/nonexistent/netns", "tap0"],
    ["--userns-path=/nonexistent/userns", "1", "tap0"],
    ["--bogus", "1", "tap0"],
    ["1"],
    [],
]


@pytest.mark.skipif(REAL_S4N is None, reason="slirp4netns is not installed (helpers/setup-host installs it)")
@pytest.mark.parametrize("args", BAD_ARGS, ids=lambda a: " ".join(a) or "no-args")
def test_invalid_options_fail_like_slirp4netns(args):
    ours = run_cli([*S4N, *args])
    theirs = run_cli([REAL_S4N, *args])
    assert theirs.returncode == 1, theirs      # the reference fails before touching any namespace
    assert ours.returncode == theirs.returncode, ours
    # Same first error line, modulo the program name getopt puts in front.
    strip = lambda s: s.strip().splitlines()[0].split(": ", 1)[-1] if s.strip() else ""
    assert strip(ours.stderr) == strip(theirs.stderr), (ours.stderr, theirs.stderr)
    # Usage on stdout when slirp4netns prints it.
    assert ours.stdout.startswith("Usage: ") == theirs.stdout.startswith("Usage: "), (ours.stdout, theirs.stdout)


def test_help_names_every_option_rootlesskit_and_podman_probe():
    res = run_cli([*S4N, "--help"])
    assert res.returncode == 0 and res.stderr == ""
    for opt in ("--configure", "--exit-fd", "--ready-fd", "--mtu", "--enable-ipv6", "--api-socket", "--cidr",
                "--disable-host-loopback", "--netns-type", "--userns-path", "--enable-sandbox",
                "--enable-seccomp", "--outbound-addr", "--outbound-addr6", "--disable-dns", "--macaddress"):
        assert opt in res.stdout, opt
    version = run_cli([*S4N, "--version"])
    assert version.returncode == 0
    assert version.stdout.splitlines()[0] == "slirp4netns version 1.2.0"


@pytest.mark.skipif(REAL_S4N is None, reason="slirp4netns is not installed (helpers/setup-host installs it)")
def test_version_has_the_slirp_config_version_max_line_of_slirp4netns():
    """Scripts gate features on `SLIRP_CONFIG_VERSION_MAX: N`: same line format as the real
    binary's, with slirpy's own level (3: no DHCP switch, level 4) not above the reference's."""
    def level(cmd):
        res = run_cli([*cmd, "--version"])
        assert res.returncode == 0, res
        [n] = [l.split(": ", 1)[1] for l in res.stdout.splitlines()
               if l.startswith("SLIRP_CONFIG_VERSION_MAX: ")]
        return int(n)
    assert level(S4N) == 3 and level([REAL_S4N]) >= 3


def test_sandbox_and_seccomp_flags_serve_without_a_warning(target, slirpy):
    """Both are real now (tests/netns/test_harden_e2e.py checks what they do)."""
    s = slirpy("--enable-sandbox", "--enable-seccomp", str(target.pid), "tap0")
    assert s.wait_ready() == b"1"
    s.proc.send_signal(signal.SIGTERM)
    assert s.wait() == 0
    err = s.proc.stderr.read()
    assert "warning" not in err and "no effect" not in err, err


@pytest.mark.parametrize("args, message", [
    (["-6", "--mtu=1000", "1", "tap0"], "IPv6 needs an MTU of at least 1280"),
    (["-6", "--outbound-addr6=nosuchif0", "1", "tap0"], "neither an IPv6 address nor an interface"),
    (["-6", "--outbound-addr6=2001:db8:dead::77", "1", "tap0"], "cannot bind 2001:db8:dead::77 here"),
    (["--outbound-addr=nosuchif0", "1", "tap0"], "neither an IPv4 address nor an interface"),
    (["--outbound-addr=192.0.2.77", "1", "tap0"], "cannot bind 192.0.2.77 here"),
    (["--target-type=bess", "1", "tap0"], "only netns"),
    (["--mtu=100", "1", "tap0"], "MTU 100 is not supported"),
    (["-a", "/tmp/" + "s" * 103, "1", "tap0"], "the specified API socket path is too long (>= 108)"),
])
def test_unsupported_options_are_errors_at_start(args, message):
    res = run_cli([*S4N, *args])
    assert res.returncode == 1, res
    assert message in res.stderr, res.stderr


# ------------------------------------------------------------------ attaching and serving

def test_configure_ready_fd_and_tcp_both_ways(target, slirpy, host_server):
    s = slirpy("-c", "--mtu=1500", str(target.pid), "tap0")
    assert s.wait_ready() == b"1"
    addr = target.run("ip", "-o", "-4", "addr", "show", "dev", "tap0").stdout
    assert "inet 10.0.2.100/24" in addr, addr
    link = target.run("ip", "-o", "link", "show", "dev", "tap0").stdout
    assert "mtu 1500" in link and ",UP" in link, link
    routes = target.run("ip", "-4", "route").stdout
    assert "default via 10.0.2.2 dev tap0" in routes, routes
    assert "UP" in target.run("ip", "-o", "link", "show", "dev", "lo").stdout

    size = 8 << 20
    sink = host_server("sink", size=0, seed=0, reply_size=size)
    src = host_server("source", size=size, seed=7)
    up, down = target.guest_ops([
        {"op": "upload", "host": HOST_ADDR, "port": sink.port, "size": size, "seed": 3,
         "reply_size": size, "reply_seed": 0},
        {"op": "download", "host": HOST_ADDR, "port": src.port},
    ])
    assert up["server"] == {"len": size, "sha": expected(size, 3)}, up
    assert up["reply_len"] == size and up["reply_sha"] == expected(size, 0), up
    assert down == {"len": size, "sha": expected(size, 7)}, down
    # The host saw the connection coming from its own address, as any proxied flow.
    assert sink.wait_results(1)[0].peer[0] == HOST_ADDR


def test_help_offers_enable_ipv6_to_podman():
    # Podman 4.3 passes --enable-ipv6 whenever the helper's --help mentions it; it must then work.
    res = run_cli([*S4N, "--help"])
    line = next(l for l in res.stdout.splitlines() if "--enable-ipv6" in l)
    assert line.startswith("-6, --enable-ipv6") and "not supported" not in line, line


def test_enable_ipv6_with_configure_sets_the_address_and_route(target, slirpy):
    s = slirpy("-c", "--enable-ipv6", "--disable-host-loopback", str(target.pid), "tap0")
    assert s.wait_ready() == b"1"
    addr = target.run("ip", "-o", "-6", "addr", "show", "dev", "tap0", "scope", "global").stdout
    assert "inet6 fd00::100/64 " in addr and "tentative" not in addr, addr
    assert len(addr.splitlines()) == 1, addr           # the static address only: no SLAAC one
    assert "default via fd00::2 dev tap0" in target.run("ip", "-6", "route").stdout
    # IPv4 is configured as before
    assert "inet 10.0.2.100/24" in target.run("ip", "-o", "-4", "addr", "show", "dev", "tap0").stdout


def test_ipv6_stays_off_by_default_as_in_slirp4netns(target, slirpy):
    s = slirpy("-c", str(target.pid), "tap0")
    assert s.wait_ready() == b"1"
    assert "inet6 fd00" not in target.run("ip", "-o", "-6", "addr", "show", "dev", "tap0").stdout
    assert "fd00::2" not in target.run("ip", "-6", "route").stdout
    s.proc.send_signal(signal.SIGTERM)
    assert s.wait() == 0
    assert "IPv6" not in s.proc.stdout.read()          # the banner has no IPv6 lines


def test_without_configure_the_tap_exists_but_is_left_alone(target, slirpy):
    s = slirpy(str(target.pid), "tap0")
    assert s.wait_ready() == b"1"
    link = target.run("ip", "-o", "link", "show", "dev", "tap0").stdout
    assert "tap0" in link and ",UP" not in link, link
    assert "inet " not in target.run("ip", "-o", "-4", "addr", "show", "dev", "tap0").stdout


def test_exit_fd_closed_stops_slirpy(target, slirpy):
    s = slirpy("-c", str(target.pid), "tap0", exit_pipe=True)
    assert s.wait_ready() == b"1"
    time.sleep(0.2)
    assert s.proc.poll() is None, s.output()
    os.close(s.exit_w)
    s.exit_w = None
    assert s.wait() == 0, s.output()
    assert target.proc.poll() is None        # the target is not ours to stop


def test_console_script_hardened_exits_0_when_the_exit_fd_closes(target, slirpy):
    """What Podman runs: the `slirpy-slirp4netns` console script, hardened, told to stop by its
    exit fd. Its main() leaves without the interpreter's teardown (exitnow.py), after the
    sandbox has hidden slirpy's files: it still exits 0, with nothing on stderr."""
    script = Path(sys.executable).parent / "slirpy-slirp4netns"
    if not script.exists():
        pytest.skip(f"no console script at {script} (an editable install has one)")
    s = slirpy("-c", "--enable-sandbox", "--enable-seccomp", str(target.pid), "tap0",
               exit_pipe=True, cmd=[str(script)])
    assert s.wait_ready() == b"1"
    os.close(s.exit_w)
    s.exit_w = None
    assert s.wait() == 0, s.output()
    assert s.proc.stderr.read() == ""


def test_target_exit_stops_slirpy(target, slirpy):
    s = slirpy("-c", str(target.pid), "tap0")
    assert s.wait_ready() == b"1"
    target.kill()
    assert s.wait() == 0, s.output()


def test_sigterm_stops_slirpy(target, slirpy):
    s = slirpy("-c", str(target.pid), "tap0")
    assert s.wait_ready() == b"1"
    s.proc.send_signal(signal.SIGTERM)
    assert s.wait() == 0, s.output()


@pytest.mark.parametrize("disable", [False, True], ids=["default", "disable-host-loopback"])
def test_host_loopback_follows_slirp4netns_default(target, slirpy, host_server, disable):
    srv = host_server("source", "127.0.0.1", size=4096, seed=5)
    s = slirpy("-c", *(["--disable-host-loopback"] if disable else []), str(target.pid), "tap0")
    assert s.wait_ready() == b"1"
    [res] = target.guest_ops([{"op": "connect", "host": "10.0.2.2", "port": srv.port, "timeout": 5.0}])
    if disable:
        assert res["ok"] is False and res["error"] == "ENETUNREACH", res
        assert srv.accepted == 0
    else:
        assert res["ok"] is True, res
        srv.wait_results(1)


def test_attach_by_path_with_userns_path_and_cidr(target, slirpy):
    s = slirpy("-c", "--netns-type=path", f"--userns-path=/proc/{target.pid}/ns/user",
               "--cidr=10.0.135.128/25", f"/proc/{target.pid}/ns/net", "eth7")
    assert s.wait_ready() == b"1"
    addr = target.run("ip", "-o", "-4", "addr", "show", "dev", "eth7").stdout
    assert "inet 10.0.135.228/25" in addr, addr
    assert "default via 10.0.135.130 dev eth7" in target.run("ip", "-4", "route").stdout
    # Path mode has no process to watch: it runs until told to stop.
    target.kill()
    time.sleep(0.3)                          # room for a (wrong) exit
    assert s.proc.poll() is None, s.output()
    s.proc.send_signal(signal.SIGTERM)
    assert s.wait() == 0, s.output()


def test_macaddress_is_set_with_configure(target, slirpy):
    s = slirpy("-c", "--macaddress=02:5a:11:22:33:44", str(target.pid), "tap0")
    assert s.wait_ready() == b"1"
    assert "link/ether 02:5a:11:22:33:44" in target.run("ip", "-o", "link", "show", "dev", "tap0").stdout


def test_dns_at_network_plus_3(target, slirpy, tmp_path):
    if shutil.which("dig") is None:
        pytest.fail("dig is not installed (helpers/setup-host installs dnsutils)")
    server = DnsServer(HOST_ADDR, 53)
    try:
        resolv = tmp_path / "resolv.conf"
        resolv.write_text(f"nameserver {HOST_ADDR}\n")
        resolv.chmod(0o644)
        # slirpy reads its upstream from /etc/resolv.conf: give it one in a private mount namespace.
        wrap = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                f'mount --bind "{resolv}" /etc/resolv.conf && exec "$0" "$@"']
        s = slirpy("-c", "--cidr=192.168.77.0/24", str(target.pid), "tap0", wrap=wrap)
        assert s.wait_ready() == b"1"
        res = target.run("dig", "+short", "+time=3", "+tries=2", "@192.168.77.3", "a.test")
        assert res.stdout.split() == ["192.0.2.10"], res
        assert ("udp", "a.test", 1) in server.queries
    finally:
        server.close()


needs_api = pytest.mark.skipif(not __import__("slirpy.slirp4netns", fromlist=["x"]).api_available(),
                               reason="the port-forwarding API (slirpy/api.py) has not landed yet")


@needs_api
def test_api_socket_in_a_missing_directory_fails_at_start(target, slirpy, tmp_path):
    s = slirpy("-c", "-a", str(tmp_path / "no-such-dir" / "api.sock"), str(target.pid), "tap0")
    assert s.wait_ready() == b""             # EOF without "1": never became ready
    assert s.wait() == 1
    assert "cannot listen on the API socket" in s.output()


@needs_api
def test_api_socket_forwards_a_host_port_before_ready(target, slirpy, tmp_path):
    import socket as _socket
    path = str(tmp_path / "api.sock")
    s = slirpy("-c", "-a", path, str(target.pid), "tap0")
    assert s.wait_ready() == b"1"            # the API is listening once ready is written
    with _socket.socket(_socket.AF_UNIX) as c:
        c.connect(path)
        c.sendall(b'{"execute": "list_hostfwd"}')
        c.shutdown(_socket.SHUT_WR)
        reply = json.loads(c.recv(4096))
    assert reply == {"entries": []}, reply


def test_start_attach_finish_configures_and_abort_leaves_no_child(target):
    from slirpy.config import NetConfig
    from slirpy.sandbox import AttachOptions, start_attach

    opts = AttachOptions(tap_name="tap0", net=NetConfig(), configure=True, pid=target.pid)
    tap = start_attach(opts).finish()       # what slirp4netns mode does, with imports in between
    try:
        assert tap.name == "tap0" and tap.warnings == []
        assert "10.0.2.100/24" in target.run("ip", "-o", "-4", "addr", "show", "dev", "tap0").stdout
    finally:
        os.close(tap.fd)
    pending = start_attach(AttachOptions(tap_name="tap1", net=NetConfig(), pid=target.pid))
    pending.abort()
    with pytest.raises(ChildProcessError):  # killed and reaped
        os.waitpid(pending.pid, os.WNOHANG)
