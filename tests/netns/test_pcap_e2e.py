"""Packet capture end to end (slirpy/pcap.py): `--pcap`, `--pcap-max-size`, `slirpy pcap
start|stop`, read back with the real tools.

A curl download from a host HTTP server and an inbound connection through a published port,
both in one capture, over IPv4 and over IPv6: `tshark -r` shows each connection's handshake,
the HTTP request and the FIN exchange in order, and `tcpdump -r` reads the same file. The size
limit and a full disk (a 64 KiB tmpfs in a mount namespace of our own) stop the capture with
their counter and leave a readable file, while the transfer goes on byte-exact. At run time the
API starts and stops a capture (`slirpy pcap start|stop`, `slirpy stats` shows its counters).
`slirpy slirp4netns --pcap` captures too.
"""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading

import pytest

from tests.netns.test_ports_e2e import guest_server_argv, sandbox, tcp_exchange  # noqa: F401
from tests.netns.test_slirp4netns_e2e import Slirpy, Target
from tests.netns.util import (GUEST6_ADDR, GUEST_ADDR, HOST6_ADDR, HOST_ADDR, HOST_ADDR2, REPO,
                              expected, guest_argv, pattern, read_counters, run_slirpy, slirpy_argv)

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(shutil.which("tshark") is None or shutil.which("tcpdump") is None,
                       reason="tshark/tcpdump not installed (helpers/setup-host installs them)"),
]

MiB = 1 << 20
FIELDS = ["frame.number", "ip.src", "ipv6.src", "tcp.srcport", "tcp.dstport", "tcp.flags.syn",
          "tcp.flags.ack", "tcp.flags.fin", "tcp.flags.reset", "tcp.len", "http.request.method",
          "http.request.uri"]


class HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True


def http_server(addr: str, size: int, seed: int) -> HttpServer:
    """GET /blob -> `size` pattern bytes (HTTP/1.0: the server closes first)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/blob" else 404)
            self.send_header("Content-Length", str(size if self.path == "/blob" else 0))
            self.end_headers()
            if self.path == "/blob":
                for chunk in pattern(size, seed):
                    self.wfile.write(chunk)

        def log_message(self, *args):
            pass

    HttpServer.address_family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    srv = HttpServer((addr, 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def tshark(path, display_filter: str = "") -> list[dict]:
    """One dict per frame (FIELDS; "src" is the IP source of either family)."""
    argv = ["tshark", "-r", str(path), "-n", "-T", "fields", "-E", "separator=|"]
    for f in FIELDS:
        argv += ["-e", f]
    if display_filter:
        argv += ["-Y", display_filter]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, f"tshark failed ({res.returncode}): {res.stderr}"
    assert "cut short" not in res.stderr and "appears to be damaged" not in res.stderr, res.stderr
    rows = []
    for line in res.stdout.splitlines():
        row = dict(zip(FIELDS, line.split("|")))
        row["src"] = row["ip.src"] or row["ipv6.src"]
        rows.append(row)
    return rows


def flag(row: dict, name: str) -> bool:
    return row[f"tcp.flags.{name}"] in ("1", "True")


def check_connection(rows: list[dict], client: str, server: str, request: str | None = None) -> dict:
    """`rows` are one TCP connection's frames in file order: the three-way handshake from
    `client`, the HTTP request (if given), then a FIN from each side, each ACKed. Returns
    payload bytes per sender."""
    assert len(rows) >= 5, rows
    syn, synack, ack = rows[:3]
    assert syn["src"] == client and flag(syn, "syn") and not flag(syn, "ack"), syn
    assert synack["src"] == server and flag(synack, "syn") and flag(synack, "ack"), synack
    assert ack["src"] == client and flag(ack, "ack") and not flag(ack, "syn"), ack
    assert not any(flag(r, "syn") for r in rows[3:]), rows
    assert not any(flag(r, "reset") for r in rows), rows
    fins = [i for i, r in enumerate(rows) if flag(r, "fin")]
    assert sorted({rows[i]["src"] for i in fins}) == sorted({client, server}), rows
    if request is not None:
        (req,) = [i for i, r in enumerate(rows) if r["http.request.method"]]
        assert rows[req]["src"] == client and rows[req]["http.request.method"] == "GET"
        assert rows[req]["http.request.uri"] == request
        assert 2 < req < fins[0], rows
    # the last FIN is answered by an ACK from the other side
    last = rows[fins[-1]]
    assert any(r["src"] != last["src"] and flag(r, "ack") for r in rows[fins[-1] + 1:]), rows[fins[-1]:]
    sent: dict = {}
    for r in rows:
        sent[r["src"]] = sent.get(r["src"], 0) + int(r["tcp.len"] or 0)
    return sent


def tcpdump_lines(path) -> list[str]:
    """`tcpdump -r`, in a user namespace of its own: as (namespaced) root it would try to drop
    privileges to its own user, which a user namespace does not allow."""
    res = subprocess.run(["unshare", "-U", "tcpdump", "-nn", "-r", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, f"tcpdump failed ({res.returncode}): {res.stderr}"
    assert "link-type EN10MB (Ethernet), snapshot length 65600" in res.stderr, res.stderr
    return res.stdout.splitlines()


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_curl_download_and_published_port_in_one_capture(tmp_path, sandbox, family):  # noqa: F811
    v6 = family == "ipv6"
    host, client, guest = (HOST6_ADDR, HOST6_ADDR, GUEST6_ADDR) if v6 else (HOST_ADDR, HOST_ADDR2, GUEST_ADDR)
    size = 2 * MiB + 3
    srv = http_server(host, size, 5)
    pcap = tmp_path / "c.pcap"
    stats = tmp_path / "stats.json"
    hport = srv.server_address[1]
    with socket.socket(socket.AF_INET6 if v6 else socket.AF_INET) as s:     # a free port to publish
        s.bind((host, 0))
        pub = s.getsockname()[1]
    url = f"http://[{host}]:{hport}/blob" if v6 else f"http://{host}:{hport}/blob"
    # the download first, then the server (READY) for the published port's client
    script = f'curl -g -sS --max-time 60 -o - {url} | sha256sum && exec "$@"'
    published = f"[{host}]:{pub}:80" if v6 else f"{host}:{pub}:80"
    try:
        box = sandbox(["--pcap", str(pcap), "--stats-file", str(stats), "-p", published],
                      ["sh", "-c", script, "sh", *guest_server_argv(tcp=[80], host=None)])
        assert any(line.startswith(expected(size, 5)) for line in box.lines), box.lines
        me, line, rest = tcp_exchange((host, pub), b"hello through the port", src=client)
        assert line == f"{me[0]} {me[1]}" and rest == b"hello through the port"
        box.stop()                  # slirpy flushes and closes the capture on its way out
        assert "Traceback" not in box.stderr, box.stderr
    finally:
        srv.shutdown()
        srv.server_close()
    # outbound: guest -> host HTTP server
    down = tshark(pcap, f"tcp.port == {hport}")
    sent = check_connection(down, guest, host, request="/blob")
    assert size < sent[host] < size + 1000, sent           # the whole body, plus HTTP headers
    # inbound: the published port's client, as the sandbox sees it
    inbound = tshark(pcap, "tcp.port == 80")
    sent = check_connection(inbound, client, guest)
    assert sent[client] == len(b"hello through the port"), sent
    everything = tshark(pcap)
    assert any(r["ipv6.src"] for r in everything)      # with IPv4 too: RA, MLD, NS/NA
    # tcpdump reads the same file, frame for frame
    lines = tcpdump_lines(pcap)
    assert len(lines) == len(everything)
    assert any(f"{guest}.80: Flags [S]," in ln for ln in lines), lines[:20]
    c = read_counters(stats)
    assert c["pcap.frames"] == len(everything) and c["pcap.bytes"] == os.path.getsize(pcap), c
    assert c["pcap.captures"] == 1 and c.get("pcap.stopped.request") == 1, c


def download_ops(port: int) -> list[str]:
    return guest_argv([{"op": "download", "host": HOST_ADDR, "port": port}])


def test_size_limit_stops_the_capture_and_the_network_goes_on(tmp_path, host_server):
    size = 3 * MiB
    src = host_server("source", size=size, seed=11)
    pcap = tmp_path / "small.pcap"
    stats = tmp_path / "stats.json"
    res = run_slirpy(["--pcap", str(pcap), "--pcap-max-size", "64K", "--stats-file", str(stats)],
                     download_ops(src.port))
    assert res.guest_results() == [{"len": size, "sha": expected(size, 11)}]
    assert "reached its maximum size (65536 bytes): capture stopped" in res.stderr, res.describe()
    c = read_counters(stats)
    assert c["pcap.stopped.max_size"] == 1 and c["pcap.drop.max_size"] == 1, c
    assert 0 < os.path.getsize(pcap) <= 64 * 1024 and c["pcap.bytes"] == os.path.getsize(pcap)
    rows = tshark(pcap)                        # whole records only
    assert len(rows) == c["pcap.frames"] and flag(tshark(pcap, "tcp.flags.syn == 1")[0], "syn")


def test_full_disk_stops_the_capture_and_the_network_goes_on(tmp_path, host_server):
    size = 3 * MiB
    src = host_server("source", size=size, seed=12)
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    stats = tmp_path / "stats.json"
    copy = tmp_path / "copy.pcap"
    # A mount namespace of our own with a 64 KiB tmpfs: the capture fills it. The file is
    # copied out before the namespace (and its tmpfs) goes away.
    script = ('mount -t tmpfs -o size=64k slirpy-pcap-test "$1" && shift && "$@"; rc=$?; '
              f'cp {mnt}/c.pcap {copy}; exit $rc')
    argv = ["unshare", "-m", "sh", "-c", script, "sh", str(mnt),
            *slirpy_argv("--pcap", f"{mnt}/c.pcap", "--stats-file", str(stats)), *download_ops(src.port)]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=REPO,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    results = [ln for ln in res.stdout.splitlines() if ln.startswith("[")]
    assert results and f'"sha": "{expected(size, 12)}"' in results[-1], res.stdout
    assert "No space left on device" in res.stderr and "capture stopped" in res.stderr, res.stderr
    c = read_counters(stats)
    assert c["pcap.stopped.write_error"] == 1 and c["pcap.drop.write_error"] > 0, c
    assert c["pcap.bytes"] == os.path.getsize(copy) <= 64 * 1024, c
    assert len(tshark(copy)) == c["pcap.frames"] > 0          # cut back to whole records


def pcap_cli(*args, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slirpy", *args], capture_output=True, text=True,
                          timeout=30, cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_pcap_start_and_stop_over_the_api(tmp_path, sandbox):  # noqa: F811
    api = str(tmp_path / "api.sock")
    sandbox(["--api-socket", api, "-p", f"{HOST_ADDR}:18290:80"], guest_server_argv(tcp=[80]))
    r = pcap_cli("pcap", "stop", "--api-socket", api)
    assert r.returncode == 1 and "no capture is running" in r.stderr, r
    r = pcap_cli("pcap", "start", "--api-socket", api, "--max-size", "10M", "rel.pcap", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    pcap = tmp_path / "rel.pcap"                     # relative to the client's directory
    r = pcap_cli("pcap", "start", "--api-socket", api, str(tmp_path / "other.pcap"))
    assert r.returncode == 1 and "is running" in r.stderr, r
    me, line, _ = tcp_exchange((HOST_ADDR, 18290), b"captured", src=HOST_ADDR2)
    r = pcap_cli("stats", "--api-socket", api)
    assert "pcap.captures 1" in r.stdout and "pcap.frames" in r.stdout, r.stdout
    r = pcap_cli("pcap", "stop", "--api-socket", api)
    assert r.returncode == 0 and r.stdout.startswith(f"{pcap}: "), r
    frames = int(r.stdout.split(": ")[1].split()[0])
    rows = tshark(pcap)
    assert len(rows) == frames
    check_connection(tshark(pcap, f"tcp.port == {me[1]}"), HOST_ADDR2, GUEST_ADDR)
    size = os.path.getsize(pcap)
    tcp_exchange((HOST_ADDR, 18290), b"not captured", src=HOST_ADDR2)
    assert os.path.getsize(pcap) == size
    r = pcap_cli("stats", "--api-socket", api)
    assert "pcap.stopped.request 1" in r.stdout and f"pcap.frames {frames}" in r.stdout, r.stdout
    # a file that is not a capture is never overwritten
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    r = pcap_cli("pcap", "start", "--api-socket", api, str(notes))
    assert r.returncode == 1 and "not a pcap file" in r.stderr and notes.read_text() == "keep me", r


def test_slirp4netns_mode_captures(tmp_path, host_server):
    size = MiB
    src = host_server("source", size=size, seed=13)
    pcap = tmp_path / "s4.pcap"
    target = Target()
    s = Slirpy("-c", "--pcap", str(pcap), "--pcap-max-size=10M", str(target.pid), "tap0")
    try:
        assert s.wait_ready() == b"1"
        (down,) = target.guest_ops([{"op": "download", "host": HOST_ADDR, "port": src.port}])
        assert down == {"len": size, "sha": expected(size, 13)}
        target.kill()
        assert s.wait() == 0
    finally:
        s.stop()
        target.kill()
    check_connection(tshark(pcap, f"tcp.port == {src.port}"), GUEST_ADDR, HOST_ADDR)
