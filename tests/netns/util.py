"""Shared helpers for the netns end-to-end tests.

Two halves live here, so that both sides of a transfer use the very same data generator:

- host side (imported by the tests): `HostServer` threads bound in the outer test namespace
  (helpers/testns), `run_slirpy()` with a hard timeout, `pattern()`/`expected()` for
  deterministic payloads, process-table snapshots for stray-process checks;
- guest side (``python util.py '<json ops>'`` run inside ``slirpy run``): a list of client
  operations executed in order, one JSON line of results printed on stdout.

This module must import nothing from pytest or slirpy: it also runs inside the sandbox.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

UTIL = Path(__file__).resolve()
REPO = UTIL.parent.parent.parent

HOST_ADDR = "203.0.113.1"      # "the internet" as seen from the sandbox: lives on lo in testns
HOST_ADDR2 = "198.51.100.1"
GUEST_ADDR = "10.0.2.100"
GATEWAY_ADDR = "10.0.2.2"
DNS_ADDR = "10.0.2.3"

# IPv6 (issue 16): helpers/testns gives lo 2001:db8::1/64 and 2001:db8:1::1/64; the sandbox
# network is fd00::/64 in slirp4netns's layout.
HOST6_ADDR = "2001:db8::1"
HOST6_ADDR2 = "2001:db8:1::1"
GUEST6_ADDR = "fd00::100"
GATEWAY6_ADDR = "fd00::2"
DNS6_ADDR = "fd00::3"

CHUNK = 1 << 20
DEFAULT_TIMEOUT = 120.0


# --------------------------------------------------------------------------- payloads

def pattern(size: int, seed: int):
    """Deterministic pseudo-random bytes, yielded in chunks of at most 1 MiB."""
    rng = random.Random(seed)
    left = size
    while left > 0:
        n = min(CHUNK, left)
        yield rng.randbytes(n)
        left -= n


@functools.lru_cache(maxsize=None)
def expected(size: int, seed: int) -> str:
    h = hashlib.sha256()
    for chunk in pattern(size, seed):
        h.update(chunk)
    return h.hexdigest()


def _errname(e: OSError) -> str:
    return errno.errorcode.get(e.errno, str(e.errno)) if e.errno is not None else type(e).__name__


# --------------------------------------------------------------------------- host servers

@dataclass
class ConnResult:
    peer: tuple
    received: int = 0
    sha: str = ""
    error: str | None = None


class HostServer:
    """A TCP server thread in the outer namespace, one behaviour per server.

    modes:
      sink     read to EOF; reply with one JSON line {"len", "sha"} and then `reply_size`
               pattern bytes (seed `seed`); close.  (client half-closes and still receives)
      source   send `size` pattern bytes (seed `seed`), then close.
      first    send `size` pattern bytes, shut down our write side FIRST, then read the
               client's data to EOF and record it.  (server closes first, still receives)
      echo     echo everything; shut down write on EOF.
      answer   read one request (one recv), send `size` pattern bytes and close, the answer
               and the FIN in one segment (TCP_CORK). (an HTTP `Connection: close` server)
    Every accepted connection appends a ConnResult to `results` when it is done.
    """

    def __init__(self, mode: str, addr: str = HOST_ADDR, *, size: int = 0, seed: int = 0,
                 reply_size: int = 0, port: int = 0, io_timeout: float = DEFAULT_TIMEOUT):
        self.mode = mode
        self.io_timeout = io_timeout     # longest wait for one socket operation
        self.size = size
        self.seed = seed
        self.reply_size = reply_size
        self.results: list[ConnResult] = []
        self.accepted = 0
        self._cond = threading.Condition()
        self._sock = socket.socket(family_of(addr), socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((addr, port))
        self._sock.listen(1024)
        self.addr, self.port = self._sock.getsockname()[:2]
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True,
                                          name=f"HostServer-{mode}-{self.port}")
        self._acceptor.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, peer = self._sock.accept()
            except OSError:
                return
            with self._cond:
                self.accepted += 1
            t = threading.Thread(target=self._serve, args=(conn, peer), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, conn: socket.socket, peer) -> None:
        res = ConnResult(peer=peer)
        try:
            with conn:
                conn.settimeout(self.io_timeout)
                getattr(self, "_mode_" + self.mode)(conn, res)
        except OSError as e:
            res.error = _errname(e)
        with self._cond:
            self.results.append(res)
            self._cond.notify_all()

    @staticmethod
    def _read_to_eof(conn: socket.socket, res: ConnResult) -> None:
        h = hashlib.sha256()
        buf = bytearray(256 * 1024)
        while True:
            n = conn.recv_into(buf)
            if n == 0:
                break
            res.received += n
            h.update(memoryview(buf)[:n])
        res.sha = h.hexdigest()

    def _mode_sink(self, conn, res) -> None:
        self._read_to_eof(conn, res)
        conn.sendall(json.dumps({"len": res.received, "sha": res.sha}).encode() + b"\n")
        for chunk in pattern(self.reply_size, self.seed):
            conn.sendall(chunk)

    def _mode_source(self, conn, res) -> None:
        for chunk in pattern(self.size, self.seed):
            conn.sendall(chunk)

    def _mode_first(self, conn, res) -> None:
        for chunk in pattern(self.size, self.seed):
            conn.sendall(chunk)
        conn.shutdown(socket.SHUT_WR)
        self._read_to_eof(conn, res)

    def _mode_answer(self, conn, res) -> None:
        res.received = len(conn.recv(64 * 1024))
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        for chunk in pattern(self.size, self.seed):
            conn.sendall(chunk)

    def _mode_echo(self, conn, res) -> None:
        h = hashlib.sha256()
        buf = bytearray(256 * 1024)
        while True:
            n = conn.recv_into(buf)
            if n == 0:
                break
            res.received += n
            h.update(memoryview(buf)[:n])
            conn.sendall(memoryview(buf)[:n])
        res.sha = h.hexdigest()
        conn.shutdown(socket.SHUT_WR)

    def wait_results(self, n: int, timeout: float = 30.0) -> list[ConnResult]:
        """Wait until `n` connections have finished; return their results."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.results) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{self.mode} server on {self.addr}:{self.port}: {len(self.results)} of "
                        f"{n} connections finished within {timeout}s (accepted {self.accepted})")
                self._cond.wait(left)
            return list(self.results)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
            self._acceptor.join(5)


def unused_port(addr: str = HOST_ADDR) -> socket.socket:
    """A socket bound (not listening) to a free port: connections to it are refused, and no
    one else can take the port while the socket lives."""
    s = socket.socket(family_of(addr), socket.SOCK_STREAM)
    s.bind((addr, 0))
    return s


def family_of(addr: str) -> socket.AddressFamily:
    """AF_INET6 for an IPv6 address text, else AF_INET."""
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def add_lo_address(addr: str) -> None:
    """Give lo one more address (an IPv6 one without DAD), if it does not have it yet.
    Only inside helpers/testns, which is ours to change."""
    with socket.socket(family_of(addr), socket.SOCK_DGRAM) as s:
        try:
            s.bind((addr, 0))
            return
        except OSError:
            pass
    prefix = "/128" if ":" in addr else "/32"
    extra = ["nodad"] if ":" in addr else []
    subprocess.run(["ip", "addr", "add", addr + prefix, "dev", "lo", *extra], check=True,
                   capture_output=True)


def read_counters(path) -> dict[str, int]:
    """The counters of a `--stats-file` (written when slirpy exits)."""
    with open(path) as f:
        return json.load(f)["counters"]


# --------------------------------------------------------------------------- running slirpy

@dataclass
class SlirpyResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    elapsed: float

    def describe(self) -> str:
        return (f"command: {' '.join(self.args)}\nexit code: {self.returncode}\n"
                f"--- stdout ---\n{self.stdout[-4000:]}\n--- stderr ---\n{self.stderr[-4000:]}")

    def guest_results(self) -> list[dict]:
        """The JSON line the guest side of this module printed last."""
        assert self.returncode == 0, "guest run failed\n" + self.describe()
        lines = [l for l in self.stdout.splitlines() if l.startswith("[")]
        assert lines, "guest printed no results\n" + self.describe()
        return json.loads(lines[-1])


def slirpy_argv(*options: str) -> list[str]:
    return [sys.executable, "-m", "slirpy", "run", *options, "--"]


def guest_argv(ops: list[dict]) -> list[str]:
    return [sys.executable, str(UTIL), json.dumps(ops)]


def run_slirpy(options: list[str] | tuple[str, ...], cmd: list[str], *,
               timeout: float = DEFAULT_TIMEOUT, input: str | None = None) -> SlirpyResult:
    """Run `slirpy run OPTIONS -- CMD` to completion; kill its whole session on timeout."""
    args = slirpy_argv(*options) + list(cmd)
    t0 = time.monotonic()
    proc = subprocess.Popen(args, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, cwd=REPO)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_session(proc)
        out, err = proc.communicate()
        raise AssertionError(f"slirpy did not finish within {timeout}s\n"
                             + SlirpyResult(args, proc.returncode, out, err, timeout).describe())
    return SlirpyResult(args, proc.returncode, out, err, time.monotonic() - t0)


def run_guest(options, ops: list[dict], *, timeout: float = DEFAULT_TIMEOUT) -> list[dict]:
    return run_slirpy(options, guest_argv(ops), timeout=timeout).guest_results()


def kill_session(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# --------------------------------------------------------------------------- processes

def process_table() -> dict[int, tuple[str, str]]:
    """pid -> (state, cmdline) for every process visible in /proc (testns has its own)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        state = stat[stat.rfind(")") + 2:].split()[0]
        table[pid] = (state, cmdline)
    return table


def stray_processes(before: dict[int, tuple[str, str]], grace: float = 3.0) -> dict[int, tuple[str, str]]:
    """Processes that did not exist in `before` and are still alive (not zombies) after
    `grace` seconds of polling."""
    deadline = time.monotonic() + grace
    while True:
        me = os.getpid()
        new = {pid: v for pid, v in process_table().items()
               if pid not in before and pid != me and v[0] not in ("Z", "X")}
        if not new or time.monotonic() >= deadline:
            return new
        time.sleep(0.05)


def find_process(marker: str, timeout: float = 20.0) -> int:
    """The pid of the live process whose command line contains `marker` and that is not
    slirpy itself (slirpy's own argv contains the command too)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid, (state, cmdline) in process_table().items():
            if (marker in cmdline and "-m slirpy" not in cmdline and "slirpy run" not in cmdline
                    and state not in ("Z", "X") and pid != os.getpid()):
                return pid
        time.sleep(0.05)
    raise AssertionError(f"no process with {marker!r} in its command line after {timeout}s")


# --------------------------------------------------------------------------- guest side

def _connect(host: str, port: int, timeout: float, io_timeout: float = DEFAULT_TIMEOUT) -> socket.socket:
    s = socket.create_connection((host, port), timeout=timeout)
    s.settimeout(io_timeout)
    return s


def _recv_all(s: socket.socket) -> tuple[int, str, bytes]:
    """Read to EOF; returns (length, sha256 of everything, first line if any)."""
    h = hashlib.sha256()
    total = 0
    head = b""
    buf = bytearray(256 * 1024)
    while True:
        n = s.recv_into(buf)
        if n == 0:
            return total, h.hexdigest(), head
        if len(head) < 4096:
            head += bytes(buf[:min(n, 4096)])
        total += n
        h.update(memoryview(buf)[:n])


def guest_upload(host, port, size, seed, reply_size=0, reply_seed=0, connect_timeout=10.0,
                 io_timeout=DEFAULT_TIMEOUT):
    """Send `size` pattern bytes, shut down write, read the sink's reply to EOF."""
    with _connect(host, port, connect_timeout, io_timeout) as s:
        for chunk in pattern(size, seed):
            s.sendall(chunk)
        s.shutdown(socket.SHUT_WR)
        # The reply is one JSON line followed by reply_size bytes.
        data_hash = hashlib.sha256()
        line = b""
        got = 0
        buf = bytearray(256 * 1024)
        while True:
            n = s.recv_into(buf)
            if n == 0:
                break
            view = memoryview(buf)[:n]
            if b"\n" not in line:
                line += bytes(view)
                if b"\n" in line:
                    line, rest = line.split(b"\n", 1)
                    line += b"\n"
                    data_hash.update(rest)
                    got += len(rest)
                continue
            data_hash.update(view)
            got += n
        reply = json.loads(line) if line.endswith(b"\n") else None
        return {"sent": size, "server": reply, "reply_len": got, "reply_sha": data_hash.hexdigest()}


def guest_download(host, port, connect_timeout=10.0, io_timeout=DEFAULT_TIMEOUT):
    with _connect(host, port, connect_timeout, io_timeout) as s:
        n, sha, _ = _recv_all(s)
        return {"len": n, "sha": sha}


def guest_first(host, port, size, seed, connect_timeout=10.0):
    """Against a `first` server: read its data to EOF, then upload ours and close."""
    with _connect(host, port, connect_timeout) as s:
        n, sha, _ = _recv_all(s)
        for chunk in pattern(size, seed):
            s.sendall(chunk)
        s.shutdown(socket.SHUT_WR)
        # Both directions are closed now; wait for the server's full close so that it has
        # read everything before we exit (a late RST would be a bug, so report it).
        try:
            tail = s.recv(1)
        except OSError as e:
            return {"len": n, "sha": sha, "sent": size, "after_close": _errname(e)}
        return {"len": n, "sha": sha, "sent": size, "after_close": len(tail)}


def guest_connect(host, port, timeout=5.0):
    """Try to connect; report the outcome and how long it took."""
    t0 = time.monotonic()
    try:
        s = socket.create_connection((host, port), timeout=timeout)
    except socket.timeout:
        return {"ok": False, "error": "timeout", "elapsed": time.monotonic() - t0}
    except OSError as e:
        return {"ok": False, "error": _errname(e), "elapsed": time.monotonic() - t0}
    s.close()
    return {"ok": True, "error": None, "elapsed": time.monotonic() - t0}


def guest_parallel_echo(host, port, count, base_size, seed):
    """`count` concurrent connections to an echo server, each with its own payload
    (sizes base_size + 997*i); every connection checks what comes back."""
    import asyncio

    async def one(i):
        size = base_size + 997 * i
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 30)

        async def send():
            for chunk in pattern(size, seed + i):
                writer.write(chunk)
                await writer.drain()
            writer.write_eof()

        sender = asyncio.create_task(send())
        h = hashlib.sha256()
        got = 0
        while True:
            data = await reader.read(256 * 1024)
            if not data:
                break
            got += len(data)
            h.update(data)
        await sender
        writer.close()
        return {"i": i, "size": size, "len": got, "ok": h.hexdigest() == expected(size, seed + i)}

    async def main():
        # Open them all before any finishes: a barrier-free gather of `count` tasks.
        results = await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
        return [r if isinstance(r, dict) else {"error": repr(r)} for r in results]

    results = asyncio.run(main())
    bad = [r for r in results if not r.get("ok")]
    return {"count": len(results), "bad": bad[:10], "nbad": len(bad),
            "bytes": sum(r.get("len", 0) for r in results)}


def guest_ifinfo(name="tap0"):
    """MTU and IPv4 address of an interface, via ioctls (no /sys needed)."""
    import fcntl
    import struct
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        ifr = struct.pack("16s16x", name.encode())
        mtu = struct.unpack_from("i", fcntl.ioctl(s, 0x8921, ifr), 16)[0]          # SIOCGIFMTU
        addr = socket.inet_ntoa(fcntl.ioctl(s, 0x8915, ifr)[20:24])                # SIOCGIFADDR
    return {"names": sorted(n for _, n in socket.if_nameindex()), "mtu": mtu, "addr": addr}


def guest_if6info(name="tap0"):
    """The IPv6 addresses of an interface (/proc/net/if_inet6: address, prefix length, scope,
    flags) and the IPv6 routes through it (/proc/net/ipv6_route), as text."""
    import ipaddress
    addrs = []
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                hexaddr, _, plen, scope, flags, dev = line.split()
                if dev == name:
                    addrs.append({"addr": str(ipaddress.IPv6Address(bytes.fromhex(hexaddr))),
                                  "plen": int(plen, 16), "scope": int(scope, 16),
                                  "tentative": bool(int(flags, 16) & 0x40)})
    except FileNotFoundError:            # IPv6 disabled in this kernel
        pass
    routes = []
    try:
        with open("/proc/net/ipv6_route") as f:
            for line in f:
                dst, dlen, _, _, gw, *_, dev = line.split()
                if dev == name:
                    routes.append({"dst": f"{ipaddress.IPv6Address(bytes.fromhex(dst))}/{int(dlen, 16)}",
                                   "via": str(ipaddress.IPv6Address(bytes.fromhex(gw)))})
    except FileNotFoundError:
        pass
    return {"addrs": addrs, "routes": routes}


def guest_udp_echo(host, port, sizes, tries=5, wait=1.0):
    """Send one datagram per size to a UDP echo server (retrying a lost one); report which came
    back byte-exact and the local address used."""
    with socket.socket(family_of(host), socket.SOCK_DGRAM) as s:
        s.connect((host, port))
        s.settimeout(wait)
        echoed = []
        for i, size in enumerate(sizes):
            data = random.Random(7000 + i).randbytes(size)
            ok = False
            for _ in range(tries):
                s.send(data)
                try:
                    while not ok:
                        ok = s.recv(70000) == data
                except socket.timeout:
                    pass
                if ok:
                    break
            echoed.append(ok)
        return {"echoed": echoed, "local": s.getsockname()[0]}


def guest_udp_refused(host, port, tries=3, wait=3.0):
    """A datagram to a port that cannot answer: the ICMP(v6) error slirpy relays shows up on
    the connected socket (ECONNREFUSED for a closed port, ENETUNREACH for no route...).
    IP(V6)_RECVERR is on, so that soft errors such as no-route are reported too."""
    family = family_of(host)
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, 25, 1)         # IPV6_RECVERR
        else:
            s.setsockopt(socket.IPPROTO_IP, 11, 1)           # IP_RECVERR
        s.connect((host, port))
        s.settimeout(wait)
        for _ in range(tries):
            try:
                s.send(b"anyone there?")
                s.recv(100)
                return {"outcome": "answered"}
            except socket.timeout:
                continue
            except OSError as e:
                return {"outcome": _errname(e)}
        return {"outcome": "timeout"}


GUEST_OPS = {
    "upload": guest_upload,
    "download": guest_download,
    "first": guest_first,
    "connect": guest_connect,
    "parallel_echo": guest_parallel_echo,
    "ifinfo": guest_ifinfo,
    "if6info": guest_if6info,
    "udp_echo": guest_udp_echo,
    "udp_refused": guest_udp_refused,
}


def guest_main(argv: list[str]) -> int:
    ops = json.loads(argv[1])
    results = []
    for op in ops:
        op = dict(op)
        fn = GUEST_OPS[op.pop("op")]
        try:
            results.append(fn(**op))
        except OSError as e:
            results.append({"exception": _errname(e), "message": str(e)})
    print(json.dumps(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(guest_main(sys.argv))


def proc_status(pid: int) -> dict[str, str]:
    """/proc/PID/status as {field: value} (Seccomp, NoNewPrivs, CapEff, ...)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out
