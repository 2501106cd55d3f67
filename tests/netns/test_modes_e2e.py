"""`slirpy run --network none|host|sandbox:NAME` and the sandbox's `member` mode (issue 15):
which namespaces the command gets, what it can reach, and the light parent (no runtime) that
passes signals on and returns the command's exit code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

from tests.netns.util import HOST_ADDR, REPO, kill_session, run_slirpy, slirpy_argv

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_stray_processes")]

PY = sys.executable

# what the command reports: its interfaces, whether it reaches HOST_ADDR:PORT, its namespaces
PROBE = textwrap.dedent("""
    import json, os, socket, sys
    port = int(sys.argv[1])
    try:
        socket.create_connection((sys.argv[2], port), timeout=5).close()
        reach = "ok"
    except OSError as e:
        reach = os.strerror(e.errno) if e.errno else str(e)
    ns = {k: os.readlink(f"/proc/self/ns/{k}") for k in ("user", "net", "uts", "pid", "mnt")}
    print(json.dumps({"ifaces": sorted(n for _, n in socket.if_nameindex()), "reach": reach, "ns": ns,
                      "pid": os.getpid(), "uid": os.getuid(), "hostname": socket.gethostname()}))
""")


@pytest.fixture(autouse=True)
def runtime_dir(monkeypatch):
    path = tempfile.mkdtemp(prefix="rt", dir=os.environ.get("TMPDIR"))
    os.chmod(path, 0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", path)
    return path


def own_ns() -> dict[str, str]:
    return {k: os.readlink(f"/proc/self/ns/{k}") for k in ("user", "net", "uts", "pid", "mnt")}


def probe(options: list[str], port: int, addr: str = HOST_ADDR) -> dict:
    r = run_slirpy(options, [PY, "-c", PROBE, str(port), addr], timeout=60)
    assert r.returncode == 0, r.describe()
    return json.loads(r.stdout.splitlines()[-1])


def test_network_none_has_only_lo_up_and_reaches_nothing(host_server):
    srv = host_server("echo")
    got = probe(["--network", "none", "--name", "alone"], srv.port)
    assert got["ifaces"] == ["lo"]
    assert got["reach"] == "Network is unreachable"
    mine = own_ns()
    assert all(got["ns"][k] != mine[k] for k in ("user", "net", "uts", "pid", "mnt"))
    assert got["hostname"] == "alone" and got["uid"] == 0 and got["pid"] == 2
    r = run_slirpy(["--network", "none"], [PY, "-c", PROBE, "9", "127.0.0.1"], timeout=60)
    assert json.loads(r.stdout)["reach"] == "Connection refused"      # lo is up: refused, not unreachable


def test_network_host_shares_the_users_network_namespace(host_server):
    srv = host_server("echo")
    got = probe(["--network", "host"], srv.port)
    assert got["reach"] == "ok" and srv.accepted == 1
    mine = own_ns()
    assert got["ns"]["net"] == mine["net"]
    assert all(got["ns"][k] != mine[k] for k in ("user", "uts", "pid", "mnt"))
    assert "tap0" not in got["ifaces"] and got["pid"] == 2


def test_network_sandbox_name_joins_a_running_sandbox(tmp_path):
    ready = tmp_path / "ready"
    server = textwrap.dedent(f"""
        import os, socket
        s = socket.socket(); s.bind(("127.0.0.1", 7000)); s.listen(4)
        open({str(ready)!r}, "w").write(os.readlink("/proc/self/ns/net"))
        while True:
            c, _ = s.accept(); c.sendall(b"from-the-pod"); c.close()
    """)
    first = subprocess.Popen(slirpy_argv("--name", "pod") + [PY, "-c", server], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() or not ready.read_text():
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read() if first.stderr else ""
            time.sleep(0.1)
        client = ("import os, socket; print(os.readlink('/proc/self/ns/net')); "
                  "print(socket.create_connection(('127.0.0.1', 7000), timeout=5).recv(100).decode())")
        r = run_slirpy(["--network", "sandbox:pod", "--name", "side"],
                       ["sh", "-c", f"{PY} -c \"{client}\"; hostname; grep nameserver /etc/resolv.conf; "
                                    f"{PY} -m slirpy ps --json"], timeout=60)
        assert r.returncode == 0, r.describe()
        netns, reply, hostname, nameserver, *rest = r.stdout.splitlines()
        assert netns == ready.read_text() and reply == "from-the-pod"
        assert hostname == "pod"                      # the pod's UTS namespace too
        assert nameserver == "nameserver 10.0.2.3"    # and its resolv.conf
        rows = {row["name"]: row for row in json.loads(rest[-1])}
        assert rows["side"]["mode"] == "sandbox:pod"
        assert rows["side"]["api_socket"] == rows["pod"]["api_socket"]
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(30)


def test_joining_a_sandbox_that_is_not_running_is_exit_1_with_one_line():
    r = run_slirpy(["--network", "sandbox:ghost"], ["true"], timeout=60)
    assert r.returncode == 1, r.describe()
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "no running sandbox named 'ghost'" in lines[0], r.describe()


@pytest.mark.parametrize("options,word", [
    (["--network", "none", "-p", "8080:80"], "-p/--publish"),
    (["--network", "host", "--api-socket", "/tmp/x.sock"], "--api-socket"),
    (["--network", "none", "--network", "host"], "cannot be combined"),
    (["--network", "sandbox:x", "--hostname", "h"], "--hostname"),
    (["--ip", "10.89.0.5"], "--ip needs --network NAME"),
    (["--network", "sandbox:-x"], "invalid sandbox name"),
])
def test_options_a_mode_cannot_have_are_exit_2_with_one_line(options, word, tmp_path):
    marker = tmp_path / "ran"
    r = run_slirpy(options, ["touch", str(marker)], timeout=60)
    assert r.returncode == 2, r.describe()
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and word in lines[0], r.describe()
    assert not marker.exists()


def test_an_unknown_network_is_exit_1_with_one_line():
    try:
        import slirpy.networks  # noqa: F401
        pytest.skip("the networks code is here: its own tests cover unknown networks")
    except ImportError:
        pass
    r = run_slirpy(["--network", "nonet"], ["true"], timeout=60)
    assert r.returncode == 1 and r.stderr.strip() == "slirpy: unknown network nonet", r.describe()


@pytest.mark.parametrize("mode", ["none", "host"])
def test_the_light_parent_passes_signals_on_and_returns_the_exit_code(mode, tmp_path):
    ready = tmp_path / "ready"
    script = f"trap 'echo got-term; exit 7' TERM; touch {ready}; while :; do sleep 0.1; done"
    proc = subprocess.Popen(slirpy_argv("--network", mode) + ["sh", "-c", script], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            cwd=REPO)
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        cmdline = b""
        while not cmdline:                     # empty while the parent exec()s its waiter
            cmdline = open(f"/proc/{proc.pid}/cmdline", "rb").read()
            assert time.monotonic() < deadline, "the light parent's cmdline stayed empty"
        assert b"slirpy" in cmdline
        maps = open(f"/proc/{proc.pid}/maps").read()
        assert "uvloop" not in maps               # no event loop in the light parent
        proc.send_signal(signal.SIGTERM)           # to slirpy alone, not its process group
        out, err = proc.communicate(timeout=30)
    except BaseException:
        kill_session(proc)
        raise
    assert proc.returncode == 7, err
    assert out.strip() == "got-term"


MEMBER = textwrap.dedent("""
    import os, subprocess, sys
    from slirpy.config import NetConfig
    from slirpy.plainrun import run_light
    from slirpy.sandbox import SandboxError, SandboxOptions

    keeper, fail = int(sys.argv[1]), sys.argv[2] == "fail"

    def setup():
        if fail:
            raise SandboxError("the plumbing failed")
        subprocess.run(["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"], check=True)
        subprocess.run(["ip", "addr", "add", "10.89.0.2/24", "dev", "eth0"], check=True)
        subprocess.run(["ip", "link", "set", "eth0", "up"], check=True)
        return ["set-up done"]

    opts = SandboxOptions(argv=["sh", "-c", "readlink /proc/self/ns/user; ip -br -4 addr; hostname; exit 5"],
                          net=NetConfig(), net_mode="member", userns_path=f"/proc/{keeper}/ns/user",
                          hostname="m1", member_setup=setup,
                          hosts_text="127.0.0.1 localhost\\n10.89.0.2 m1\\n")
    try:
        sys.exit(run_light(opts))
    except SandboxError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
""")


@pytest.mark.parametrize("fail", [False, True])
def test_member_mode_joins_a_user_namespace_and_runs_member_setup_first(fail):
    keeper = subprocess.Popen(["unshare", "-Urn", "sleep", "60"])
    try:
        deadline = time.monotonic() + 30
        while os.readlink(f"/proc/{keeper.pid}/ns/user") == os.readlink("/proc/self/ns/user"):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        r = subprocess.run([PY, "-c", MEMBER, str(keeper.pid), "fail" if fail else "ok"], capture_output=True,
                           text=True, cwd=REPO, timeout=60)
        keeper_userns = os.readlink(f"/proc/{keeper.pid}/ns/user")
    finally:
        keeper.kill()
        keeper.wait()
    if fail:
        assert r.returncode == 1 and r.stdout == "", r
        assert r.stderr.strip() == "error: the plumbing failed", r
        return
    assert r.returncode == 5, r
    userns, *addrs, hostname = r.stdout.splitlines()
    assert userns == keeper_userns
    assert [a.split()[0] for a in addrs] == ["lo", "eth0@peer0"] and "10.89.0.2/24" in addrs[1]
    assert "127.0.0.1/8" in addrs[0]             # lo is up in the member's net namespace
    assert hostname == "m1"
    assert "slirpy: warning: set-up done" in r.stderr
