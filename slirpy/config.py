"""Configuration: frozen values parsed once at start-up, read everywhere.

The values (NetConfig, Limits, PortSpec, AutoPublish) are configtypes.py's, re-exported here;
this module parses them from the command line's text.  Nothing here does I/O. `NetConfig`
follows slirp4netns's addressing: in a network N/len the gateway is N+2, the DNS forwarder N+3
and the guest N+100.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

# The values (re-exported: import them from here) and the defaults they hold.
from .configtypes import (DEFAULT_AUTO_ADDR, DEFAULT_CIDR, DEFAULT_CIDR6, DEFAULT_MTU, PORT_PROTOS,
                          AutoPublish, Limits, NetConfig, PortSpec)

MTU_MIN = 576           # RFC 791 minimum reassembly size; below it IPv4 is not usable
MTU_MAX = 65520         # largest MTU a TAP device takes (same limit as slirp4netns)
IPV6_MTU_MIN = 1280     # RFC 8200 §5: below it a link cannot carry IPv6 (Linux turns it off)
CIDR_PREFIX_MIN = 1
CIDR_PREFIX_MAX = 25    # the guest is network+100: a /25 is the smallest that still holds it



class ConfigError(ValueError):
    """A user-supplied value is out of range; the message names the value and the range.

    `rule` names the check that failed where a CLI words it its own way (slirp4netns mode
    prints slirp4netns's messages): "cidr.syntax", "cidr.address", "cidr.prefix",
    "cidr.host_bits", "mtu.syntax", "mtu.range"; empty for the others.
    """

    def __init__(self, message: str, rule: str = "") -> None:
        super().__init__(message)
        self.rule = rule


def parse_mtu(value: str | int) -> int:
    try:
        mtu = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"invalid MTU {value!r}: must be an integer from {MTU_MIN} to {MTU_MAX}",
                          "mtu.syntax") from None
    if not MTU_MIN <= mtu <= MTU_MAX:
        raise ConfigError(f"invalid MTU {mtu}: must be from {MTU_MIN} to {MTU_MAX}", "mtu.range")
    return mtu


_CIDR_FORM = re.compile(r"((?:[0-9]{1,3}\.){3}[0-9]{1,3})/([0-9]{1,2})")   # slirp4netns's


def _cidr_error(value: str, rule: str, address: str = "") -> ConfigError:
    reason = {
        "syntax": f"must be an IPv4 network such as {DEFAULT_CIDR} with a prefix length from "
                  f"{CIDR_PREFIX_MIN} to {CIDR_PREFIX_MAX}",
        "address": f"{address} is not an IPv4 address",
        "prefix": f"prefix length must be from {CIDR_PREFIX_MIN} to {CIDR_PREFIX_MAX}",
        "host_bits": f"must be a network address (no host bits), such as {DEFAULT_CIDR}",
    }[rule]
    return ConfigError(f"invalid CIDR {value!r}: {reason}", f"cidr.{rule}")


def parse_cidr(value: str, *, exact: bool = False) -> ipaddress.IPv4Network:
    """The sandbox network: an IPv4 network with a prefix length from CIDR_PREFIX_MIN to
    CIDR_PREFIX_MAX. Anything `ipaddress` reads as a network, host bits dropped; `exact`
    (slirp4netns's rules) takes only a dotted quad, "/", a decimal prefix, and no host bits."""
    if not exact:
        try:
            net = ipaddress.IPv4Network(value, strict=False)
        except (ValueError, TypeError):
            raise _cidr_error(value, "syntax") from None
        if not CIDR_PREFIX_MIN <= net.prefixlen <= CIDR_PREFIX_MAX:
            raise _cidr_error(value, "prefix")
        return net
    m = _CIDR_FORM.fullmatch(value)
    if m is None:
        raise _cidr_error(value, "syntax")
    try:
        address = ipaddress.IPv4Address(m.group(1))
    except ValueError:
        raise _cidr_error(value, "address", m.group(1)) from None
    if not CIDR_PREFIX_MIN <= int(m.group(2)) <= CIDR_PREFIX_MAX:
        raise _cidr_error(value, "prefix")
    net = ipaddress.IPv4Network(value, strict=False)
    if net.network_address != address:
        raise _cidr_error(value, "host_bits")
    return net


def parse_cidr6(value: str) -> ipaddress.IPv6Network:
    """`--cidr6`: an IPv6 /64 network without host bits (SLAAC and the guest's ::100 need a /64)."""
    text = value.strip()
    try:
        loose = ipaddress.IPv6Network(text, strict=False)
    except ValueError:
        raise ConfigError(f"invalid IPv6 CIDR {value!r}: must be an IPv6 network such as "
                          f"{DEFAULT_CIDR6}") from None
    if loose.prefixlen != 64:
        raise ConfigError(f"invalid IPv6 CIDR {value!r}: prefix length must be 64")
    if ipaddress.IPv6Interface(text).ip != loose.network_address:
        raise ConfigError(f"invalid IPv6 CIDR {value!r}: must be a network address (no host "
                          f"bits), such as {DEFAULT_CIDR6}")
    if loose.is_multicast or loose.is_loopback or loose.is_link_local:
        raise ConfigError(f"invalid IPv6 CIDR {value!r}: must be a unicast network that is not "
                          "link-local (a unique local fd00::/8 prefix suits a sandbox)")
    return loose


def parse_dns_upstream(value: str) -> tuple[str, int]:
    """`ADDR[:PORT]` (IPv6 as `[ADDR]:PORT` or bare) -> (addr, port); port defaults to 53."""
    text = value.strip()
    addr, port = text, "53"
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ConfigError(f"invalid DNS upstream {value!r}: missing ']'")
        addr, rest = text[1:end], text[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ConfigError(f"invalid DNS upstream {value!r}: expected ADDR[:PORT]")
            port = rest[1:]
    elif text.count(":") == 1:
        addr, port = text.split(":")
    try:
        ip = ipaddress.ip_address(addr)
        portnum = int(port)
    except ValueError:
        raise ConfigError(f"invalid DNS upstream {value!r}: expected an IP address with an optional :PORT") from None
    if not 1 <= portnum <= 65535:
        raise ConfigError(f"invalid DNS upstream {value!r}: port must be from 1 to 65535")
    return str(ip), portnum


def resolve_outbound_addr(value: str) -> str:
    """`--outbound-addr`: an IPv4 address or an interface name (its first IPv4 address), checked
    to be bindable here. ConfigError says what is wrong."""
    import fcntl
    import socket
    import struct

    try:
        addr = str(ipaddress.IPv4Address(value))
    except ValueError:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            try:
                raw = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", value.encode()[:15]))  # SIOCGIFADDR
            except OSError:
                raise ConfigError(f"invalid --outbound-addr {value!r}: neither an IPv4 address nor "
                                  "an interface with one") from None
        addr = socket.inet_ntoa(raw[20:24])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((addr, 0))
        except OSError as e:
            raise ConfigError(f"invalid --outbound-addr {value!r}: cannot bind {addr} here "
                              f"({e.strerror})") from None
    return addr


def resolve_outbound_addr6(value: str) -> str:
    """`--outbound-addr6`: an IPv6 address or an interface name (its first global IPv6
    address, from /proc/net/if_inet6), checked to be bindable here."""
    import socket

    try:
        addr = str(ipaddress.IPv6Address(value))
    except ValueError:
        addr = ""
        try:
            with open("/proc/net/if_inet6") as f:
                for line in f:
                    hexaddr, _idx, _plen, scope, _flags, name = line.split()
                    if name == value and int(scope, 16) == 0:
                        addr = str(ipaddress.IPv6Address(bytes.fromhex(hexaddr)))
                        break
        except OSError:
            pass
        if not addr:
            raise ConfigError(f"invalid --outbound-addr6 {value!r}: neither an IPv6 address nor "
                              "an interface with a global one")
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        try:
            s.bind((addr, 0))
        except OSError as e:
            raise ConfigError(f"invalid --outbound-addr6 {value!r}: cannot bind {addr} here "
                              f"({e.strerror})") from None
    return addr


_MAY_BE_ZERO = frozenset({"tcp_ack_delay"})     # limits where 0 means "off"


def parse_limits(items: Iterable[str], base: Limits | None = None) -> Limits:
    """Limits from `NAME=VALUE` strings (`--limit max_half_open=64`); ConfigError names the bad one."""
    base = base or Limits()
    known = Limits.__slots__
    changes = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in known:
            raise ConfigError(f"invalid --limit {item!r}: must be NAME=VALUE with NAME one of "
                              + ", ".join(sorted(known)))
        kind = type(getattr(base, name))
        try:
            v = kind(value)
        except ValueError:
            raise ConfigError(f"invalid --limit {item!r}: {name} takes a positive "
                              f"{'number' if kind is float else 'whole number'}") from None
        if name in _MAY_BE_ZERO:
            if v < 0:
                raise ConfigError(f"invalid --limit {item!r}: {name} must be 0 or more")
        elif not v > 0:
            raise ConfigError(f"invalid --limit {item!r}: {name} must be greater than 0")
        changes[name] = v
    return base.replace(**changes) if changes else base


# --- published ports -----------------------------------------------------------------------

DEFAULT_HOST_ADDR = "0.0.0.0"
PORT_SPEC_SYNTAX = "[IP:][HOST_PORT:]CONTAINER_PORT[/tcp|/udp]"


def _port_range(text: str, what: str, spec: str, allow_zero: bool = False) -> range:
    def one(t: str) -> int:
        if not t.isdigit():
            raise ConfigError(f"invalid port spec {spec!r}: {what} {t!r} is not a number "
                              f"(expected {PORT_SPEC_SYNTAX})")
        n = int(t)
        if not 1 <= n <= 65535:
            raise ConfigError(f"invalid port spec {spec!r}: {what} {n} must be from 1 to 65535")
        return n

    lo_s, sep, hi_s = text.partition("-")
    lo = one(lo_s)
    hi = one(hi_s) if sep else lo
    if hi < lo:
        raise ConfigError(f"invalid port spec {spec!r}: {what} range {text} ends before it starts")
    return range(lo, hi + 1)


def parse_auto_spec(value: str) -> tuple[str, ...] | None:
    """The protocols of `auto`, `auto/tcp`, `auto/udp` (`auto` alone: both); None when `value`
    is not an auto spec (an ordinary `-p` then)."""
    head, sep, proto = value.strip().lower().partition("/")
    if head != "auto":
        return None
    if not sep:
        return PORT_PROTOS
    if proto not in PORT_PROTOS:
        raise ConfigError(f"invalid port spec {value!r}: protocol {proto!r} must be tcp or udp "
                          "(auto, auto/tcp or auto/udp)")
    return (proto,)


def parse_auto_addr(value: str) -> str:
    """`--publish-auto-addr`: an IPv4 or IPv6 address, canonical (brackets allowed)."""
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ConfigError(f"invalid --publish-auto-addr {value!r}: must be an IPv4 or IPv6 "
                          "address of this host") from None


def parse_port_spec(value: str) -> list[PortSpec]:
    """docker/podman `-p` syntax: `[IP:][HOST_PORT:]CONTAINER_PORT[/tcp|/udp]`.

    Ports may be ranges (`8000-8010:8000-8010`, equal lengths); an IPv6 host address is
    bracketed (`[::1]:8080:80`). Without HOST_PORT every container port gets a free host
    port (0). Returns one PortSpec per port.
    """
    spec = value
    text = value.strip()
    if not text:
        raise ConfigError(f"invalid port spec {spec!r}: empty (expected {PORT_SPEC_SYNTAX})")
    proto = "tcp"
    if "/" in text:
        text, proto = text.rsplit("/", 1)
        proto = proto.lower()
        if proto not in PORT_PROTOS:
            raise ConfigError(f"invalid port spec {spec!r}: protocol {proto!r} must be tcp or udp")
    if text.startswith("["):
        addr, host_text, guest_text = _split_bracketed(text, spec)
    else:
        addr, host_text, guest_text = _split_plain(text, spec)
    guest = _port_range(guest_text, "container port", spec)
    if host_text:
        host = _port_range(host_text, "host port", spec)
        if len(host) != len(guest):
            raise ConfigError(f"invalid port spec {spec!r}: host range {host_text} and container "
                              f"range {guest_text} differ in length")
        pairs: Iterable[tuple[int, int]] = zip(host, guest)
    else:
        pairs = ((0, g) for g in guest)
    return [PortSpec(proto, addr, h, g) for h, g in pairs]


def _split_bracketed(text: str, spec: str) -> tuple[str, str, str]:
    """`[IPv6]:HOST_PORT:CONTAINER_PORT` -> (canonical address, host ports, container ports)."""
    end = text.find("]")
    if end < 0:
        raise ConfigError(f"invalid port spec {spec!r}: missing ']' after the IPv6 address")
    addr_text, rest = text[1:end], text[end + 1:]
    if not rest.startswith(":"):
        raise ConfigError(f"invalid port spec {spec!r}: expected ':' after ']' "
                          f"(expected {PORT_SPEC_SYNTAX})")
    parts = [addr_text] + rest[1:].split(":")
    if len(parts) != 3:
        raise ConfigError(f"invalid port spec {spec!r}: expected [IPv6]:HOST_PORT:CONTAINER_PORT")
    try:
        addr = str(ipaddress.IPv6Address(addr_text))
    except ValueError:
        raise ConfigError(f"invalid port spec {spec!r}: {addr_text!r} is not an IPv6 address") from None
    return addr, parts[1], parts[2]


def _split_plain(text: str, spec: str) -> tuple[str, str, str]:
    """`[IPv4:][HOST_PORT:]CONTAINER_PORT` -> (address, host ports or "", container ports)."""
    parts = text.split(":")
    if len(parts) > 3:
        raise ConfigError(f"invalid port spec {spec!r}: too many ':' (an IPv6 address must be "
                          f"bracketed, e.g. [::1]:8080:80)")
    if len(parts) == 2:
        return DEFAULT_HOST_ADDR, parts[0], parts[1]
    if len(parts) == 1:
        return DEFAULT_HOST_ADDR, "", parts[0]
    addr_text, host_text, guest_text = parts
    addr = DEFAULT_HOST_ADDR
    if addr_text:
        try:
            addr = str(ipaddress.IPv4Address(addr_text))
        except ValueError:
            raise ConfigError(f"invalid port spec {spec!r}: {addr_text!r} is not an IPv4 "
                              f"address") from None
    return addr, host_text, guest_text


# --- one NetConfig from command-line values -------------------------------------------------

def build_net_config(*, cidr: str = DEFAULT_CIDR, exact_cidr: bool = False, mtu: str | int = DEFAULT_MTU,
                 offload: bool = True, allow_host_loopback: bool = False,
                 guest_mac: bytes | None = None, dns_enabled: bool = True,
                 dns_upstream: str | None = None, resolv_conf: str = "/etc/resolv.conf",
                 publish: Iterable[str] = (), limits: Iterable[str] = (),
                 outbound_addr: str | None = None, ipv6: bool | None = None,
                 cidr6: str = DEFAULT_CIDR6, outbound_addr6: str | None = None,
                 publish_auto_addr: str | None = None) -> NetConfig:
    """The NetConfig every CLI builds (`slirpy run`, `slirpy selfcheck`, slirp4netns mode)
    from its option values, each through its parser above. Raises the first ConfigError, in
    this order: ports, limits, outbound address, CIDR (`exact_cidr`: see parse_cidr), MTU,
    DNS upstream, IPv6 CIDR, IPv6 outbound address; each CLI prints it its own way.

    `ipv6`: True turns IPv6 on (an MTU below 1280 is then an error), False off, None (the
    default) on unless the MTU is below 1280, as Linux does for an interface."""
    ports, auto = _split_publish(publish, publish_auto_addr)
    mtu_value = parse_mtu(mtu)
    network6 = parse_cidr6(cidr6) if ipv6 is not False else None
    if mtu_value < IPV6_MTU_MIN and network6 is not None:
        if ipv6:
            raise ConfigError(f"invalid MTU {mtu_value} with IPv6: IPv6 needs an MTU of at least "
                              f"{IPV6_MTU_MIN} (or turn IPv6 off)", "mtu.ipv6")
        network6 = None
    return NetConfig(
        limits=parse_limits(limits),
        outbound_addr=resolve_outbound_addr(outbound_addr) if outbound_addr is not None else None,
        ports=ports,
        auto_publish=auto,
        network=parse_cidr(cidr, exact=exact_cidr),
        mtu=mtu_value,
        offload=offload,
        allow_host_loopback=allow_host_loopback,
        guest_mac=guest_mac,
        dns_enabled=dns_enabled,
        dns_upstream=parse_dns_upstream(dns_upstream) if dns_upstream else None,
        resolv_conf=resolv_conf,
        network6=network6,
        outbound_addr6=(resolve_outbound_addr6(outbound_addr6)
                        if outbound_addr6 is not None and network6 is not None else None),
    )


def _split_publish(publish: Iterable[str], auto_addr: str | None
                   ) -> tuple[tuple[PortSpec, ...], AutoPublish | None]:
    """`-p` values -> (the explicit ports, the AutoPublish of the `auto` ones or None)."""
    ports: list[PortSpec] = []
    protos: set[str] = set()
    for text in publish:
        auto = parse_auto_spec(text)
        if auto is None:
            ports.extend(parse_port_spec(text))
        else:
            protos.update(auto)
    addr = parse_auto_addr(auto_addr) if auto_addr is not None else None
    if not protos:
        if addr is not None:
            raise ConfigError(f"invalid --publish-auto-addr {auto_addr!r}: needs -p auto "
                              "(or auto/tcp, auto/udp)")
        return tuple(ports), None
    return tuple(ports), AutoPublish(tuple(p for p in PORT_PROTOS if p in protos),
                                     addr or DEFAULT_AUTO_ADDR)
