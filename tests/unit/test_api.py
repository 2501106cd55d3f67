"""api.py against a fake Controller: every request and every error, byte for byte.

Expected replies were captured from slirp4netns 1.2.0 (Debian) with the same requests,
except where noted (slirpy says *why* an add failed; slirpy only forwards to the guest)."""

from __future__ import annotations

import asyncio
import json

import pytest

from slirpy import api
from slirpy.config import PortSpec


class FakeController:
    guest_addr = "10.0.2.100"
    guest_addr6: str | None = "fd00::100"

    def __init__(self):
        self.forwards: dict[int, PortSpec] = {}
        self.next_id = 1

    async def add_forward(self, spec: PortSpec) -> int:
        for s in self.forwards.values():
            if (s.proto, s.host_addr, s.host_port) == (spec.proto, spec.host_addr, spec.host_port):
                raise RuntimeError(f"cannot publish {spec.host_addr}:{spec.host_port}/{spec.proto}: "
                                   "address already in use")
        fid = self.next_id
        self.next_id += 1
        self.forwards[fid] = spec
        return fid

    def list_forwards(self):
        return list(self.forwards.items())

    def remove_forward(self, forward_id: int) -> bool:
        return self.forwards.pop(forward_id, None) is not None

    auto: frozenset[int] = frozenset()     # ids a test marks as published by -p auto

    def auto_forward_ids(self) -> frozenset[int]:
        return self.auto

    def routes_to(self, ip: bytes) -> bool:     # no routed prefixes (tests/unit/test_api_router.py)
        return False


def run(ctl, raw: bytes | str) -> bytes:
    if isinstance(raw, str):
        raw = raw.encode()
    return asyncio.run(api.handle(ctl, raw))


ADD_8080 = ('{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "0.0.0.0", '
            '"host_port": 8080, "guest_addr": "10.0.2.100", "guest_port": 80}}')


def test_add_list_remove_as_slirp4netns_answers():
    ctl = FakeController()
    assert run(ctl, ADD_8080) == b'{"return":{"id":1}}'
    assert run(ctl, '{"execute": "add_hostfwd", "arguments": {"proto": "udp", "host_port": 8081, '
                    '"guest_port": 81}}') == b'{"return":{"id":2}}'
    assert ctl.forwards[2] == PortSpec("udp", "0.0.0.0", 8081, 81)
    listing = (b'{"entries":[{"id":1,"proto":"tcp","host_addr":"0.0.0.0","host_port":8080,'
               b'"guest_addr":"10.0.2.100","guest_port":80},{"id":2,"proto":"udp","host_addr":"0.0.0.0",'
               b'"host_port":8081,"guest_addr":"10.0.2.100","guest_port":81}]}')
    assert run(ctl, '{"execute": "list_hostfwd"}') == listing
    assert run(ctl, '{"execute": "list_hostfwd", "arguments": {}}') == listing
    assert run(ctl, '{"execute": "list_hostfwd"} trailing') == listing       # parson ignores the tail
    assert run(ctl, '{"execute": "remove_hostfwd", "arguments": {"id": 1}}') == b'{"return":{}}'
    assert run(ctl, '{"execute": "remove_hostfwd", "arguments": {"id": 1}}') == \
        b'{"error":{"desc":"bad request: remove_hostfwd: bad arguments.id"}}'
    # ids are never reused
    assert run(ctl, ADD_8080) == b'{"return":{"id":3}}'
    assert run(ctl, '{"execute": "list_hostfwd"}').startswith(b'{"entries":[{"id":2,')


def test_empty_list():
    assert run(FakeController(), '{"execute":"list_hostfwd"}') == b'{"entries":[]}'


@pytest.mark.parametrize("request_text, desc", [
    ('{"execute": "frob"}', "bad request: unknown execute"),
    ('{"exec": "frob"}', "bad request: no execute found"),
    ('{"execute": 5}', "bad request: no execute found"),
    ('[1,2]', "bad request: json_object() failed"),
    ('garbage', "bad request: cannot parse JSON"),
    ('', "bad request: cannot parse JSON"),
    ('{"execute": "list_hostfwd", "x": "' + "a" * 5000 + '"}', "bad request: too large message"),
    ('{"execute": "add_hostfwd", "arguments": {"proto": "sctp", "host_port": 8080, "guest_port": 80}}',
     "bad request: add_hostfwd: bad arguments.proto"),
    ('{"execute": "add_hostfwd", "arguments": {"host_port": 8080, "guest_port": 80}}',
     "bad request: add_hostfwd: bad arguments.proto"),
    ('{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "bogus", "host_port": 8080, '
     '"guest_port": 80}}', "bad request: add_hostfwd: bad arguments.host_addr"),
    ('{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 0, "guest_port": 80}}',
     "bad request: add_hostfwd: bad arguments.host_port"),
    ('{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "", "host_port": "8093", '
     '"guest_port": 80}}', "bad request: add_hostfwd: bad arguments.host_port"),
    ('{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 70000, "guest_port": 80}}',
     "bad request: add_hostfwd: bad arguments.host_port"),
    ('{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 8090, "guest_addr": "x", '
     '"guest_port": 80}}', "bad request: add_hostfwd: bad arguments.guest_addr"),
    # slirpy only forwards to the sandbox (slirp4netns accepts any address and forwards nowhere)
    ('{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 8091, "guest_addr": "10.0.2.5", '
     '"guest_port": 80}}', "bad request: add_hostfwd: bad arguments.guest_addr"),
    ('{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 8090, "guest_port": 0}}',
     "bad request: add_hostfwd: bad arguments.guest_port"),
    ('{"execute": "add_hostfwd"}', "bad request: add_hostfwd: bad arguments.proto"),
    ('{"execute": "remove_hostfwd"}', "bad request: remove_hostfwd: bad arguments.id"),
    ('{"execute": "remove_hostfwd", "arguments": {"id": "2"}}', "bad request: remove_hostfwd: bad arguments.id"),
])
def test_every_error_is_described_as_slirp4netns_does(request_text, desc):
    assert run(FakeController(), request_text) == api.encode({"error": {"desc": desc}})


def test_a_failed_add_says_why():
    ctl = FakeController()
    run(ctl, ADD_8080)
    reply = json.loads(run(ctl, ADD_8080))
    assert reply == {"error": {"desc": "bad request: add_hostfwd: cannot publish 0.0.0.0:8080/tcp: "
                                       "address already in use"}}


def test_ipv6_host_address_is_accepted_and_canonical():
    ctl = FakeController()
    assert run(ctl, '{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "0::1", '
                    '"host_port": 8092, "guest_port": 80}}') == b'{"return":{"id":1}}'
    assert ctl.forwards[1].host_addr == "::1"


def add(ctl, host_addr: str, host_port: int, guest_addr: str | None = None) -> bytes:
    args = {"proto": "tcp", "host_addr": host_addr, "host_port": host_port, "guest_port": 80}
    if guest_addr is not None:
        args["guest_addr"] = guest_addr
    return run(ctl, json.dumps({"execute": "add_hostfwd", "arguments": args}))


@pytest.mark.parametrize("given, kept", [
    (None, None),                              # each client reaches the guest over its own family
    ("10.0.2.100", "10.0.2.100"),              # slirp4netns's: every client over IPv4
    ("fd00::100", "fd00::100"),                # an extension: every client over IPv6
    ("FD00:0:0::100", "fd00::100"),            # canonical
])
def test_guest_addr_is_one_of_the_sandboxs_addresses(given, kept):
    ctl = FakeController()
    assert add(ctl, "::", 8095, given) == b'{"return":{"id":1}}'
    assert ctl.forwards[1] == PortSpec("tcp", "::", 8095, 80, kept)


@pytest.mark.parametrize("guest6, given", [
    ("fd00::100", "fd00::5"),                  # not the sandbox
    ("fd00::100", "::ffff:10.0.2.100"),        # not the same address, whatever it maps to
    (None, "fd00::100"),                       # IPv6 off: the sandbox has no IPv6 address
])
def test_other_guest_addresses_keep_slirp4netns_error(guest6, given):
    ctl = FakeController()
    ctl.guest_addr6 = guest6
    assert add(ctl, "::1", 8096, given) == \
        b'{"error":{"desc":"bad request: add_hostfwd: bad arguments.guest_addr"}}'
    assert ctl.forwards == {}


def test_list_shows_the_guest_address_each_forward_reaches():
    ctl = FakeController()
    add(ctl, "0.0.0.0", 8081)
    add(ctl, "::", 8082)
    add(ctl, "::1", 8083, "10.0.2.100")
    add(ctl, "127.0.0.1", 8084, "fd00::100")
    entries = json.loads(run(ctl, '{"execute": "list_hostfwd"}'))["entries"]
    assert [(e["host_addr"], e["guest_addr"]) for e in entries] == [
        ("0.0.0.0", "10.0.2.100"), ("::", "fd00::100"), ("::1", "10.0.2.100"),
        ("127.0.0.1", "fd00::100")]
    ctl.guest_addr6 = None                     # IPv6 off: every client reaches the IPv4 address
    assert api.shown_guest_addr(ctl, PortSpec("tcp", "::", 8082, 80)) == "10.0.2.100"


def test_a_new_execute_is_one_handler():
    async def count(ctl, req):
        return {"return": {"forwards": len(ctl.list_forwards())}}

    handlers = dict(api.HANDLERS, count_forwards=count)
    ctl = FakeController()
    run(ctl, ADD_8080)
    assert asyncio.run(api.handle(ctl, b'{"execute":"count_forwards"}', handlers)) == b'{"return":{"forwards":1}}'
    assert run(ctl, '{"execute":"count_forwards"}') == b'{"error":{"desc":"bad request: unknown execute"}}'


def test_stats_and_flows_are_read_only_views_of_the_controller():
    ctl = FakeController()
    ctl.stats = lambda: {"counters": {"tcp.flows.opened": 3}, "flows": {"tcp": 1}}
    ctl.flows = lambda: [{"proto": "tcp", "guest": "10.0.2.100:40000"}]
    assert run(ctl, '{"execute":"stats"}') == b'{"return":{"counters":{"tcp.flows.opened":3},"flows":{"tcp":1}}}'
    assert run(ctl, '{"execute":"flows"}') == b'{"return":{"flows":[{"proto":"tcp","guest":"10.0.2.100:40000"}]}}'


def test_server_over_a_unix_socket_one_request_per_connection(tmp_path):
    path = str(tmp_path / "api.sock")
    (tmp_path / "api.sock").write_bytes(b"")     # a regular file is never replaced
    with pytest.raises(FileExistsError):
        api.bind_socket(path)
    (tmp_path / "api.sock").unlink()
    ctl = FakeController()

    async def main():
        server = api.ApiServer(ctl, path)
        await server.start(api.bind_socket(path))
        loop = asyncio.get_running_loop()
        try:
            # the client library (used by `slirpy port`) half-closes after its request
            r1 = await loop.run_in_executor(None, api.request, path, json.loads(ADD_8080))
            # a client that keeps its write side open gets the answer as soon as the JSON is complete
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(b'{"execute": "list_')
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b'hostfwd"}')
            raw = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            return r1, raw
        finally:
            server.close()

    r1, raw = asyncio.run(main())
    assert r1 == {"return": {"id": 1}}
    assert raw.startswith(b'{"entries":[{"id":1,"proto":"tcp"')
    assert not (tmp_path / "api.sock").exists()     # removed on close


def test_list_hostfwd_marks_auto_entries_only():
    ctl = FakeController()
    run(ctl, ADD_8080)
    run(ctl, '{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "127.0.0.1", '
             '"host_port": 3000, "guest_port": 3000}}')
    ctl.auto = frozenset({2})
    assert run(ctl, '{"execute": "list_hostfwd"}') == (
        b'{"entries":[{"id":1,"proto":"tcp","host_addr":"0.0.0.0","host_port":8080,'
        b'"guest_addr":"10.0.2.100","guest_port":80},{"id":2,"proto":"tcp","host_addr":"127.0.0.1",'
        b'"host_port":3000,"guest_addr":"10.0.2.100","guest_port":3000,"auto":true}]}')
