"""Hostile frames from inside the sandbox (issue 7 part 4), against a real `slirpy run`.

The guest is root of its own user namespace, so `rawframes.py` opens an AF_PACKET socket on
tap0 and writes whatever it likes to slirpy: short and impossible IPv4 headers, bad
checksums (with offloads on, a frame written by a packet socket reaches slirpy with an
all-zero virtio header, so slirpy must verify them itself), bad TCP data offsets and
options, fragments, SYN+FIN, ARP garbage; then attacks a live TCP flow with out-of-window
data, RSTs and SYNs with wrong sequence numbers (RFC 5961: each must draw a challenge ACK,
sniffed on the same packet socket) and finally an exact RST as positive control.
All the while an upload runs alongside (until the attacks are done) plus a 64 MiB
download, held open until they are done; both are running before the attacks begin (no head
start guessed), must move data during them, and must stay byte-exact. Counters come from --stats-file after exit.

The ARP flood runs in a /16 (`--cidr`): in the default /24 there are fewer possible senders
than `Limits.max_neighbours`, so the bound could never be reached.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .util import HOST_ADDR, REPO, expected, run_slirpy

pytestmark = [pytest.mark.netns, pytest.mark.usefixtures("no_stray_processes")]

RAW = str(Path(__file__).resolve().parent / "rawframes.py")
MiB = 1 << 20
REPEAT = 3          # each malformed kind is sent this many times

# kind (rawframes.malformed_kinds) -> the counter that must count exactly its drops
EXPECTED_COUNTER = {
    "ipv4_empty": "rx.drop.ipv4.short",
    "ipv4_short": "rx.drop.ipv4.short",
    "ipv4_version6": "rx.drop.ipv4.bad_version",
    "ipv4_ihl_4": "rx.drop.ipv4.bad_ihl",
    "ipv4_ihl_past_end": "rx.drop.ipv4.bad_ihl",
    "ipv4_total_too_long": "rx.drop.ipv4.bad_total_length",
    "ipv4_total_below_ihl": "rx.drop.ipv4.bad_total_length",
    "ipv4_bad_checksum": "rx.drop.ipv4.bad_checksum",
    "ipv4_fragment_mf": "ipv4.rx.drop.fragment",
    "ipv4_fragment_offset": "ipv4.rx.drop.fragment",
    "ipv4_proto_gre": "ipv4.rx.drop.proto",
    "tcp_short": "rx.drop.tcp.short",
    "tcp_doff_3": "rx.drop.tcp.bad_data_offset",
    "tcp_doff_past_end": "rx.drop.tcp.bad_data_offset",
    "tcp_bad_checksum": "rx.drop.tcp.bad_checksum",
    "tcp_bad_checksum_data": "rx.drop.tcp.bad_checksum",
    "tcp_option_zero_length": "rx.drop.tcp.bad_option",
    "tcp_option_len_one": "rx.drop.tcp.bad_option",
    "tcp_option_overrun": "rx.drop.tcp.bad_option",
    "tcp_option_mss_bad_len": "rx.drop.tcp.bad_option",
    "udp_short": "rx.drop.udp.short",
    "udp_bad_length": "rx.drop.udp.bad_length",
    "udp_bad_checksum": "rx.drop.udp.bad_checksum",
    "icmp_short_gateway": "rx.drop.icmp.short",
    "icmp_bad_checksum_gateway": "rx.drop.icmp.bad_checksum",
    "icmp_bad_checksum_remote": "rx.drop.icmp.bad_checksum",
    "arp_short": "rx.drop.arp.short",
    "arp_bad_op": "rx.drop.arp.bad_op",
    "arp_ipv6_ptype": "rx.drop.arp.unsupported",
}
# kinds whose counter the guest kernel's own traffic may also bump (IPv6 ND/MLD on tap0)
AT_LEAST = {"ethertype_unknown": "rx.drop.ethertype"}

CONFIGS = {
    "offload": ["--mtu", "65520"],
    "nooffload-1500": ["--no-offload", "--mtu", "1500"],
}


def run_raw(options: list[str], spec: dict, timeout: float = 180) -> tuple[dict, dict]:
    """Run rawframes.py in a sandbox; return (its JSON output, the stats-file counters)."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        stats = Path(d) / "stats.json"
        r = run_slirpy([*options, "--stats-file", str(stats)], [sys.executable, RAW, json.dumps(spec)],
                       timeout=timeout)
        assert r.returncode == 0, r.describe()
        lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
        assert lines, "rawframes printed nothing\n" + r.describe()
        assert stats.exists(), "slirpy wrote no stats file (did it die?)\n" + r.describe()
        return json.loads(lines[-1]), json.loads(stats.read_text())


@pytest.fixture(scope="module", params=list(CONFIGS), ids=list(CONFIGS))
def hostile_run(request):
    from .util import HostServer
    sink = HostServer("sink")
    source = HostServer("source", size=64 * MiB + 5, seed=71)
    echo = HostServer("echo")
    try:
        out, stats = run_raw(CONFIGS[request.param], {
            "background": [
                {"op": "upload_until", "host": HOST_ADDR, "port": sink.port, "seed": 70, "min_size": 8 * MiB},
                {"op": "download_until", "host": HOST_ADDR, "port": source.port, "size": 64 * MiB + 5},
            ],
            "ops": [
                {"op": "malformed", "count": REPEAT},
                {"op": "flow_attacks", "host": HOST_ADDR, "port": echo.port},
                {"op": "malformed", "count": REPEAT},
                {"op": "tap_stats"},
            ],
        })
        sink_results = sink.wait_results(1)
    finally:
        for s in (sink, source, echo):
            s.close()
    return {"out": out, "counters": stats["counters"], "stats": stats, "sink": sink_results}


def test_slirpy_survives_and_the_transfers_alongside_stay_byte_exact(hostile_run):
    out = hostile_run["out"]
    up, down = out["background"]
    assert "exception" not in up and "exception" not in down, out["background"]
    # both were running before the attacks began (rawframes waits for them) ...
    assert out["background_ready"] is True, out
    # the upload ran until the attacks were over, and more than one chunk long
    assert up["chunks"] >= 8 and up["chunks_during_ops"] > 0, up
    assert up["server"] == {"len": up["sent"], "sha": expected(up["sent"], 70)}, up
    # the download moved data during the attacks and was still open when they ended
    assert down["read_during_ops"] > 0 and down["read_at_stop"] < 64 * MiB + 5, down
    assert (down["len"], down["sha"]) == (64 * MiB + 5, expected(64 * MiB + 5, 71)), down
    (c,) = hostile_run["sink"]
    assert (c.received, c.error) == (up["sent"], None)


def test_every_malformed_kind_is_dropped_with_its_own_counter(hostile_run):
    out, counters = hostile_run["out"], hostile_run["counters"]
    first, _, second, tap = out["ops"]
    assert "exception" not in first and "exception" not in second, (first, second)
    sent = {k: first["sent"][k] + second["sent"][k] for k in first["sent"]}
    assert set(EXPECTED_COUNTER) | set(AT_LEAST) | {"syn_fin"} == set(sent)
    want: dict[str, int] = {}
    for kind, counter in EXPECTED_COUNTER.items():
        want[counter] = want.get(counter, 0) + sent[kind]
    got = {counter: counters.get(counter, 0) for counter in want}
    assert got == want, f"tap0 stats {tap}"
    for kind, counter in AT_LEAST.items():
        assert counters.get(counter, 0) >= sent[kind], (counter, counters.get(counter))
    # nothing above became a flow or an event
    assert counters.get("udp.flows.opened", 0) == 0
    assert counters.get("icmp.flows.opened", 0) == 0


def test_rfc5961_attacks_draw_challenge_acks_and_leave_the_flow_alive(hostile_run):
    res = hostile_run["out"]["ops"][1]
    assert "exception" not in res, res
    assert res["echo_before"] is True
    assert res["sniff_drops"] == 0, res      # else a missing reply may be the sniffer's loss
    rounds = {r["attack"]: r for r in res["rounds"]}
    assert len(rounds) == 8, res
    for name, rnd in rounds.items():
        if name == "rst_out_of_window":
            assert rnd["replies"] == [], rnd          # RFC 5961 §3.2: silently dropped
        else:
            # exactly one pure ACK <SEQ=SND.NXT><ACK=RCV.NXT>, nothing else
            assert rnd["challenge_acks"] == 1 and len(rnd["replies"]) == 1, rnd
        assert rnd["echo_after"] is True, rnd
    # positive control: an RST at exactly RCV.NXT does kill the flow, so the sequence
    # numbers the attacks were built from were right
    assert res["after_exact_rst"] in ("ECONNRESET", "EPIPE", "eof"), res
    assert hostile_run["counters"].get("tcp.flows.reset.reset", 0) >= 1


def test_syn_fin_is_dropped_with_its_own_counter(hostile_run):
    first, _, second, _ = hostile_run["out"]["ops"]
    n = first["sent"]["syn_fin"] + second["sent"]["syn_fin"]
    assert hostile_run["counters"].get("tcp.rx.drop.syn_fin", 0) == n


def test_rfc5961_drops_are_counted(hostile_run):
    c = hostile_run["counters"]
    assert c.get("tcp.rx.drop.out_of_window", 0) >= 2                # out_of_window_data, old_data
    assert c.get("tcp.rx.challenge_ack.rst", 0) >= 2                 # rst_wrong_seq, rst_ack_wrong_seq
    assert c.get("tcp.rx.challenge_ack.syn", 0) >= 2                 # syn_wrong_seq, syn_exact_seq
    assert c.get("tcp.rx.challenge_ack.ack", 0) >= 1                 # ack_of_unsent_data


ARP_CIDR = ["--cidr", "10.9.0.0/16"]


def test_arp_flood_keeps_the_neighbour_table_bounded(host_server):
    """2000 ARP requests from distinct in-subnet senders with random MACs: the table holds at
    most Limits.max_neighbours (256), so at least 2000 - 255 entries are evicted, counted; the
    gateway answers every request; a transfer alongside stays byte-exact."""
    n = 2000
    src = host_server("source", size=32 * MiB + 1, seed=80)
    out, stats = run_raw(ARP_CIDR, {
        "background": [{"op": "download_until", "host": HOST_ADDR, "port": src.port, "size": 32 * MiB + 1}],
        "ops": [{"op": "arp_flood", "count": n, "guest": "10.9.0.100", "gateway": "10.9.0.2"}],
    }, timeout=120)
    [flood] = out["ops"]
    assert flood == {"sent": n}, flood
    [down] = out["background"]
    assert out["background_ready"] is True, out
    # the download moved data during the flood and was still open when it ended
    assert down.get("read_during_ops", 0) > 0 and down["read_at_stop"] < 32 * MiB + 1, down
    assert (down["len"], down["sha"]) == (32 * MiB + 1, expected(32 * MiB + 1, 80)), down
    c = stats["counters"]
    assert c.get("arp.neighbour.evicted", 0) >= n - 255, c
    assert c.get("arp.tx.reply", 0) >= n
