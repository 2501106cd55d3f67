"""Every `slirpy run` has a name (issue 15): `slirpy ps`, a taken name, the stale record of a run
killed with SIGKILL, `port add|ls|rm NAME`, `stats NAME`, the hostname, /etc/hosts and --dns."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from tests.netns.util import REPO, kill_session, run_slirpy, slirpy_argv

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_stray_processes")]

PY = sys.executable


@pytest.fixture(autouse=True)
def runtime_dir(monkeypatch):
    """A runtime directory of this test's own (short: the API sockets live in it)."""
    path = tempfile.mkdtemp(prefix="rt", dir=os.environ.get("TMPDIR"))
    os.chmod(path, 0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", path)
    return os.path.join(path, "slirpy")


def slirpy(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run([PY, "-m", "slirpy", *args], capture_output=True, text=True, cwd=REPO, timeout=60)
    if check:
        assert r.returncode == 0, f"slirpy {' '.join(args)}: {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def ps() -> list[dict]:
    return json.loads(slirpy("ps", "--json").stdout)


def start(options: list[str], cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(slirpy_argv(*options) + cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=REPO)


def wait_started(name: str, proc: subprocess.Popen, timeout: float = 60.0) -> dict:
    """The ps row of `name` once its sandbox is up (its supervisor's pid is recorded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"slirpy run --name {name} ended: {proc.returncode} {proc.stderr.read()}")
        for row in ps():
            if row["name"] == name and row["ns_pid"]:
                return row
        time.sleep(0.1)
    raise AssertionError(f"{name} never appeared in `slirpy ps`: {ps()}")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        kill_session(proc)
        proc.wait()


def test_ps_lists_plain_and_named_runs_and_forgets_them_when_they_end(runtime_dir):
    named = start(["--name", "web", "-p", "127.0.0.1::80"], ["sleep", "60"])
    plain = start([], ["sleep", "60"])
    try:
        web = wait_started("web", named)
        deadline = time.monotonic() + 60
        while len(rows := ps()) < 2 or not all(r["ns_pid"] for r in rows):
            assert time.monotonic() < deadline, rows
            time.sleep(0.1)
        other = next(r for r in rows if r["name"] != "web")
        assert other["pid"] == plain.pid and web["pid"] == named.pid
        assert other["mode"] == web["mode"] == "private"
        assert "_" in other["name"] and other["hostname"] == other["name"]
        # each plain run serves its API at <runtime_dir>/sandboxes/NAME.sock
        assert web["api_socket"] == os.path.join(runtime_dir, "sandboxes", "web.sock")
        assert os.path.exists(web["api_socket"])
        assert [p["guest_port"] for p in web["ports"]] == [80] and web["ports"][0]["host_port"] > 0
        table = slirpy("ps").stdout.splitlines()
        assert table[0].split()[:3] == ["NAME", "PID", "MODE"]
        line = next(l for l in table if l.startswith("web "))
        assert str(named.pid) in line and "private" in line and "->80/tcp" in line and "running" in line
    finally:
        stop(named)
        stop(plain)
    assert ps() == []
    assert os.listdir(os.path.join(runtime_dir, "sandboxes")) == []


@pytest.mark.parametrize("hardening", [[], ["--no-sandbox"]])
def test_a_run_that_ends_removes_its_own_record_socket_and_lock(runtime_dir, hardening):
    # no `ps` in between (it would clean a stale record): the run itself must leave nothing,
    # hardened (its runtime directory is out of its sight by then) or not
    r = slirpy("run", "--name", "tidy", *hardening, "--", "true")
    assert r.returncode == 0, r.stderr
    assert os.listdir(os.path.join(runtime_dir, "sandboxes")) == []


def test_a_taken_name_is_exit_1_with_one_line_and_the_command_does_not_run(tmp_path):
    first = start(["--name", "db"], ["sleep", "60"])
    try:
        wait_started("db", first)
        marker = tmp_path / "ran"
        r = run_slirpy(["--name", "db"], ["touch", str(marker)], timeout=60)
        assert r.returncode == 1, r.describe()
        lines = [l for l in r.stderr.splitlines() if l.strip()]
        assert len(lines) == 1 and "'db' is already used" in lines[0], r.describe()
        assert not marker.exists()
        assert [row["pid"] for row in ps()] == [first.pid]
    finally:
        stop(first)


@pytest.mark.parametrize("name", ["-x", "a/b", "x" * 64, "a b"])
def test_a_bad_name_is_exit_2_with_one_line(name):
    r = run_slirpy(["--name", name], ["true"], timeout=60)
    assert r.returncode == 2, r.describe()
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "invalid sandbox name" in lines[0] and repr(name) in lines[0], r.describe()


def test_sigkill_leaves_a_stale_record_that_the_next_ps_cleans(runtime_dir):
    proc = start(["--name", "victim"], ["sleep", "60"])
    wait_started("victim", proc)
    os.killpg(proc.pid, signal.SIGKILL)        # slirpy and the sandbox: no chance to unregister
    proc.wait()
    record = os.path.join(runtime_dir, "sandboxes", "victim.json")
    assert os.path.exists(record)               # stale: nobody removed it
    assert ps() == []                            # ...until someone reads the records
    assert not os.path.exists(record)
    assert not os.path.exists(os.path.join(runtime_dir, "sandboxes", "victim.sock"))
    r = run_slirpy(["--name", "victim"], ["true"], timeout=60)    # and the name is free again
    assert r.returncode == 0, r.describe()


def _fetch(port: int, timeout: float = 30.0) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                data = s.makefile("rb").read()
            if data:
                return data
        except OSError:
            pass
        assert time.monotonic() < deadline, f"nothing served on 127.0.0.1:{port}"
        time.sleep(0.2)


def test_port_add_ls_rm_and_stats_by_name():
    server = ("import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
              "s.bind(('0.0.0.0', 80)); s.listen(8)\n"
              "while True:\n c, _ = s.accept(); c.sendall(socket.gethostname().encode()); c.close()")
    proc = start(["--name", "app"], [PY, "-c", server])
    try:
        wait_started("app", proc)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        fid = slirpy("port", "add", "app", f"127.0.0.1:{port}:80").stdout.strip()
        assert fid.isdigit()
        assert _fetch(port) == b"app"                  # the hostname inside is the sandbox's name
        entries = json.loads(slirpy("port", "ls", "--name", "app", "--json").stdout)
        assert [(e["host_port"], e["guest_port"]) for e in entries] == [(port, 80)]
        row = next(r for r in ps() if r["name"] == "app")
        assert [(p["host_port"], p["guest_port"]) for p in row["ports"]] == [(port, 80)]
        counters = json.loads(slirpy("stats", "app", "--json").stdout)
        assert counters["counters"]        # the sandbox's own counters, by name
        slirpy("port", "rm", "app", fid)
        assert json.loads(slirpy("port", "ls", "app", "--json").stdout) == []
        assert next(r for r in ps() if r["name"] == "app")["ports"] == []
        r = slirpy("port", "ls", "nosuch", check=False)
        assert r.returncode == 1 and "no running sandbox named 'nosuch'" in r.stderr
        r = slirpy("stats", check=False)
        assert r.returncode == 2 and "which sandbox?" in r.stderr
    finally:
        stop(proc)


def test_hostname_etc_hosts_add_host_and_dns():
    script = "hostname; echo ---; cat /etc/hosts; echo ---; cat /etc/resolv.conf; echo ---; for n in box db; do echo $n $(getent hosts $n); done"
    r = run_slirpy(["--name", "n1", "--hostname", "box", "--add-host", "db:10.1.2.3",
                    "--add-host", "v6:fd00::42", "--dns", "192.0.2.53"], ["sh", "-c", script], timeout=60)
    assert r.returncode == 0, r.describe()
    hostname, hosts, resolv, getent = r.stdout.split("---\n")
    assert hostname.strip() == "box"
    lines = [l.split() for l in hosts.splitlines() if l and not l.startswith("#")]
    assert ["127.0.0.1", "localhost"] in lines
    assert ["10.0.2.100", "n1", "box"] in lines and ["fd00::100", "n1", "box"] in lines
    assert ["10.1.2.3", "db"] in lines and ["fd00::42", "v6"] in lines
    assert [l for l in resolv.splitlines() if l.startswith("nameserver")] == ["nameserver 192.0.2.53"]
    got = {l.split()[0]: l.split()[1] for l in getent.splitlines()}      # the resolver reads the file
    assert got["box"] in ("10.0.2.100", "fd00::100") and got["db"] == "10.1.2.3", getent


def test_default_run_resolv_conf_is_unchanged_and_the_host_keeps_its_hostname():
    before = socket.gethostname()
    r = run_slirpy([], ["sh", "-c", "hostname; cat /etc/resolv.conf"], timeout=60)
    assert r.returncode == 0, r.describe()
    name, *resolv = r.stdout.splitlines()
    assert name != before and "_" in name
    assert [l for l in resolv if l.startswith("nameserver")] == ["nameserver 10.0.2.3", "nameserver fd00::3"]
    assert socket.gethostname() == before


@pytest.mark.parametrize("option,value,word", [
    ("--hostname", "bad host", "--hostname"), ("--add-host", "nocolon", "--add-host"),
    ("--add-host", "db:999.1.1.1", "999.1.1.1"), ("--dns", "resolver", "--dns"),
])
def test_bad_naming_options_are_exit_2_with_one_line(option, value, word):
    r = run_slirpy([option, value], ["true"], timeout=60)
    assert r.returncode == 2, r.describe()
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and word in lines[0], r.describe()
