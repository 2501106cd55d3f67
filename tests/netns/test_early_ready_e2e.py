"""Start-up (issue 18): the ready fd is written, and `slirpy run` starts its command (hardened
or not; without -p, --pcap or --api-socket), as soon as tap0 is configured, before the serving
process has imported its event loop (or hardened itself). What the guest sends in between waits
in tap0's queue: nothing may be lost.

The guest here is already running and waiting when the network becomes ready, so it sends within
a millisecond of the ready fd, while slirpy is still importing: a TCP upload of 1 MB (sha256
checked by the host side) and a UDP datagram answered by the host.
"""

from __future__ import annotations

import hashlib
import os
import select
import socket
import subprocess
import sys
import threading

import pytest

from tests.netns.util import HOST_ADDR, REPO

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_stray_processes")]

SIZE = 1 << 20
# The guest: wait for a line on stdin (slirp4netns mode) unless told not to, then at once a UDP
# datagram and a TCP upload; print what came back.
GUEST = r"""
import hashlib, socket, sys
host, tcp_port, udp_port, size, wait = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
if wait == "1":
    sys.stdin.readline()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(20)
u.sendto(b"early-udp", (host, udp_port))
t = socket.create_connection((host, tcp_port), timeout=20)
data = bytes(i % 251 for i in range(size))
t.sendall(data)
t.shutdown(socket.SHUT_WR)
reply = t.recv(100)
print("udp", u.recv(100).decode(), "tcp", reply.decode(), hashlib.sha256(data).hexdigest(), flush=True)
"""


class HostSide:
    """A TCP sink that answers with the sha256 of what it got, and a UDP echo, on HOST_ADDR."""

    def __init__(self) -> None:
        self.tcp = socket.create_server((HOST_ADDR, 0))
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((HOST_ADDR, 0))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def ports(self) -> tuple[int, int]:
        return self.tcp.getsockname()[1], self.udp.getsockname()[1]

    def _serve(self) -> None:
        got_udp = False
        self.tcp.settimeout(60)
        r, _, _ = select.select([self.udp], [], [], 60)
        if r:
            msg, peer = self.udp.recvfrom(100)
            self.udp.sendto(msg, peer)
            got_udp = True
        conn, _ = self.tcp.accept()
        with conn:
            h = hashlib.sha256()
            while chunk := conn.recv(65536):
                h.update(chunk)
            conn.sendall(h.hexdigest().encode() if got_udp else b"no-udp")

    def close(self) -> None:
        self.tcp.close()
        self.udp.close()


def check(out: str) -> None:
    words = out.split()
    assert words[:2] == ["udp", "early-udp"], out
    assert words[2] == "tcp" and words[3] == words[4], out       # the host's sha256 is the guest's


def test_guest_sends_the_moment_the_ready_fd_is_written():
    host = HostSide()
    tcp_port, udp_port = host.ports()
    guest = subprocess.Popen(["unshare", "-Urn", sys.executable, "-c", GUEST, HOST_ADDR, str(tcp_port),
                              str(udp_port), str(SIZE), "1"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    ready_r, ready_w = os.pipe()
    net = None
    try:
        # wait until unshare has made the namespace
        mine = os.readlink("/proc/self/ns/net")
        for _ in range(500):
            if os.readlink(f"/proc/{guest.pid}/ns/net") != mine:
                break
            select.select([], [], [], 0.02)
        net = subprocess.Popen([sys.executable, "-m", "slirpy", "slirp4netns", "-c", "-r", str(ready_w),
                                str(guest.pid), "tap0"], pass_fds=(ready_w,), cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        os.close(ready_w)
        ready_w = -1
        assert select.select([ready_r], [], [], 60)[0], "no ready fd"
        assert os.read(ready_r, 1) == b"1"
        assert guest.stdin is not None
        guest.stdin.write("go\n")
        guest.stdin.flush()
        out, _ = guest.communicate(timeout=60)
        check(out)
    finally:
        if ready_w >= 0:
            os.close(ready_w)
        os.close(ready_r)
        if guest.poll() is None:
            guest.kill()
            guest.wait()
        if net is not None:
            net.terminate()
            net.wait(30)
        host.close()


@pytest.mark.parametrize("options", [["--no-sandbox"], []], ids=["no-sandbox", "hardened"])
def test_slirpy_run_command_sends_at_once(options):
    """Hardened too: the command is released before the serving process hardens itself, which
    reads no frame before that (its datagram and upload wait in tap0's queue)."""
    host = HostSide()
    tcp_port, udp_port = host.ports()
    try:
        res = subprocess.run([sys.executable, "-m", "slirpy", "run", *options, "--", sys.executable,
                              "-c", GUEST, HOST_ADDR, str(tcp_port), str(udp_port), str(SIZE), "0"],
                             capture_output=True, text=True, timeout=120, cwd=REPO, stdin=subprocess.DEVNULL)
        assert res.returncode == 0, res.stderr
        check(res.stdout)
    finally:
        host.close()


def test_the_neighbour_queue_holds_a_start_up_burst():
    """What a command sends before slirpy serves waits for the gateway's ARP (NDP) answer in
    the guest kernel's neighbour queue, whose oldest frames are dropped past its limit: raised
    to 4 MiB on tap0 for both families (netconf.set_unres_qlen)."""
    res = subprocess.run([sys.executable, "-m", "slirpy", "run", "--", "cat",
                          "/proc/sys/net/ipv4/neigh/tap0/unres_qlen_bytes",
                          "/proc/sys/net/ipv6/neigh/tap0/unres_qlen_bytes"],
                         capture_output=True, text=True, timeout=60, cwd=REPO, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [str(4 << 20)] * 2, res.stdout
