"""RootlessKit drives slirpy unmodified: `--net=slirp4netns --slirp4netns-binary=slirpy-slirp4netns`.

Runs in the machine's own network namespace (see conftest.py): the sandbox talks only to
servers on host 127.0.0.1, through the gateway 10.0.2.2 (RootlessKit does not pass
--disable-host-loopback unless asked, so slirp4netns's default applies: the gateway reaches
host loopback), and the published port listens on host 127.0.0.1 only.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.hostns.conftest import guard_script
from slirpy.slirp4netns import api_available
from tests.netns.util import UTIL, HostServer, expected

ROOTLESSKIT = shutil.which("rootlesskit")
SCRIPT = Path(sys.executable).parent / "slirpy-slirp4netns"
TIMEOUT = 120.0

pytestmark = pytest.mark.skipif(ROOTLESSKIT is None, reason="rootlesskit is not installed (helpers/setup-host)")


@pytest.fixture(autouse=True)
def _entry_point_installed():
    if not SCRIPT.exists():
        pytest.fail(f"{SCRIPT} is missing: reinstall slirpy (pip install -e .) so that the "
                    "slirpy-slirp4netns console script exists", pytrace=False)


class UdpEcho:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.seen = 0
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(65535)
            except OSError:
                return
            self.seen += 1
            self.sock.sendto(data[::-1], peer)

    def close(self) -> None:
        self.sock.close()


def rootlesskit(options: list[str], script: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    # --debug: RootlessKit logs the slirp4netns binary's stdout, so we can see it ran slirpy.
    cmd = [ROOTLESSKIT, "--debug", "--net=slirp4netns", f"--slirp4netns-binary={SCRIPT}", *options,
           "--", "sh", "-c", guard_script(script)]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"rootlesskit did not finish in {timeout}s: {e.stdout}\n{e.stderr}") from None


UDP_CLIENT = """
import json, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
got = []
for i in range(5):
    s.sendto(b"ping-%d" % i, ("10.0.2.2", int(sys.argv[1])))
    got.append(s.recvfrom(100)[0].decode())
print(json.dumps(got))
"""


# RootlessKit passes --enable-sandbox / --enable-seccomp only when asked (its default is false):
# slirpy then hardens itself without capabilities, in a user namespace of its own.
HARDENING = pytest.mark.parametrize("hardening", [
    [], ["--slirp4netns-sandbox=true", "--slirp4netns-seccomp=true"]], ids=["plain", "sandbox+seccomp"])


@HARDENING
def test_rootlesskit_slirp4netns_reaches_host_loopback_tcp_and_udp(hardening):
    size = 4 << 20
    tcp = HostServer("source", "127.0.0.1", size=size, seed=11)
    udp = UdpEcho()
    try:
        ops = json.dumps([{"op": "download", "host": "10.0.2.2", "port": tcp.port}])
        script = (f"ip -o -4 addr show dev tap0 && "
                  f"{sys.executable} {UTIL} '{ops}' && "
                  f"{sys.executable} -c '{UDP_CLIENT}' {udp.port}")
        if hardening:
            script += (" && for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f | grep -q -- "
                       "'slirpy-slirp4netn[s] .*--enable-seccomp' && grep -E '^(Seccomp|NoNewPrivs|CapEff):' ${f%cmdline}status; done; true")
        res = rootlesskit(["--port-driver=none", *hardening], script)
        assert res.returncode == 0, f"exit {res.returncode}\n{res.stdout}\n{res.stderr}"
        assert "Starting slirpy (slirp4netns mode)" in res.stderr, res.stderr
        lines = res.stdout.splitlines()
        if hardening:       # the last lines: slirpy's own status, read by the guest (same PID namespace)
            status = dict(l.split(":", 1) for l in lines[3:] if ":" in l)
            assert status.get("Seccomp", "").strip() == "2", res.stdout
            assert status.get("NoNewPrivs", "").strip() == "1", res.stdout
            assert status.get("CapEff", "").strip() == "0000000000000400", res.stdout
        assert "inet 10.0.2.100/24" in lines[0], res.stdout
        assert json.loads(lines[1]) == [{"len": size, "sha": expected(size, 11)}], res.stdout
        assert json.loads(lines[2]) == [f"{i}-gnip" for i in range(5)], res.stdout
        assert udp.seen == 5
        [conn] = tcp.wait_results(1)
        assert conn.peer[0] == "127.0.0.1"
    finally:
        tcp.close()
        udp.close()


GUEST_SERVER = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", PORT)); s.listen(1)
print("listening", flush=True)
c, peer = s.accept()
c.sendall(("hello from the sandbox; you are %s" % peer[0]).encode()); c.close()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not api_available(), reason="the port-forwarding API (slirpy/api.py) has not landed yet")
@HARDENING
def test_rootlesskit_published_port_serves_the_host(hardening):
    port = _free_port()
    script = f"{sys.executable} -c '{GUEST_SERVER.replace('PORT', str(port))}'"
    cmd = [ROOTLESSKIT, "--net=slirp4netns", f"--slirp4netns-binary={SCRIPT}", "--port-driver=slirp4netns",
           *hardening, "-p", f"127.0.0.1:{port}:{port}/tcp", "--", "sh", "-c", guard_script(script)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout.readline().strip() == "listening", proc.stderr.read()
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
                    data = b""
                    while chunk := c.recv(4096):
                        data += chunk
                if data:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "published port never answered"
            time.sleep(0.2)
        assert data.startswith(b"hello from the sandbox; you are "), data
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
