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


def _dns_query(ident: int, name: str) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", 1, 1)


def soak(seconds: float, host: str, source_port: int, sink_port: int, churn_port: int,
         udp_port: int, dns: str, bulk_size: int = 32 << 20) -> dict:
    """Every kind of traffic at once for `seconds`, from the guest: downloads and uploads of
    `bulk_size` checked byte for byte, short connections ended every way, UDP from new
    sockets, DNS through the forwarder, ping. Returns per-kind counts of good and failed."""
    import subprocess
    import util                     # the sibling module: only in the guest (see main)
    deadline = time.monotonic() + seconds
    counts: dict = {}
    lock = threading.Lock()

    def count(key: str, n: int = 1) -> None:
        with lock:
            counts[key] = counts.get(key, 0) + n

    def download() -> None:
        r = util.guest_download(host, source_port)
        count("download.ok" if r["len"] == bulk_size else "download.bad")

    def upload() -> None:
        seed = int(time.monotonic() * 1000) & 0xFFFF
        r = util.guest_upload(host, sink_port, bulk_size, seed)
        good = r["server"] == {"len": bulk_size, "sha": util.expected(bulk_size, seed)}
        count("upload.ok" if good else "upload.bad")

    def short() -> None:
        r = churn(host, churn_port, 10, workers=4)
        count("short.ok", r["ok"])
        count("short.bad", r["bad"] + sum(r["errors"].values()))

    def udp() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(2.0)
            for i in range(10):
                u.sendto(b"soak %d" % i, (host, udp_port))
                try:
                    good = u.recv(100) == b"soak %d" % i
                except OSError:
                    good = False
                count("udp.ok" if good else "udp.lost")

    def dns_query() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(3.0)
            ident = int(time.monotonic() * 1e6) & 0xFFFF
            u.sendto(_dns_query(ident, "soak.test"), (dns, 53))
            try:
                good = struct.unpack("!H", u.recv(512)[:2])[0] == ident
            except OSError:
                good = False
            count("dns.ok" if good else "dns.lost")

    def ping() -> None:
        r = subprocess.run(["ping", "-c", "3", "-i", "0.2", "-W", "2", "-q", host],
                           capture_output=True, text=True)
        count("ping.ok" if r.returncode == 0 else "ping.bad")

    def loop(job, pause: float) -> None:
        while time.monotonic() < deadline:
            try:
                job()
            except OSError as e:
                count(f"{job.__name__}.error.{errno.errorcode.get(e.errno, e.errno)}")
            time.sleep(pause)

    jobs = [(download, 0.5), (upload, 0.5), (short, 0.05), (udp, 0.05), (dns_query, 0.05),
            (ping, 0.2)]
    threads = [threading.Thread(target=loop, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return counts


def main(argv: list[str]) -> int:
    """Serve on port argv[1] (all addresses), print READY; then, for each line on stdin (churn
    keyword arguments as JSON, or {"soak": soak keyword arguments}), run it and print
    "CHURN <result json>"; exit at EOF."""
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", int(argv[1])))
    ls.listen(512)
    serve(ls)
    print("READY", flush=True)
    for line in sys.stdin:
        kw = json.loads(line)
        result = soak(**kw["soak"]) if "soak" in kw else churn(**kw)
        print("CHURN " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
