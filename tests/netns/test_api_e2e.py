"""The API socket end to end: slirp4netns's protocol against a running sandbox, the
`slirpy port` client, add/remove at run time, and the same requests answered byte for byte
as the real slirp4netns answers them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from slirpy import api
from tests.netns.test_ports_e2e import guest_server_argv, sandbox, tcp_exchange  # noqa: F401
from tests.netns.util import HOST_ADDR, HOST_ADDR2, REPO


def raw_request(path: str, text: str) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(text.encode())
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def port_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slirpy", "port", *args], capture_output=True,
                          text=True, timeout=30, cwd=REPO)


# The same conversation for both implementations: requests whose replies must be identical.
CONVERSATION = [
    '{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "0.0.0.0", "host_port": 18180, '
    '"guest_addr": "10.0.2.100", "guest_port": 80}}',
    '{"execute": "add_hostfwd", "arguments": {"proto": "udp", "host_port": 18181, "guest_port": 81}}',
    '{"execute": "add_hostfwd", "arguments": {"proto": "sctp", "host_port": 18182, "guest_port": 80}}',
    '{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "bogus", "host_port": 18182, '
    '"guest_port": 80}}',
    '{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 0, "guest_port": 80}}',
    '{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 18182, "guest_addr": "x", '
    '"guest_port": 80}}',
    '{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 18182, "guest_port": 0}}',
    '{"execute": "list_hostfwd"}',
    '{"execute": "remove_hostfwd", "arguments": {"id": 1}}',
    '{"execute": "remove_hostfwd", "arguments": {"id": 1}}',
    '{"execute": "remove_hostfwd"}',
    '{"execute": "list_hostfwd"}',
    '{"execute": "frob"}',
    '{"exec": "frob"}',
    '[1,2]',
    'garbage',
    '',
    '{"execute": "list_hostfwd"} trailing',
]


def _slirp4netns_replies(tmp_path) -> list[bytes]:
    path = str(tmp_path / "s4.sock")
    target = subprocess.Popen(["unshare", "--user", "--map-root-user", "--net", "sleep", "60"])
    s4 = None
    try:
        deadline = time.monotonic() + 10
        own = os.readlink("/proc/self/ns/net")
        while os.readlink(f"/proc/{target.pid}/ns/net") == own:     # unshare has not run yet
            assert time.monotonic() < deadline, "unshare did not make its namespace"
            time.sleep(0.02)
        s4 = subprocess.Popen(["slirp4netns", "--configure", "--api-socket", path, str(target.pid), "tap0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not os.path.exists(path):
            assert time.monotonic() < deadline, "slirp4netns did not create its API socket"
            time.sleep(0.05)
        return [raw_request(path, text) for text in CONVERSATION]
    finally:
        for p in (s4, target):
            if p is not None:
                p.kill()
                p.wait()


def test_replies_are_byte_identical_to_slirp4netns(tmp_path, sandbox):  # noqa: F811
    expected = _slirp4netns_replies(tmp_path)
    path = str(tmp_path / "slirpy.sock")
    sandbox(["--api-socket", path], guest_server_argv(tcp=[80]))
    ours = [raw_request(path, text) for text in CONVERSATION]
    for text, mine, theirs in zip(CONVERSATION, ours, expected):
        assert mine == theirs, f"request {text!r}"


def test_add_and_remove_at_run_time_keep_existing_connections(tmp_path, sandbox):  # noqa: F811
    path = str(tmp_path / "api.sock")
    sandbox(["--api-socket", path], guest_server_argv(tcp=[80], udp=[53]))
    # nothing published yet
    with pytest.raises(ConnectionRefusedError):
        tcp_exchange((HOST_ADDR, 18190), b"")
    r = port_cli("add", "--api-socket", path, f"{HOST_ADDR}:18190:80", "18191:53/udp")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "2"]
    me, line, rest = tcp_exchange((HOST_ADDR, 18190), b"after add", src=HOST_ADDR2)
    assert line == f"{me[0]} {me[1]}" and rest == b"after add"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.settimeout(10)
        u.bind((HOST_ADDR2, 0))
        u.sendto(b"udp", (HOST_ADDR, 18191))
        assert u.recv(100) == f"{HOST_ADDR2} {u.getsockname()[1]} udp".encode()
    r = port_cli("ls", "--api-socket", path)
    assert r.returncode == 0 and f"{HOST_ADDR}:18190" in r.stdout and "10.0.2.100:53" in r.stdout, r.stdout
    # an open connection survives the removal of its forward; new ones are refused
    live = socket.create_connection((HOST_ADDR, 18190), timeout=10)
    live.settimeout(10)
    first = live.recv(100)
    assert first.endswith(b"\n")
    r = port_cli("rm", "--api-socket", path, "1")
    assert r.returncode == 0, r.stderr
    with pytest.raises(ConnectionRefusedError):
        tcp_exchange((HOST_ADDR, 18190), b"")
    live.sendall(b"still here")
    live.shutdown(socket.SHUT_WR)
    got = b""
    while chunk := live.recv(100):
        got += chunk
    live.close()
    assert got == b"still here"
    assert api.request(path, {"execute": "list_hostfwd"}) == {"entries": [
        {"id": 2, "proto": "udp", "host_addr": "0.0.0.0", "host_port": 18191, "guest_addr": "10.0.2.100",
         "guest_port": 53}]}
    # the port is free again for anyone
    with socket.socket() as s:
        s.bind((HOST_ADDR, 18190))


def test_run_time_errors_are_api_errors(tmp_path, sandbox):  # noqa: F811
    path = str(tmp_path / "api.sock")
    sandbox(["--api-socket", path, "-p", "18195:80"], guest_server_argv(tcp=[80]))
    # -p forwards are listed with ids from 1
    assert api.request(path, {"execute": "list_hostfwd"})["entries"][0]["id"] == 1
    with socket.socket() as busy:
        busy.bind((HOST_ADDR, 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = port_cli("add", "--api-socket", path, f"{HOST_ADDR}:{port}:80")
    assert r.returncode == 1 and f"{HOST_ADDR}:{port}/tcp" in r.stderr and "already in use" in r.stderr
    reply = api.request(path, {"execute": "add_hostfwd", "arguments": {
        "proto": "tcp", "host_port": 18195, "guest_port": 81}})
    assert reply["error"]["desc"].startswith("bad request: add_hostfwd: ") and "18195" in reply["error"]["desc"]
    r = port_cli("rm", "--api-socket", path, "42")
    assert r.returncode == 1 and "bad arguments.id" in r.stderr
    r = port_cli("add", "--api-socket", path, "80")
    assert r.returncode == 2 and "needs a host port" in r.stderr
    r = port_cli("ls", "--api-socket", str(tmp_path / "missing.sock"))
    assert r.returncode == 1 and "missing.sock" in r.stderr


def test_guest_addr_picks_the_family_clients_reach_the_sandbox_over(tmp_path, sandbox):  # noqa: F811
    path = str(tmp_path / "api.sock")
    sandbox(["--api-socket", path], guest_server_argv(tcp=[80], host=None))

    def add(host_addr, host_port, guest_addr=None):
        args = {"proto": "tcp", "host_addr": host_addr, "host_port": host_port, "guest_port": 80}
        if guest_addr is not None:
            args["guest_addr"] = guest_addr
        return api.request(path, {"execute": "add_hostfwd", "arguments": args})

    assert add(HOST_ADDR, 18196, "fd00::100") == {"return": {"id": 1}}     # an extension
    assert add("::1", 18197, "10.0.2.100") == {"return": {"id": 2}}        # slirp4netns's way
    assert add("::1", 18198) == {"return": {"id": 3}}                      # the client's family
    assert add("::1", 18199, "fd00::5") == {
        "error": {"desc": "bad request: add_hostfwd: bad arguments.guest_addr"}}
    # an IPv4 client reaches the sandbox's IPv6 address from the IPv6 gateway, and the other
    # way round; without guest_addr an IPv6 client stays IPv6
    _, line, _ = tcp_exchange((HOST_ADDR, 18196), b"", src=HOST_ADDR2)
    assert line.split()[0] == "fd00::2", line
    _, line, _ = tcp_exchange(("::1", 18197), b"")
    assert line.split()[0] in ("10.0.2.2", "::ffff:10.0.2.2"), line
    _, line, _ = tcp_exchange(("::1", 18198), b"")
    assert line.split()[0] == "fd00::2", line
    entries = api.request(path, {"execute": "list_hostfwd"})["entries"]
    assert [(e["host_addr"], e["guest_addr"]) for e in entries] == [
        (HOST_ADDR, "fd00::100"), ("::1", "10.0.2.100"), ("::1", "fd00::100")]
    r = port_cli("ls", "--api-socket", path)
    assert "[fd00::100]:80" in r.stdout and "[::1]:18198" in r.stdout, r.stdout
