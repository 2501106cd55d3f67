#!/usr/bin/env python3
"""Hold many idle TCP connections open, for perf/bench's "conns" workload.

  connhold.py server --host ADDR --port P     accept and keep every connection; prints
                                              "@@LISTEN" once listening, then "@@COUNT n"
                                              for each line read on stdin; exits on EOF
  connhold.py client --host ADDR --port P --count N [--parallel 256] [--timeout 120]
                                              open N connections (at most --parallel
                                              connecting at once), print "@@HELD held failed",
                                              keep them open until a line (or EOF) on stdin

Both raise RLIMIT_NOFILE's soft limit to the hard limit first and fail loudly when that is not
enough for N.
"""

from __future__ import annotations

import argparse
import errno
import os
import resource
import selectors
import socket
import sys
import time


def raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and hard < need:
        sys.exit(f"connhold: RLIMIT_NOFILE hard limit {hard} < {need} (raise it: ulimit -Hn)")


def server(host: str, port: int) -> int:
    raise_nofile(1024)
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind((host, port))
    lsock.listen(4096)
    lsock.setblocking(False)
    held: list[socket.socket] = []
    sel = selectors.DefaultSelector()
    sel.register(lsock, selectors.EVENT_READ, "accept")
    sel.register(sys.stdin.fileno(), selectors.EVENT_READ, "stdin")
    print("@@LISTEN", flush=True)
    while True:
        for key, _ in sel.select():
            if key.data == "accept":
                while True:
                    try:
                        conn, _ = lsock.accept()
                    except BlockingIOError:
                        break
                    except OSError as e:  # EMFILE: say so in the count line, keep going
                        print(f"@@ERROR accept {e}", flush=True)
                        break
                    held.append(conn)
            else:
                line = os.read(sys.stdin.fileno(), 4096)
                if not line:
                    return 0
                print(f"@@COUNT {len(held)}", flush=True)


def client(host: str, port: int, count: int, parallel: int, timeout: float) -> int:
    raise_nofile(count + 64)
    sel = selectors.DefaultSelector()
    held: list[socket.socket] = []
    failed = 0
    started = 0
    in_flight = 0
    deadline = time.monotonic() + timeout
    while (started < count or in_flight) and time.monotonic() < deadline:
        while started < count and in_flight < parallel:
            s = socket.socket()
            s.setblocking(False)
            started += 1
            err = s.connect_ex((host, port))
            if err in (0, errno.EINPROGRESS):
                sel.register(s, selectors.EVENT_WRITE)
                in_flight += 1
            else:
                failed += 1
                s.close()
        for key, _ in sel.select(timeout=1.0):
            s = key.fileobj
            sel.unregister(s)
            in_flight -= 1
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                held.append(s)
            else:
                failed += 1
                s.close()
    failed += in_flight  # still connecting at the deadline
    print(f"@@HELD {len(held)} {failed}", flush=True)
    sys.stdin.readline()
    for s in held:
        s.close()
    return 0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["server", "client"])
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--parallel", type=int, default=256)
    ap.add_argument("--timeout", type=float, default=120.0)
    a = ap.parse_args(argv)
    if a.mode == "server":
        return server(a.host, a.port)
    return client(a.host, a.port, a.count, a.parallel, a.timeout)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
