"""slirpy.registry: state directories, the lock, sandbox records and their clean-up."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time

import pytest

from slirpy import registry
from slirpy.registry import BadName, NameTaken, RegistryError, SandboxRecord


@pytest.fixture(autouse=True)
def private_dirs(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    return run


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_runtime_dir_is_under_xdg_and_0700(private_dirs):
    path = registry.runtime_dir()
    assert path == str(private_dirs / "slirpy")
    assert os.stat(path).st_mode & 0o777 == 0o700


@pytest.fixture
def tmpdir_env(monkeypatch, tmp_path):
    """$TMPDIR pointed at a fresh directory: the fallback never touches the machine's /tmp
    (where another user's /tmp/slirpy-0 may sit: it is refused, as it should be)."""
    import tempfile
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)          # gettempdir() reads TMPDIR again
    return tmp_path


def test_runtime_dir_without_xdg_is_per_uid_in_tmp(monkeypatch, tmpdir_env):
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert registry.runtime_dir() == str(tmpdir_env / f"slirpy-{os.geteuid()}")


def test_unusable_xdg_runtime_dir_falls_back(monkeypatch, tmp_path, tmpdir_env):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "missing"))
    assert registry.runtime_dir() == str(tmpdir_env / f"slirpy-{os.geteuid()}")


def test_runtime_dir_with_a_wrong_mode_is_refused(private_dirs):
    (private_dirs / "slirpy").mkdir(mode=0o755)
    os.chmod(private_dirs / "slirpy", 0o755)
    with pytest.raises(RegistryError, match="mode 755, not 700"):
        registry.runtime_dir()


def test_runtime_dir_that_is_a_symlink_is_refused(private_dirs, tmp_path):
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    os.symlink(tmp_path / "elsewhere", private_dirs / "slirpy")
    with pytest.raises(RegistryError, match="not a directory"):
        registry.runtime_dir()


def test_data_dir_is_created_0700(tmp_path):
    path = registry.data_dir()
    assert path == str(tmp_path / "data" / "slirpy")
    assert os.stat(path).st_mode & 0o777 == 0o700


def test_register_fills_start_time_and_lookup_finds_it():
    rec = registry.register(SandboxRecord(name="web", pid=os.getpid(), mode="none"))
    assert rec.start_time == registry.proc_start_time(os.getpid()) > 0
    found = registry.lookup("web")
    assert found is not None and found.mode == "none" and found.pid == os.getpid()
    with open(registry.record_path("web")) as f:
        assert json.load(f)["name"] == "web"
    assert os.stat(registry.record_path("web")).st_mode & 0o777 == 0o600


def test_a_live_name_is_taken():
    registry.register(SandboxRecord(name="db", pid=os.getpid()))
    with pytest.raises(NameTaken, match="'db' is already used"):
        registry.register(SandboxRecord(name="db", pid=os.getppid()))


def test_a_dead_records_name_can_be_taken_again():
    pid = dead_pid()
    registry.register(SandboxRecord(name="db", pid=pid, start_time=12345))
    registry.register(SandboxRecord(name="db", pid=os.getpid()))
    found = registry.lookup("db")
    assert found is not None and found.pid == os.getpid()


def test_pid_reuse_is_detected_by_start_time():
    # our own pid, but another start time: the record is someone else's, long gone
    registry.register(SandboxRecord(name="old", pid=os.getpid(), start_time=1))
    assert registry.lookup("old") is None
    assert not os.path.exists(registry.record_path("old"))


def test_live_drops_dead_and_corrupt_records_and_their_sockets():
    registry.register(SandboxRecord(name="alive", pid=os.getpid()))
    registry.register(SandboxRecord(name="gone", pid=dead_pid(), start_time=7))
    sock = registry.default_api_socket("gone")
    open(sock, "w").close()
    with open(registry.record_path("junk"), "w") as f:
        f.write("{not json")
    assert [r.name for r in registry.live()] == ["alive"]
    assert sorted(os.listdir(registry.sandboxes_dir())) == ["alive.json", "alive.lock"]


def test_live_is_oldest_first():
    registry.register(SandboxRecord(name="b", pid=os.getpid(), created=2.0))
    registry.register(SandboxRecord(name="a", pid=os.getpid(), created=3.0))
    registry.register(SandboxRecord(name="c", pid=os.getpid(), created=1.0))
    assert [r.name for r in registry.live()] == ["c", "b", "a"]


def test_update_only_by_the_owner():
    registry.register(SandboxRecord(name="w", pid=os.getpid()))
    assert registry.update("w", os.getpid(), ns_pid=99, ports=["8080:80/tcp"])
    assert not registry.update("w", os.getpid() + 1, ns_pid=1)
    assert not registry.update("missing", os.getpid(), ns_pid=1)
    rec = registry.lookup("w")
    assert rec is not None and rec.ns_pid == 99 and rec.ports == ["8080:80/tcp"]
    with pytest.raises(TypeError):
        registry.update("w", os.getpid(), pid=1)


def test_unregister_only_by_the_owner():
    registry.register(SandboxRecord(name="w", pid=os.getpid()))
    assert not registry.unregister("w", os.getpid() + 1)
    assert registry.lookup("w") is not None
    assert registry.unregister("w", os.getpid())
    assert registry.lookup("w") is None
    assert not registry.unregister("w", os.getpid())


def test_unknown_fields_in_a_record_are_ignored():
    with open(registry.record_path("x"), "w") as f:
        json.dump({"name": "x", "pid": os.getpid(), "start_time": registry.proc_start_time(os.getpid()),
                   "from_the_future": 1}, f)
    rec = registry.lookup("x")
    assert rec is not None and rec.name == "x"


@pytest.mark.parametrize("name", ["", "-x", ".x", "a b", "a/b", "x" * 64, "é"])
def test_bad_names_are_refused(name):
    with pytest.raises(BadName, match="invalid sandbox name"):
        registry.register(SandboxRecord(name=name, pid=os.getpid()))


@pytest.mark.parametrize("name", ["a", "web-1", "db_2", "x.y", "9" * 63])
def test_good_names(name):
    assert registry.check_name(name) == name


def test_auto_names_are_unique_among_live_ones():
    names = set()
    for _ in range(40):
        name = registry.auto_name()
        assert name not in names
        registry.check_name(name)
        registry.register(SandboxRecord(name=name, pid=os.getpid()))
        names.add(name)
    assert {r.name for r in registry.live()} == names


def test_proc_start_time_of_a_process_whose_name_has_a_parenthesis(tmp_path):
    exe = tmp_path / "a) b"
    os.symlink("/bin/sleep", exe)
    p = subprocess.Popen([str(exe), "30"])
    try:
        for _ in range(200):
            with open(f"/proc/{p.pid}/stat", "rb") as f:
                if b"a) b" in f.read():
                    break
            time.sleep(0.01)
        assert registry.proc_start_time(p.pid) is not None
        assert registry.proc_start_time(p.pid) >= registry.proc_start_time(os.getpid())
    finally:
        p.kill()
        p.wait()
    assert registry.proc_start_time(p.pid) is None


def test_state_lock_is_reentrant_in_one_process():
    with registry.state_lock():
        with registry.state_lock():
            registry.register(SandboxRecord(name="in", pid=os.getpid()))
    assert registry.lookup("in") is not None


def _hold_lock(ready, release) -> None:
    with registry.state_lock():
        ready.set()
        release.wait(30)


def test_state_lock_excludes_another_process():
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(ready, release))
    proc.start()
    try:
        assert ready.wait(30)
        import fcntl
        fd = os.open(os.path.join(registry.runtime_dir(), "lock"), os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            release.set()
            proc.join(30)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)    # free once the holder left
        finally:
            os.close(fd)
    finally:
        release.set()
        proc.join(30)


def test_a_record_from_another_pid_namespace_lives_while_its_lock_is_held():
    # `slirpy ps` inside a sandbox (its own PID namespace, the same runtime dir) must not take
    # the outer runs for dead: their pids mean nothing there; their NAME.lock tells
    rec = registry.register(SandboxRecord(name="here", pid=os.getpid()))
    assert rec.pidns == os.readlink("/proc/self/ns/pid")
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_register_elsewhere, args=(ready, release))
    proc.start()
    try:
        assert ready.wait(30)
        assert registry.lookup("outer") is not None          # pid 1 of "pid:[1]": locked, alive
        assert "outer" in [r.name for r in registry.live()]
        with pytest.raises(NameTaken):
            registry.register(SandboxRecord(name="outer", pid=os.getpid()))
    finally:
        release.set()
        proc.join(30)
    assert registry.lookup("outer") is None                   # its process ended: lock free, dead
    assert not os.path.exists(os.path.join(registry.sandboxes_dir(), "outer.lock"))


def test_a_foreign_record_without_a_lock_file_counts_as_alive():
    registry.register(SandboxRecord(name="old", pid=dead_pid(), start_time=5, pidns="pid:[1]"))
    assert [r.name for r in registry.live()] == ["old"]


def _register_elsewhere(ready, release) -> None:
    # as a process of another PID namespace would: a pid that is not ours, its lock held
    rec = registry.register(SandboxRecord(name="outer", pid=os.getpid(), pidns="pid:[1]"))
    rec.pid = 1
    registry._write(rec)
    ready.set()
    release.wait(30)
