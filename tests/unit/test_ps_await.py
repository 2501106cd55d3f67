"""ps.await_api_socket: `slirpy port add NAME` right after a named run started waits for its
default API socket (bound once the serving process's loop runs) while that process lives."""

from __future__ import annotations

import socket
import threading
import time

from slirpy import ps, registry


def record(path: str) -> registry.SandboxRecord:
    return registry.SandboxRecord(name="app", pid=1, api_socket=path)


def test_waits_for_the_socket_of_a_live_sandbox(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "is_alive", lambda rec: True)
    path = tmp_path / "app.sock"
    server = socket.socket(socket.AF_UNIX)
    bind = threading.Timer(0.1, lambda: server.bind(str(path)))
    start = time.monotonic()
    bind.start()
    try:
        ps.await_api_socket(record(str(path)), timeout=10)
        waited = time.monotonic() - start
    finally:
        bind.cancel()
        server.close()
    assert path.exists() and 0.05 < waited < 5


def test_returns_at_once_when_the_sandbox_is_gone_or_the_socket_is_there(tmp_path, monkeypatch):
    path = tmp_path / "app.sock"
    monkeypatch.setattr(registry, "is_alive", lambda rec: False)
    start = time.monotonic()
    ps.await_api_socket(record(str(path)), timeout=10)
    assert time.monotonic() - start < 1 and not path.exists()
    monkeypatch.setattr(registry, "is_alive", lambda rec: True)
    path.write_text("")
    start = time.monotonic()
    ps.await_api_socket(record(str(path)), timeout=10)
    assert time.monotonic() - start < 1


def test_gives_up_after_the_timeout(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "is_alive", lambda rec: True)
    start = time.monotonic()
    ps.await_api_socket(record(str(tmp_path / "never.sock")), timeout=0.1)
    assert 0.1 <= time.monotonic() - start < 5
