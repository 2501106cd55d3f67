"""API: the router requests of issue 15 (set_routes, set_names) and add_hostfwd to a member
address inside a routed prefix, against a controller that keeps a real Stack."""

from __future__ import annotations

import json
import random

import pytest

from slirpy.config import NetConfig
from slirpy.tcpip.stack import Stack

from tests.unit.test_api import FakeController, run


class RouterController(FakeController):
    def __init__(self):
        super().__init__()
        self.stack = Stack(NetConfig(), vnet_hdr=True, offload=True, rng=random.Random(1))

    def set_routes(self, prefixes):
        self.stack.set_routed(prefixes)

    def set_names(self, views, domains):
        self.stack.set_names(views, domains)

    def routes_to(self, ip: bytes) -> bool:
        return self.stack.routes_to(ip)


def request(ctl, execute, **arguments) -> dict:
    return json.loads(run(ctl, json.dumps({"execute": execute, "arguments": arguments})))


def test_set_routes_replaces_the_prefixes_and_add_hostfwd_takes_a_member_address():
    ctl = RouterController()
    assert request(ctl, "add_hostfwd", proto="tcp", host_port=8080, guest_addr="10.89.0.2",
                   guest_port=80) == {"error": {"desc": "bad request: add_hostfwd: bad arguments.guest_addr"}}
    assert request(ctl, "set_routes", prefixes=["10.89.0.0/24", "fd89:0:0:1::/64"]) == {"return": {}}
    assert [str(n) for n in ctl.stack.routed] == ["10.89.0.0/24", "fd89:0:0:1::/64"]
    assert request(ctl, "add_hostfwd", proto="tcp", host_port=8080, guest_addr="10.89.0.2",
                   guest_port=80) == {"return": {"id": 1}}
    assert request(ctl, "add_hostfwd", proto="udp", host_addr="::", host_port=8081,
                   guest_addr="fd89:0:0:1::5", guest_port=53) == {"return": {"id": 2}}
    assert ctl.forwards[1].guest_addr == "10.89.0.2"
    assert request(ctl, "add_hostfwd", proto="tcp", host_port=8082, guest_addr="10.89.1.2",
                   guest_port=80)["error"]["desc"] == "bad request: add_hostfwd: bad arguments.guest_addr"
    assert request(ctl, "set_routes", prefixes=[]) == {"return": {}}
    assert ctl.stack.routed == ()


@pytest.mark.parametrize("prefixes, says", [
    (None, "bad arguments.prefixes: a list of prefixes"),
    ("10.89.0.0/24", "bad arguments.prefixes: a list of prefixes"),
    (["10.89.0.1/24"], "bad arguments.prefixes: '10.89.0.1/24' is not an address prefix"),
    (["10.0.2.0/25"], "bad arguments.prefixes: 10.0.2.0/25: overlaps the sandbox network 10.0.2.0/24"),
])
def test_set_routes_names_the_bad_value_and_changes_nothing(prefixes, says):
    ctl = RouterController()
    ctl.set_routes(["10.89.3.0/24"])
    reply = request(ctl, "set_routes", prefixes=prefixes)
    assert reply["error"]["desc"].startswith("bad request: set_routes: " + says)
    assert [str(n) for n in ctl.stack.routed] == ["10.89.3.0/24"]


def test_set_names_replaces_the_views_and_names_the_bad_value():
    ctl = RouterController()
    assert request(ctl, "set_names", views={"10.89.0.2": {"db": ["10.89.0.3"]}},
                   domains=["front", "back"]) == {"return": {}}
    assert ctl.stack.dns_answer(bytes([10, 89, 0, 2]), bytes.fromhex(
        "0001 0100 0001 0000 0000 0000 02 6462 00 0001 0001"))[3] & 0x0F == 0
    bad = request(ctl, "set_names", views={"10.89.0.2": {"db": ["10.89.0.300"]}})
    assert bad == {"error": {"desc": "bad request: set_names: bad arguments.views.10.89.0.2.db: "
                                      "'10.89.0.300' is not an IP address"}}
    assert request(ctl, "set_names", views=[], domains=[])["error"]["desc"].startswith(
        "bad request: set_names: bad arguments.views: an object")
    assert request(ctl, "set_names", views={}, domains="front")["error"]["desc"] == (
        "bad request: set_names: bad arguments.domains: a list of names")
    assert ctl.stack.dns_answer(bytes([10, 89, 0, 2]), b"\x00") == b""   # unchanged: views kept
