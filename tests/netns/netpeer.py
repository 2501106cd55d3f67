"""Both ends of the networks tests, run inside members (stdlib only; imports nothing of slirpy).

    netpeer.py serve READY_FILE          TCP 5000 sink (replies sha256 of what it got),
                                         TCP 5001 source ("SIZE SEED\\n" -> that many bytes),
                                         TCP 8000 / UDP 8001 whoami ("IP PORT" of the peer)
    netpeer.py upload HOST SIZE SEED     -> {"sent": sha, "got": sha}
    netpeer.py download HOST SIZE SEED   -> {"expected": sha, "got": sha, "bytes": n}
    netpeer.py whoami HOST PORT [udp]    -> {"reply": "IP PORT"} or {"error": "..."}
    netpeer.py try HOST PORT [udp]       -> {"result": "ok" | "refused" | "unreachable" | "prohibited" | "timeout" | ...}
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import socket
import sys
import threading

CHUNK = 1 << 20


def pattern(size: int, seed: int):
    rng = random.Random(seed)
    left = size
    while left > 0:
        n = min(CHUNK, left)
        yield rng.randbytes(n)
        left -= n


def _serve_tcp(port: int, handler) -> None:
    srv = socket.create_server(("::", port), family=socket.AF_INET6, dualstack_ipv6=True)
    while True:
        conn, peer = srv.accept()
        threading.Thread(target=handler, args=(conn, peer), daemon=True).start()


def _sink(conn: socket.socket, peer) -> None:
    h = hashlib.sha256()
    while True:
        b = conn.recv(CHUNK)
        if not b:
            break
        h.update(b)
    conn.sendall(h.hexdigest().encode())
    conn.close()


def _source(conn: socket.socket, peer) -> None:
    line = b""
    while not line.endswith(b"\n"):
        b = conn.recv(100)
        if not b:
            return
        line += b
    size, seed = map(int, line.split())
    for chunk in pattern(size, seed):
        conn.sendall(chunk)
    conn.close()


def _peer_text(peer) -> str:
    host = peer[0].removeprefix("::ffff:")
    return f"{host} {peer[1]}"


def _whoami(conn: socket.socket, peer) -> None:
    conn.sendall(_peer_text(peer).encode() + b"\n")
    conn.close()


def serve(ready: str) -> None:
    for port, handler in ((5000, _sink), (5001, _source), (8000, _whoami)):
        threading.Thread(target=_serve_tcp, args=(port, handler), daemon=True).start()
    udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    udp.bind(("::", 8001))
    with open(ready, "w") as f:
        f.write("ready")
    while True:
        _, peer = udp.recvfrom(2048)
        udp.sendto(_peer_text(peer).encode(), peer)


def _connect(host: str, port: int, timeout: float = 10.0) -> socket.socket:
    return socket.create_connection((host, port), timeout=timeout)


def upload(host: str, size: int, seed: int) -> dict:
    h = hashlib.sha256()
    with _connect(host, 5000) as s:
        s.settimeout(120)
        for chunk in pattern(size, seed):
            h.update(chunk)
            s.sendall(chunk)
        s.shutdown(socket.SHUT_WR)
        got = b""
        while True:
            b = s.recv(100)
            if not b:
                break
            got += b
    return {"sent": h.hexdigest(), "got": got.decode()}


def download(host: str, size: int, seed: int) -> dict:
    expected = hashlib.sha256()
    for chunk in pattern(size, seed):
        expected.update(chunk)
    h = hashlib.sha256()
    n = 0
    with _connect(host, 5001) as s:
        s.settimeout(120)
        s.sendall(f"{size} {seed}\n".encode())
        while True:
            b = s.recv(CHUNK)
            if not b:
                break
            h.update(b)
            n += len(b)
    return {"expected": expected.hexdigest(), "got": h.hexdigest(), "bytes": n}


def whoami(host: str, port: int, udp: bool) -> dict:
    try:
        if udp:
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            with socket.socket(fam, socket.SOCK_DGRAM) as s:
                s.settimeout(5)
                s.connect((host, port))
                s.send(b"who")
                return {"reply": s.recv(200).decode().strip()}
        with _connect(host, port, 5) as s:
            return {"reply": s.recv(200).decode().strip()}
    except OSError as e:
        return {"error": _kind(e)}


def _kind(e: OSError) -> str:
    if isinstance(e, socket.timeout):
        return "timeout"
    return {errno.ECONNREFUSED: "refused", errno.EHOSTUNREACH: "unreachable",
            errno.ENETUNREACH: "unreachable", errno.EACCES: "prohibited"}.get(e.errno or 0, f"errno {e.errno}")


def try_connect(host: str, port: int, udp: bool) -> dict:
    out = whoami(host, port, udp)
    return {"result": "ok" if "reply" in out else out["error"]}


def main(argv: list[str]) -> None:
    op = argv[0]
    if op == "serve":
        serve(argv[1])
        return
    if op == "upload":
        out = upload(argv[1], int(argv[2]), int(argv[3]))
    elif op == "download":
        out = download(argv[1], int(argv[2]), int(argv[3]))
    elif op == "whoami":
        out = whoami(argv[1], int(argv[2]), len(argv) > 3 and argv[3] == "udp")
    elif op == "try":
        out = try_connect(argv[1], int(argv[2]), len(argv) > 3 and argv[3] == "udp")
    else:
        raise SystemExit(f"unknown op {op}")
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
