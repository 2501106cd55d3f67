"""autoports.py: the /proc/net parser (tables captured in a real sandbox), the diff, and the
poller's state machine with fake tables and a fake port manager; the -p auto parsing."""

from __future__ import annotations

import asyncio
import errno
import os
from collections import defaultdict

import pytest

from slirpy import autoports
from slirpy.autoports import V4, V6, AutoPorts, bound_ports, diff, eligible_addresses, guest_addr_for, proc_hex
from slirpy.config import AutoPublish, ConfigError, PortSpec, build_net_config, parse_auto_spec
from slirpy.ports import PortError

# Captured in `slirpy run` (guest 10.0.2.100 / fd00::100) with: TCP listeners on 0.0.0.0:8080,
# 10.0.2.100:8081, 127.0.0.1:8082, [::]:8083, [fd00::100]:8084, [::1]:8085, one connection
# 10.0.2.100 -> 8080 (both ends); UDP bound on 0.0.0.0:5353, 127.0.0.1:5354, [::]:5355,
# [fd00::100]:5356, a connected client to 203.0.113.1:53, an unconnected client that sent one
# datagram (auto-bound to 0.0.0.0:37044) and a connected IPv6 client to [2001:db8::1]:53.
TCP = b"""\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     
   0: 00000000:1F90 00000000:0000 0A 00000000:00000001 00:00000000 00000000     0        0 8541730 2 0000000023f43525 100 0 0 10 0                   
   1: 0100007F:1F92 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 8541732 1 0000000098877797 100 0 0 10 0                   
   2: 6402000A:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 8541731 1 000000009ee73e35 100 0 0 10 0                   
   3: 6402000A:1F90 6402000A:A970 01 00000000:00000000 00:00000000 00000000     0        0 0 1 00000000c0d9a987 20 0 0 10 -1                         
   4: 6402000A:A970 6402000A:1F90 01 00000000:00000000 00:00000000 00000000     0        0 8541742 2 0000000099e019d2 20 0 0 10 -1                   
"""

TCP6 = b"""\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F95 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 8541735 1 0000000005cb3c67 100 0 0 10 0
   1: 00000000000000000000000000000000:1F93 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 8541733 1 00000000f0e5b098 100 0 0 10 0
   2: 000000FD000000000000000000010000:1F94 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 8541734 1 000000000b9ec5f6 100 0 0 10 0
"""

UDP = b"""\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops            
 1538: 00000000:90B4 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 8541741 2 00000000e5a9106a 0       
 2615: 00000000:14E9 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 8541736 2 000000009c9e2b9a 0       
 2616: 0100007F:14EA 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 8541737 2 00000000de4fd007 0       
 6142: 6402000A:E2B0 017100CB:0035 01 00000000:00000000 00:00000000 00000000     0        0 8541740 2 00000000a30498cc 0       
"""

UDP6 = b"""\
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 2617: 00000000000000000000000000000000:14EB 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 8541738 2 00000000d1a20ceb 0
 2618: 000000FD000000000000000000010000:14EC 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 8541739 2 0000000013076c93 0
 4446: 000000FD000000000000000000010000:9C10 B80D0120000000000000000001000000:0035 01 00000000:00000000 00:00000000 00000000     0        0 8541743 2 000000008ae38f71 0
"""

ELIGIBLE = eligible_addresses("10.0.2.100", "fd00::100")


def test_proc_hex_is_the_kernels_layout():
    assert proc_hex("127.0.0.1") == b"0100007F"
    assert proc_hex("10.0.2.100") == b"6402000A"
    assert proc_hex("fd00::100") == b"000000FD000000000000000000010000"
    assert proc_hex("::1") == b"00000000000000000000000001000000"
    assert proc_hex("2001:db8::1") == b"B80D0120000000000000000001000000"


def test_tcp_listeners_on_a_wildcard_or_the_sandbox_address_only():
    assert bound_ports(TCP, "tcp", ELIGIBLE) == {8080: V4, 8081: V4}     # not 127.0.0.1, not ESTABLISHED
    assert bound_ports(TCP6, "tcp", ELIGIBLE) == {8083: V6, 8084: V6}    # not ::1


def test_udp_bound_without_a_peer_outside_the_ephemeral_range():
    # 5354 (loopback), the connected client and the auto-bound 37044 are not servers
    assert bound_ports(UDP, "udp", ELIGIBLE) == {5353: V4}
    assert bound_ports(UDP6, "udp", ELIGIBLE) == {5355: V6, 5356: V6}


def test_the_tcp_state_must_be_listen_in_the_udp_table_and_vice_versa():
    assert bound_ports(TCP, "udp", ELIGIBLE) == {}      # 0A is not 07
    assert bound_ports(UDP, "tcp", ELIGIBLE) == {}


def test_ipv4_mapped_binds_count_as_ipv4_and_garbage_is_skipped():
    mapped = proc_hex("::ffff:10.0.2.100").decode()
    table = (b"  sl  local_address remote_address st\n"
             + f"   0: {mapped}:0050 {'0' * 32}:0000 0A 0\n".encode()
             + b"   1: short\n\n")
    assert bound_ports(table, "tcp", ELIGIBLE) == {80: V4}
    assert bound_ports(b"", "tcp", ELIGIBLE) == {}


def test_without_ipv6_the_sandbox_ipv6_address_is_not_eligible():
    assert bound_ports(TCP6, "tcp", eligible_addresses("10.0.2.100", None)) == {8083: V6}


def test_diff_and_guest_address():
    assert diff({("tcp", 1), ("udp", 2)}, {("tcp", 1), ("tcp", 3)}) == ([("tcp", 3)], [("udp", 2)])
    assert diff([], []) == ([], [])
    assert guest_addr_for(V4, "10.0.2.100", "fd00::100") == "10.0.2.100"
    assert guest_addr_for(V6, "10.0.2.100", "fd00::100") == "fd00::100"
    assert guest_addr_for(V6, "10.0.2.100", None) is None
    assert guest_addr_for(V4 | V6, "10.0.2.100", "fd00::100") is None


# ------------------------------------------------------------------ the poller


class _Fwd:
    def __init__(self, spec: PortSpec, auto: bool):
        self.spec = spec
        self.auto = auto


class FakePorts:
    guest_addr = "10.0.2.100"
    guest_addr6: str | None = "fd00::100"

    def __init__(self, in_use=()):
        self.forwards: dict[int, _Fwd] = {}
        self.in_use = set(in_use)         # host ports whose bind fails with EADDRINUSE
        self.next_id = 1
        self.adds = 0

    async def add_forward(self, spec: PortSpec, *, auto: bool = False) -> int:
        self.adds += 1
        if spec.host_port in self.in_use:
            raise PortError(f"cannot publish {spec.host_addr}:{spec.host_port}: address already in use",
                            errno.EADDRINUSE)
        fid = self.next_id
        self.next_id += 1
        self.forwards[fid] = _Fwd(spec, auto)
        return fid

    def remove_forward(self, fid: int) -> bool:
        return self.forwards.pop(fid, None) is not None


def _line(addr: str, port: int, state: str) -> str:
    local = proc_hex(addr).decode()
    return f"   0: {local}:{port:04X} {'0' * len(local)}:0000 {state} 0\n"


class FakeTables:
    def __init__(self):
        self.tcp: list[tuple[str, int]] = []
        self.error = False

    def read(self, path: str) -> bytes:
        if self.error:
            raise PermissionError(13, "denied")
        if not path.endswith("/tcp"):
            return b"header\n"
        return ("header\n" + "".join(_line(a, p, "0A") for a, p in self.tcp)).encode()


def _poller(ports: FakePorts, tables: FakeTables) -> tuple[AutoPorts, defaultdict]:
    counters: defaultdict[str, int] = defaultdict(int)
    ap = AutoPorts(ports, AutoPublish(("tcp", "udp"), "127.0.0.1"), 4242, counters,  # type: ignore[arg-type]
                   read_table=tables.read)
    return ap, counters


def _step(ap: AutoPorts) -> None:
    """One poll: scan, and apply what changed (what _tick does, without the timer)."""
    found = ap.scan()
    assert found is not None
    added, removed = diff(ap.seen, found)
    asyncio.run(ap.apply(added, removed, found))


def test_poller_reads_the_sandbox_pids_tables():
    ap, _ = _poller(FakePorts(), FakeTables())
    assert [p for _, p in ap.tables] == ["/proc/4242/net/tcp", "/proc/4242/net/tcp6",
                                         "/proc/4242/net/udp", "/proc/4242/net/udp6"]


def test_poller_publishes_new_ports_and_unpublishes_closed_ones():
    ports, tables = FakePorts(), FakeTables()
    ap, counters = _poller(ports, tables)
    tables.tcp = [("0.0.0.0", 8000), ("127.0.0.1", 8001), ("::", 8002)]
    _step(ap)
    specs = sorted(((f.spec, f.auto) for f in ports.forwards.values()), key=lambda x: x[0].host_port)
    assert specs == [(PortSpec("tcp", "127.0.0.1", 8000, 8000, "10.0.2.100"), True),
                     (PortSpec("tcp", "127.0.0.1", 8002, 8002, "fd00::100"), True)]
    _step(ap)                                   # nothing changed: nothing done
    assert ports.adds == 2 and counters["ports.auto.published"] == 2
    tables.tcp = [("::", 8002)]
    _step(ap)
    assert [f.spec.host_port for f in ports.forwards.values()] == [8002]
    assert counters["ports.auto.unpublished"] == 1


def test_a_host_port_in_use_is_tried_once_per_bind(capsys):
    ports, tables = FakePorts(in_use={8000}), FakeTables()
    ap, counters = _poller(ports, tables)
    tables.tcp = [("0.0.0.0", 8000)]
    for _ in range(5):
        _step(ap)
    assert ports.adds == 1 and counters["ports.auto.conflict"] == 1
    assert capsys.readouterr().err.count("cannot publish 127.0.0.1:8000") == 1
    tables.tcp = []                             # the guest closes and binds it again: retried
    _step(ap)
    ports.in_use.clear()
    tables.tcp = [("0.0.0.0", 8000)]
    _step(ap)
    assert ports.adds == 2 and len(ports.forwards) == 1


def test_an_explicit_forward_of_the_guest_port_wins():
    ports, tables = FakePorts(), FakeTables()
    asyncio.run(ports.add_forward(PortSpec("tcp", "0.0.0.0", 9000, 8000)))
    ap, counters = _poller(ports, tables)
    tables.tcp = [("0.0.0.0", 8000)]
    _step(ap)
    _step(ap)
    assert ports.adds == 1 and counters["ports.auto.explicit"] == 1
    assert [f.auto for f in ports.forwards.values()] == [False]


def test_a_members_poller_targets_its_ip_and_only_its_own_explicit_forwards_win():
    """A network's router serves every member through one PortManager: another member's
    explicit forward of the same guest port does not stop this member's, a forward to this
    member does, and every forward targets the member's IP (never the router's own guest)."""
    ports, tables = FakePorts(), FakeTables()
    asyncio.run(ports.add_forward(PortSpec("tcp", "0.0.0.0", 9000, 8000, "10.89.0.10")))   # web's
    asyncio.run(ports.add_forward(PortSpec("tcp", "0.0.0.0", 9001, 8001, "10.89.1.2")))    # ours
    counters: defaultdict[str, int] = defaultdict(int)
    ap = AutoPorts(ports, AutoPublish(("tcp",), "127.0.0.1"), 0, counters,  # type: ignore[arg-type]
                   read_table=tables.read, member=("10.89.1.2", "fd89:0:0:1::2"))
    tables.tcp = [("0.0.0.0", 8000), ("0.0.0.0", 8001), ("::", 8002), ("10.89.1.2", 8003),
                  ("10.0.2.100", 8004)]
    _step(ap)
    auto = sorted((f.spec for f in ports.forwards.values() if f.auto), key=lambda sp: sp.host_port)
    assert auto == [PortSpec("tcp", "127.0.0.1", p, p, "10.89.1.2") for p in (8000, 8002, 8003)]
    assert counters["ports.auto.explicit"] == 1
    assert sorted(ap.forward_ids()) == sorted(i for i, f in ports.forwards.items() if f.auto)


def test_read_from_a_dir_fd_reads_the_tables_relative_to_it(tmp_path):
    (tmp_path / "tcp").write_text("header\n" + _line("0.0.0.0", 8000, "0A"))
    ports = FakePorts()
    ap, _ = _poller(ports, FakeTables())
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ap.read_from(fd)
        assert [p for _, p in ap.tables] == ["tcp", "tcp6", "udp", "udp6"]
        assert ap.scan() == {("tcp", 8000): autoports.V4}
    finally:
        os.close(fd)


def test_an_unreadable_table_changes_nothing():
    ports, tables = FakePorts(), FakeTables()
    ap, counters = _poller(ports, tables)
    tables.tcp = [("0.0.0.0", 8000)]
    _step(ap)
    tables.error = True
    assert ap.scan() is None and counters["ports.auto.read_error"] == 1
    assert len(ports.forwards) == 1


def test_read_proc_table_of_a_missing_file_is_empty(tmp_path):
    assert autoports.read_proc_table(str(tmp_path / "nope")) == b""
    (tmp_path / "t").write_bytes(b"x" * 200000)
    assert len(autoports.read_proc_table(str(tmp_path / "t"))) == 200000


# ------------------------------------------------------------------ -p auto parsing


@pytest.mark.parametrize("text, protos", [("auto", ("tcp", "udp")), ("auto/tcp", ("tcp",)),
                                          ("AUTO/udp", ("udp",)), ("8080:80", None)])
def test_parse_auto_spec(text, protos):
    assert parse_auto_spec(text) == protos


def test_parse_auto_spec_rejects_other_protocols():
    with pytest.raises(ConfigError, match="auto, auto/tcp or auto/udp"):
        parse_auto_spec("auto/sctp")


def test_build_net_config_splits_auto_from_explicit_ports():
    c = build_net_config(publish=["auto/tcp", "8080:80", "auto/udp"])
    assert c.auto_publish == AutoPublish(("tcp", "udp"), "127.0.0.1")
    assert c.ports == (PortSpec("tcp", "0.0.0.0", 8080, 80),)
    assert build_net_config(publish=["8080:80"]).auto_publish is None
    c = build_net_config(publish=["auto/udp"], publish_auto_addr="[::1]")
    assert c.auto_publish == AutoPublish(("udp",), "::1")


@pytest.mark.parametrize("publish, addr, match", [
    ([], "127.0.0.1", "needs -p auto"),
    (["auto"], "localhost", "IPv4 or IPv6 address"),
])
def test_publish_auto_addr_errors(publish, addr, match):
    with pytest.raises(ConfigError, match=match):
        build_net_config(publish=publish, publish_auto_addr=addr)
