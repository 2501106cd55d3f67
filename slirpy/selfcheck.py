"""`slirpy selfcheck`: a self-contained end-to-end check that needs no internet.

The host side listens on 127.0.0.1 (an ephemeral port). A sandbox, started with
host-loopback access, connects through its gateway address 10.0.2.2 twice: once to download
`size` bytes and once to upload them. Both sides hash what they saw; the check passes when the
sha256 digests match both ways, and prints the throughput it measured.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .config import NetConfig

_CHUNK = 1 << 20

# Runs inside the sandbox with the same interpreter; writes "down <n> <sha> <secs>" and
# "up <n> <sha> <secs>" to the report file named in argv.
_CLIENT = r"""
import hashlib, socket, sys, time
gw, port, size, report = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
out = open(report, "w")
chunk = bytes(range(256)) * 4096
s = socket.create_connection((gw, port), timeout=60)
s.sendall(b"D")
h = hashlib.sha256(); n = 0; t0 = time.monotonic()
while True:
    b = s.recv(1 << 20)
    if not b:
        break
    h.update(b); n += len(b)
print("down", n, h.hexdigest(), time.monotonic() - t0, file=out, flush=True)
s.close()
s = socket.create_connection((gw, port), timeout=60)
s.sendall(b"U")
t0 = time.monotonic(); left = size
while left:
    k = min(left, len(chunk)); s.sendall(chunk[:k]); left -= k
s.shutdown(socket.SHUT_WR)
reply = s.recv(200).decode()
print("up", reply, time.monotonic() - t0, file=out, flush=True)
"""


def _payload(size: int) -> Iterator[bytes]:
    chunk = bytes(range(256)) * 4096
    left = size
    while left:
        k = min(left, len(chunk))
        yield chunk[:k]
        left -= k


def _expected_digest(size: int) -> str:
    h = hashlib.sha256()
    for piece in _payload(size):
        h.update(piece)
    return h.hexdigest()


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, size: int) -> None:
    try:
        mode = await reader.readexactly(1)
        if mode == b"D":
            for piece in _payload(size):
                writer.write(piece)
                await writer.drain()
        elif mode == b"U":
            h = hashlib.sha256()
            n = 0
            while True:
                b = await reader.read(_CHUNK)
                if not b:
                    break
                h.update(b)
                n += len(b)
            writer.write(f"{n} {h.hexdigest()}".encode())
            await writer.drain()
    finally:
        writer.close()


def run_selfcheck(config: NetConfig, size: int) -> int:
    from .launch import run_sandbox

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    expected = _expected_digest(size)

    async def setup() -> None:
        await asyncio.start_server(lambda r, w: _serve(r, w, size), sock=listener)

    fd, report_path = tempfile.mkstemp(prefix="slirpy-selfcheck-", suffix=".txt")
    os.close(fd)
    argv = [sys.executable, "-c", _CLIENT, str(config.gateway), str(port), str(size), report_path]
    print(f"slirpy selfcheck: moving {size >> 20} MiB each way between host 127.0.0.1:{port} "
          f"and a sandbox (MTU {config.mtu}, offload {'on' if config.offload else 'off'})", flush=True)
    t0 = time.monotonic()
    try:
        code = run_sandbox(config, argv, setup=setup)
        with open(report_path) as f:
            report = f.read()
    finally:
        os.unlink(report_path)
    listener.close()
    elapsed = time.monotonic() - t0
    ok = code == 0
    lines = dict((ln.split(" ", 1)[0], ln.split(" ")[1:]) for ln in report.splitlines() if " " in ln)
    down = lines.get("down")
    up = lines.get("up")
    if down is None or up is None:
        print(f"slirpy selfcheck: FAILED: sandbox client exited {code}; output: {report.strip()!r}")
        return 1
    down_ok = int(down[0]) == size and down[1] == expected
    up_ok = int(up[0]) == size and up[1] == expected
    print(f"  host -> sandbox: {down[0]} bytes, sha256 {'OK' if down_ok else 'MISMATCH'}, "
          f"{size * 8 / 1e9 / float(down[2]):.2f} Gbit/s")
    print(f"  sandbox -> host: {up[0]} bytes, sha256 {'OK' if up_ok else 'MISMATCH'}, "
          f"{size * 8 / 1e9 / float(up[2]):.2f} Gbit/s")
    ok = ok and down_ok and up_ok
    print(f"slirpy selfcheck: {'OK' if ok else 'FAILED'} ({elapsed:.1f} s)")
    return 0 if ok else 1
