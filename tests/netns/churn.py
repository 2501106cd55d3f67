"""Short TCP connections ended every way, for the fd-leak tests (issue 13).

One small protocol, used on both sides: the client connects and sends one style byte; what
follows decides who ends the connection and how:

  client_fin  the client half-closes first; the server answers b"ok" and closes
  server_fin  the server answers b"ok" and closes first; the client reads to EOF, closes
  client_rst  the server answers b"ok"; the client aborts (SO_LINGER 0: RST)
  server_rst  the server aborts at once (RST); the client sees EOF or ECONNRESET

`serve(listener)` runs the server side (a thread per connection) and `churn(...)` the client
side with several workers at once. Each worker may keep one fixed source port and cycle
through source addresses, so that connections reuse the 4-tuple slirpy saw a moment before: the case that used to leak a host socket whenever slirpy's side of the
previous connection was still in TIME-WAIT.

Runs inside the sandbox as ``python churn.py PORT`` too (no pytest, no slirpy imports; see
main()).
"""

from __future__ import annotations

import errno
import json
import socket
import struct
import sys
import threading
import time

STYLES = ("client_fin", "server_fin", "client_rst", "server_rst")
_CODE = {s: bytes([i + 65]) for i, s in enumerate(STYLES)}
_STYLE = {v: k for k, v in _CODE.items()}
_LINGER_RST = struct.pack("ii", 1, 0)
TIMEOUT = 20.0


def _read_to_eof(s: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            d = s.recv(4096)
        except ConnectionResetError:
            return data
        if not d:
            return data
        data += d


def _abort(s: socket.socket) -> None:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    s.close()


def _serve_one(conn: socket.socket) -> None:
    try:
        conn.settimeout(TIMEOUT)
        style = _STYLE.get(conn.recv(1))
        if style == "server_rst":
            _abort(conn)
            return
        if style == "client_fin":
            _read_to_eof(conn)
            conn.sendall(b"ok")
        elif style in ("server_fin", "client_rst"):
            conn.sendall(b"ok")
            if style == "client_rst":
                _read_to_eof(conn)
        conn.close()
    except OSError:
        conn.close()


def serve(listener: socket.socket) -> threading.Thread:
    """Serve `listener` (bound and listening) until it is closed."""
    def loop():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=_serve_one, args=(conn,), daemon=True).start()
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


def _connect(dst: tuple, src: tuple | None) -> socket.socket:
    """Connect from `src` (address, port) if given; a 4-tuple whose previous socket is still
    closing (LAST-ACK) is busy for a moment: retry."""
    for _ in range(2000):
        s = socket.socket()
        s.settimeout(TIMEOUT)
        try:
            if src is not None:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(src)
            s.connect(dst)
            return s
        except OSError as e:
            s.close()
            if e.errno not in (errno.EADDRNOTAVAIL, errno.EADDRINUSE):
                raise
            time.sleep(0.001)
    raise OSError(errno.EADDRNOTAVAIL, f"{src} -> {dst} stayed busy")


def _client_one(dst: tuple, src: tuple | None, style: str) -> bool:
    s = _connect(dst, src)
    try:
        s.sendall(_CODE[style])
        if style == "client_fin":
            s.shutdown(socket.SHUT_WR)
            ok = _read_to_eof(s) == b"ok"
        elif style == "server_fin":
            ok = _read_to_eof(s) == b"ok"
        elif style == "client_rst":
            ok = s.recv(2) == b"ok"
            _abort(s)
            return ok
        else:
            _read_to_eof(s)
            ok = True
    finally:
        s.close()
    return ok


def churn(host: str, port: int, count: int, workers: int = 8, styles: list | tuple = STYLES,
          fixed_ports: int | None = None, addr_base: str | None = None) -> dict:
    """`count` connections of each style to host:port from `workers` threads at once.

    With `fixed_ports`, worker i always binds source port fixed_ports + i (take them below the
    ephemeral range, 32768), so slirpy sees its 4-tuple again at once; with `addr_base` ("127.77"), its n-th connection also comes from a
    new address addr_base.(16i + n // 250).(n % 250 + 1), which lets a client that closed
    first (its own kernel keeps that 4-tuple in TIME-WAIT) use the same port again. Without
    `addr_base`, client_fin connections take ephemeral ports for that reason.
    Returns {"ok", "bad", "errors": {style:errno: n}, "seconds"}."""
    result: dict = {"ok": 0, "bad": 0, "errors": {}}
    lock = threading.Lock()

    def work(i: int) -> None:
        n = 0
        for style in styles:
            for _ in range(i, count, workers):
                src = None
                if fixed_ports is not None:
                    if addr_base is not None:
                        src = (f"{addr_base}.{16 * i + n // 250}.{n % 250 + 1}", fixed_ports + i)
                    elif style != "client_fin":
                        src = ("", fixed_ports + i)
                n += 1
                try:
                    good = _client_one((host, port), src, style)
                except OSError as e:
                    with lock:
                        key = f"{style}:{errno.errorcode.get(e.errno, e.errno)}"
                        result["errors"][key] = result["errors"].get(key, 0) + 1
                    continue
                with lock:
                    result["ok" if good else "bad"] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result["seconds"] = round(time.monotonic() - t0, 2)
    return result


def main(argv: list[str]) -> int:
    """Serve on port argv[1] (all addresses), print READY; then, for each line on stdin (churn
    keyword arguments as JSON), run that churn and print "CHURN <result json>"; exit at EOF."""
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", int(argv[1])))
    ls.listen(512)
    serve(ls)
    print("READY", flush=True)
    for line in sys.stdin:
        print("CHURN " + json.dumps(churn(**json.loads(line))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
