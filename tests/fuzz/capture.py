"""Capture real frames for the fuzz corpora: ``helpers/testns python -m tests.fuzz.capture``.

Runs a real sandbox (slirpy's runtime, the guest's own kernel) whose command pings the
gateway, asks the DNS address a question, downloads and uploads a few hundred KB from a
server on 203.0.113.1 (inside the test namespace: never the real network) and knocks on a
closed port. Every frame crossing the TAP, both directions, is recorded; a small selection of
distinct frames (and their protocol layers) is written to tests/fuzz/corpus/<harness>/.
Deterministic file names (sha1 of the content): re-running adds, never duplicates.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import sys
import threading
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"
HOST = "203.0.113.1"

GUEST_SCRIPT = r"""
import socket, sys, os
host, port, closed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((host, port), timeout=10)
s.sendall(b"GET / HTTP/1.0\r\n\r\n")
n = 0
while (b := s.recv(65536)):
    n += len(b)
s.close()
s = socket.create_connection((host, port), timeout=10)
s.sendall(b"PUT " + os.urandom(300_000))
s.shutdown(socket.SHUT_WR)
s.recv(100)
s.close()
for p in (closed,):
    try:
        socket.create_connection((host, p), timeout=3).close()
    except OSError:
        pass
try:
    socket.create_connection(("10.0.2.2", 1), timeout=3).close()
except OSError:
    pass
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(bytes.fromhex("abcd01000001000000000000076578616d706c6503636f6d0000010001"), ("10.0.2.3", 53))
print("guest done", n)
"""


def serve(listener: socket.socket) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            first = conn.recv(4)
            if first == b"GET ":
                conn.recv(1000)
                conn.sendall(os.urandom(300_000))
            else:
                while conn.recv(65536):
                    pass
                conn.sendall(b"ok")


class Recorder:
    """Wraps the runtime's stack and keeps every frame (bytes) in both directions."""

    def __init__(self, stack):
        self._stack = stack
        self.rx: list[bytes] = []
        self.tx: list[bytes] = []

    def __getattr__(self, name):
        return getattr(self._stack, name)

    def receive_frame(self, frame, now):
        self.rx.append(bytes(frame))
        self._stack.receive_frame(frame, now)

    def frames_to_send(self, now):
        frames = self._stack.frames_to_send(now)
        for f in frames:
            self.tx.append(f if type(f) is bytes else b"".join(bytes(p) for p in f))
        return frames


def capture(offload: bool, mtu: int) -> Recorder:
    import uvloop

    from slirpy.config import NetConfig
    from slirpy.runtime import Runtime, serve_sandbox
    from slirpy.sandbox import Sandbox, SandboxOptions

    listener = socket.create_server((HOST, 0))
    closed = socket.create_server((HOST, 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    threading.Thread(target=serve, args=(listener,), daemon=True).start()
    config = NetConfig(mtu=mtu, offload=offload)
    cmd = ["/bin/sh", "-c",
           "ping -c 2 -W 1 10.0.2.2 >/dev/null 2>&1; "
           f"{sys.executable} -c '{GUEST_SCRIPT}' {HOST} {listener.getsockname()[1]} {closed_port}"]
    sandbox = Sandbox.start(SandboxOptions(argv=cmd, net=config))
    runtime = Runtime(config, sandbox.tap_fd, vnet_hdr=sandbox.vnet_hdr, offload=sandbox.offload)
    rec = Recorder(runtime.stack)
    runtime.stack = rec
    code = uvloop.run(serve_sandbox(runtime, sandbox))
    listener.close()
    print(f"capture offload={offload} mtu={mtu}: exit {code}, {len(rec.rx)} frames in, "
          f"{len(rec.tx)} out", file=sys.stderr)
    rec.vnet = sandbox.vnet_hdr
    return rec


def layers(frame: bytes, vnet: bool) -> dict[str, bytes]:
    """The frame cut into what each harness takes."""
    out = {}
    if vnet:
        out["virtio"] = frame[:12]
        out["stack"] = frame
        frame = frame[12:]
    out["eth_arp"] = frame
    if len(frame) >= 34 and frame[12:14] == b"\x08\x00":
        ip = frame[14:]
        out["ipv4"] = ip
        hlen = (ip[0] & 15) * 4
        total = int.from_bytes(ip[2:4], "big")
        l4 = ip[hlen:total]
        name = {1: "icmp", 6: "tcp", 17: "udp"}.get(ip[9])
        if name:
            out[name] = l4
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-kind", type=int, default=24, help="files per harness per run at most")
    ap.add_argument("--max-size", type=int, default=2048, help="larger frames are skipped")
    args = ap.parse_args()
    written = {}
    for offload, mtu in ((True, 1500), (False, 1500)):
        rec = capture(offload, mtu)
        seen_shapes = set()
        for direction, frames in (("in", rec.rx), ("out", rec.tx)):
            big = 0
            for frame in frames:
                kinds = layers(frame, rec.vnet)
                if len(frame) > args.max_size:
                    # keep the virtio header of GSO super-frames, and one whole super-frame
                    # per direction for the stack harness
                    kinds = {k: v for k, v in kinds.items()
                             if k == "virtio" or (k == "stack" and big < 1 and len(frame) < 70_000)}
                    big += "stack" in kinds
                for harness, data in kinds.items():
                    # one file per distinct "shape": harness, direction, size, leading header bytes
                    shape = (harness, direction, len(data), data[:2], frame[12 + 14 + 9:12 + 14 + 10],
                             frame[-1:] if harness == "virtio" else b"")
                    if shape in seen_shapes or written.get(harness, 0) >= args.per_kind * 2:
                        continue
                    seen_shapes.add(shape)
                    d = CORPUS / harness
                    d.mkdir(parents=True, exist_ok=True)
                    p = d / (hashlib.sha1(data).hexdigest()[:16] + ".bin")
                    if not p.exists():
                        p.write_bytes(data)
                        written[harness] = written.get(harness, 0) + 1
    print("written:", written, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
