"""The hardened network process (issue 17 items 1-3): `slirpy run` by default, slirp4netns mode
with `--enable-sandbox` / `--enable-seccomp`, compared with the real slirp4netns binary where
it shows: `Seccomp:`, `NoNewPrivs:`, `CapEff:`/`CapPrm:` in /proc/PID/status and the mount
view through /proc/PID/root. Then what must keep working inside the sandbox (API socket,
stats, resolv.conf following, traffic), and a forbidden call ending the process.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.netns.test_slirp4netns_e2e import REAL_S4N, Slirpy, Target, slirpy, target  # noqa: F401 (fixtures)
from tests.netns.util import HOST6_ADDR, HOST_ADDR, REPO, slirpy_argv
from tests.netns.util import proc_status as status

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_stray_processes")]

TIMEOUT = 60.0
CAP_NET_BIND_SERVICE = 1 << 10


def hardening_of(pid: int) -> dict:
    st = status(pid)
    return {"seccomp": st["Seccomp"], "nnp": st["NoNewPrivs"], "eff": int(st["CapEff"], 16),
            "prm": int(st["CapPrm"], 16), "bnd": int(st["CapBnd"], 16),
            "root": sorted(os.listdir(f"/proc/{pid}/root/"))}


def wait_for(pred, what: str, timeout: float = TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# slirpy's last hardening step is its allow-list, and it is its second filter: the first, loaded
# before the command is released (and before the event loop exists), only refuses io_uring_setup
# (harden.before_loop).  The command of `slirpy run` (without -p, --pcap or --api-socket) and
# slirp4netns mode's ready fd go once tap0 is configured, before hardening: no frame is read
# before it ends (serve_sandbox hardens, then attaches the TAP).  So neither the command running
# nor "Seccomp: 2" says hardening is over; the second filter does. The real slirp4netns loads one.
OUR_FILTERS = 2
S4N_FILTERS = 1


def filters_loaded(pid: int, n: int) -> None:
    wait_for(lambda: int(status(pid)["Seccomp_filters"]) >= n, f"seccomp filter {n}")


class Run:
    """`slirpy run OPTIONS -- CMD` in the background (its own session). The default command
    touches a file, then sleeps: once the file exists, the command was released."""

    def __init__(self, *options: str, tmp, cmd: list[str] | None = None, env: dict | None = None) -> None:
        self.started = tmp / "started"
        if cmd is None:
            cmd = ["sh", "-c", f"touch {self.started}; exec sleep 60"]
        self.proc = subprocess.Popen(slirpy_argv(*options) + cmd,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     stdin=subprocess.DEVNULL, start_new_session=True, cwd=REPO,
                                     env=None if env is None else {**os.environ, **env})

    def serving(self, filters: int = OUR_FILTERS) -> dict:
        """The runtime's hardening once the command runs and `filters` seccomp filters are
        loaded (hardening is over)."""
        wait_for(lambda: self.proc.poll() is not None or self.started.exists(), "the command to start")
        assert self.proc.poll() is None, self.finish()
        filters_loaded(self.proc.pid, filters)
        return hardening_of(self.proc.pid)

    def finish(self, sig: int | None = None, timeout: float = TIMEOUT) -> tuple[int, str, str]:
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            out, err = self.proc.communicate()
        return self.proc.returncode, out, err


@pytest.fixture
def runs(tmp_path):
    started: list[Run] = []

    def start(*options: str, **kw) -> Run:
        r = Run(*options, tmp=tmp_path, **kw)
        started.append(r)
        return r
    yield start
    for r in started:
        if r.proc.poll() is None:
            os.killpg(r.proc.pid, signal.SIGKILL)
        r.proc.communicate()


# ------------------------------------------------------------------ what the kernel shows

def _default_api_top() -> list[str]:
    """Every plain run serves its API in <runtime_dir>/sandboxes, and the hardened root keeps
    that directory: under /run on a desktop ($XDG_RUNTIME_DIR=/run/user/UID), in the scratch
    space here (helpers/testns sets XDG_RUNTIME_DIR there)."""
    top = os.environ["XDG_RUNTIME_DIR"].strip("/").split("/")[0]
    return [] if top in ("etc", "run") else [top]


def test_slirpy_run_is_hardened_by_default(runs):
    h = runs().serving()
    assert h == {"seccomp": "2", "nnp": "1", "eff": CAP_NET_BIND_SERVICE, "prm": CAP_NET_BIND_SERVICE,
                 "bnd": CAP_NET_BIND_SERVICE, "root": sorted(["etc", "run", *_default_api_top()])}


def test_no_sandbox_turns_every_part_off(runs):
    h = runs("--no-sandbox").serving(filters=0)
    assert h["seccomp"] == "0" and h["nnp"] == "0" and "usr" in h["root"], h
    assert h["eff"] != CAP_NET_BIND_SERVICE, h     # uid 0 of the test namespace keeps its capabilities


def _slirp4netns_hardening(cmd: list[str], filters: int) -> dict:
    t = Target()
    s = Slirpy("--enable-sandbox", "--enable-seccomp", str(t.pid), "tap0", cmd=cmd)
    try:
        assert s.wait_ready() == b"1", s.output()
        filters_loaded(s.proc.pid, filters)
        return hardening_of(s.proc.pid)
    finally:
        s.stop()
        t.kill()


@pytest.mark.skipif(REAL_S4N is None, reason="slirp4netns is not installed (helpers/setup-host installs it)")
def test_enable_sandbox_and_seccomp_match_the_real_slirp4netns():
    ours = _slirp4netns_hardening([sys.executable, "-m", "slirpy", "slirp4netns"], OUR_FILTERS)
    theirs = _slirp4netns_hardening([REAL_S4N], S4N_FILTERS)
    assert theirs["root"] == ["etc", "run"] and theirs["eff"] == CAP_NET_BIND_SERVICE, theirs
    assert ours == theirs


def test_enable_sandbox_alone_has_no_filter_and_seccomp_alone_keeps_the_mounts(target, slirpy):
    s = slirpy("--enable-sandbox", str(target.pid), "tap0")
    assert s.wait_ready() == b"1", s.output()
    h = wait_for(lambda: (lambda h: h if h["root"] == ["etc", "run"] else None)(hardening_of(s.proc.pid)),
                 "the new root")
    assert h["seccomp"] == "0" and h["nnp"] == "1" and h["eff"] == CAP_NET_BIND_SERVICE, h
    s2 = slirpy("--enable-seccomp", str(target.pid), "tap1")
    assert s2.wait_ready() == b"1", s2.output()
    filters_loaded(s2.proc.pid, OUR_FILTERS)
    h2 = hardening_of(s2.proc.pid)
    assert h2["seccomp"] == "2", h2
    assert "usr" in h2["root"] and h2["nnp"] == "1", h2
    for proc in (s, s2):
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.wait() == 0
        assert "no effect yet" not in proc.proc.stderr.read()


# ------------------------------------------------------------------ a forbidden call

def test_forbidden_call_ends_slirpy_run_with_one_clear_line(runs):
    r = runs(env={"SLIRPY_TEST_FORBIDDEN_CALL": "0.5"})
    code, _, err = r.finish(timeout=30)
    assert code == 159, (code, err)
    assert "slirpy: seccomp: forbidden system call execve (59)" in err, err


def test_forbidden_call_ends_slirp4netns_mode_with_enable_seccomp():
    t = Target()
    s = Slirpy("--enable-seccomp", str(t.pid), "tap0", wrap=["env", "SLIRPY_TEST_FORBIDDEN_CALL=0.5"])
    try:
        assert s.wait_ready() == b"1", s.output()
        assert s.wait() == 159
        assert "forbidden system call execve" in s.proc.stderr.read()
    finally:
        s.stop()
        t.kill()


# ------------------------------------------------------------------ what keeps working

def test_api_socket_stats_and_stats_file_work_hardened(runs, tmp_path):
    api = tmp_path / "api.sock"
    stats = tmp_path / "stats.json"
    r = runs("--api-socket", str(api), "--stats-file", str(stats))
    h = r.serving()
    assert h["root"] == ["etc", "run", "tmp"], h          # + the API socket's directory
    res = subprocess.run([sys.executable, "-m", "slirpy", "port", "add", "--api-socket", str(api),
                          "18080:80"], capture_output=True, text=True, cwd=REPO, timeout=TIMEOUT)
    assert res.returncode == 0, res
    res = subprocess.run([sys.executable, "-m", "slirpy", "stats", "--api-socket", str(api), "--json"],
                         capture_output=True, text=True, cwd=REPO, timeout=TIMEOUT)
    assert res.returncode == 0, res
    snap = json.loads(res.stdout)
    assert isinstance(snap.get("fds"), int) and snap["fds"] > 3, snap
    code, _, err = r.finish(signal.SIGTERM)
    assert not api.exists(), "the API socket was not removed at exit"
    assert "counters" in json.loads(stats.read_text()), err



def test_stats_file_and_api_socket_straight_in_tmp(runs):
    """`--stats-file /tmp/x` keeps /tmp itself, where the new root used to be built: the kept
    /tmp was then the scratch tmpfs, read-only at the end (EROFS writing the stats at exit)."""
    name = f"/tmp/slirpy-harden-{os.getpid()}-{time.monotonic_ns()}"
    api, stats = Path(name + ".sock"), Path(name + ".json")
    try:
        r = runs("--api-socket", str(api), "--stats-file", str(stats))
        assert "tmp" in r.serving()["root"]
        code, _, err = r.finish(signal.SIGTERM)
        assert "Traceback" not in err and "Read-only" not in err, err
        assert not api.exists(), "the API socket was not removed at exit"
        assert "counters" in json.loads(stats.read_text()), err
    finally:
        for p in (api, stats):
            p.unlink(missing_ok=True)

GUEST = r"""
import socket, sys
out = []
for fam, addr, port in ((socket.AF_INET, sys.argv[1], int(sys.argv[2])),
                        (socket.AF_INET6, sys.argv[3], int(sys.argv[4]))):
    t = socket.socket(fam); t.settimeout(10); t.connect((addr, port))
    t.sendall(b"t" * 200000); t.shutdown(socket.SHUT_WR); n = 0
    while (b := t.recv(65536)): n += len(b)
    u = socket.socket(fam, socket.SOCK_DGRAM); u.settimeout(10); u.sendto(b"u" * 1200, (addr, port))
    out.append(f"{n}/{len(u.recv(2000))}")
print("TCPUDP=" + ",".join(out), flush=True)
"""


def _echo_servers(addr: str, fam: int) -> int:
    """A TCP and a UDP echo server on addr, same port number (threads, one exchange each)."""
    import socket
    import threading
    t = socket.socket(fam)
    t.bind((addr, 0))
    t.listen()
    u = socket.socket(fam, socket.SOCK_DGRAM)
    u.bind((addr, t.getsockname()[1]))

    def tcp() -> None:
        c, _ = t.accept()
        while (b := c.recv(65536)):
            c.sendall(b)
        c.close()
        t.close()

    def udp() -> None:
        data, peer = u.recvfrom(2000)
        u.sendto(data, peer)
        u.close()
    for fn in (tcp, udp):
        threading.Thread(target=fn, daemon=True).start()
    return t.getsockname()[1]


def test_tcp_udp_ping_both_families_and_dns_work_hardened(tmp_path):
    import socket

    from tests.netns.test_dns_e2e import DnsServer
    dns = DnsServer(HOST_ADDR, ident="192.0.2.7")
    port4 = _echo_servers(HOST_ADDR, socket.AF_INET)
    port6 = _echo_servers(HOST6_ADDR, socket.AF_INET6)
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {HOST_ADDR}\n")
    script = (f"ping -c1 -W5 {HOST_ADDR} >/dev/null && echo PING4=ok; "
              f"ping -6 -c1 -W5 {HOST6_ADDR} >/dev/null && echo PING6=ok; "
              "echo DNS=$(dig +short +time=3 which.test) TCPDNS=$(dig +short +tcp +time=3 which.test); "
              f"{sys.executable} -c '{GUEST}' {HOST_ADDR} {port4} {HOST6_ADDR} {port6}")
    try:
        res = subprocess.run(slirpy_argv("--resolv-conf", str(resolv)) + ["sh", "-c", script],
                             capture_output=True, text=True, timeout=TIMEOUT, cwd=REPO,
                             stdin=subprocess.DEVNULL)
    finally:
        dns.close()
    assert res.returncode == 0, (res.stdout, res.stderr)
    assert "PING4=ok" in res.stdout and "PING6=ok" in res.stdout, res.stdout
    assert "DNS=192.0.2.7 TCPDNS=192.0.2.7" in res.stdout, res.stdout
    assert "TCPUDP=200000/1200,200000/1200" in res.stdout, res.stdout


def test_pcap_start_over_the_api_writes_beside_the_socket_and_refuses_elsewhere(runs, tmp_path):
    """The hardened process opens the file itself: the API socket's directory is the one
    writable place it sees (README "Hardening")."""
    api = tmp_path / "api.sock"
    r = runs("--api-socket", str(api))
    r.serving()

    def pcap(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "slirpy", "pcap", *args, "--api-socket", str(api)],
                              capture_output=True, text=True, cwd=REPO, timeout=TIMEOUT)
    ok = pcap("start", str(tmp_path / "c.pcap"))
    assert ok.returncode == 0, ok
    assert pcap("stop").returncode == 0
    assert (tmp_path / "c.pcap").read_bytes()[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    elsewhere = REPO / "perf" / "results" / "hd-never-written.pcap"
    bad = pcap("start", str(elsewhere))
    assert bad.returncode != 0 and "No such file or directory" in bad.stderr, bad
    assert not elsewhere.exists()
    code, _, err = r.finish(signal.SIGTERM)
    assert "forbidden" not in err, err


def test_where_hardening_fails_slirpy_run_refuses_and_no_sandbox_runs(tmp_path):
    """An /etc without ld.so.cache and libseccomp's file emptied (/dev/null bind-mounted over
    the real ones, in a mount namespace of the test's own): libseccomp can be neither found nor
    loaded, so hardening cannot be done. slirpy run says so in one line and serves nothing;
    --no-sandbox runs the command."""
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "resolv.conf").write_text("nameserver 192.0.2.1\n")
    libs = sorted({os.path.realpath(p) for pattern in ("/usr/lib/*/libseccomp.so.2*", "/lib/*/libseccomp.so.2*",
                                                        "/usr/lib/libseccomp.so.2*", "/lib/libseccomp.so.2*")
                   for p in glob.glob(pattern)})
    assert libs, "libseccomp is not installed (helpers/setup-host installs it)"
    emptied = "".join(f"mount --bind /dev/null {lib} && " for lib in libs)

    def run(*options: str) -> subprocess.CompletedProcess:
        inner = " ".join(slirpy_argv(*options) + ["echo", "ran"])
        return subprocess.run(["unshare", "-m", "sh", "-c", f"mount --bind {etc} /etc && {emptied}exec {inner}"],
                              capture_output=True, text=True, cwd=REPO, timeout=TIMEOUT,
                              stdin=subprocess.DEVNULL)
    refused = run()
    assert refused.returncode == 1 and "ran" not in refused.stdout, refused
    assert refused.stderr.startswith("slirpy: cannot harden the network process: "), refused.stderr
    assert "--no-sandbox runs without" in refused.stderr and "Traceback" not in refused.stderr
    plain = run("--no-sandbox")
    assert plain.returncode == 0 and plain.stdout == "ran\n", plain
