"""`slirpy run`'s options, declared once, and a parser for them that does not import click.

Why: `slirpy run`'s time to its command's first instruction is what a user waits for at every
start, and importing click was the largest part of it (~11 ms of ~46: perf/NOTES.md, "Session
12").  cli.py builds the click command from `RUN_OPTIONS` (so `--help`, errors and every other
subcommand stay click's), and `parse` reads an argument list the way click's parser reads it
for that command, for the argument lists it can be sure of: it returns None for anything else
(`--help`, an unknown or malformed option, a missing value or command, a path option naming a
file that exists, which click.Path checks), and the caller then hands the whole command line
to click.  tests/unit/test_runopts.py holds both parsers equal on generated argument lists.
"""

from __future__ import annotations

import os

from .config import DEFAULT_CIDR, DEFAULT_CIDR6, DEFAULT_MTU, IPV6_MTU_MIN, PORT_SPEC_SYNTAX

# kinds: TEXT one value (the last given wins); PATH the same, click.Path(dir_okay=False);
# MANY a tuple of every value given; FLAG True when given; PAIR --x True / --no-x False, else None
TEXT, PATH, MANY, FLAG, PAIR = "text", "path", "many", "flag", "pair"


class RunOption:
    """One option of `slirpy run`: its spellings, where its value goes, and its help."""
    __slots__ = ("decls", "dest", "kind", "default", "metavar", "help", "show_default", "hidden")

    def __init__(self, decls: tuple[str, ...], dest: str, kind: str, help: str, *,
                 default: str | None = None, metavar: str | None = None,
                 show_default: bool = False, hidden: bool = False) -> None:
        self.decls = decls            # PAIR: ("--x", "--no-x")
        self.dest = dest
        self.kind = kind
        self.default = default
        self.metavar = metavar
        self.help = help
        self.show_default = show_default
        self.hidden = hidden


RUN_OPTIONS: tuple[RunOption, ...] = (
    RunOption(("--mtu",), "mtu", TEXT, "MTU of tap0 (576-65520).", default=str(DEFAULT_MTU),
              show_default=True),
    RunOption(("--cidr",), "cidr", TEXT, "Sandbox network; gateway is +2, DNS +3, guest +100 (prefix 1-25).",
              default=DEFAULT_CIDR, show_default=True),
    RunOption(("--ipv6", "--no-ipv6"), "ipv6", PAIR,
              f"IPv6 on tap0 beside IPv4 (guest ::100/64, gateway ::2, DNS ::3 of --cidr6). "
              f"Default: on, unless --mtu is below {IPV6_MTU_MIN}."),
    RunOption(("--cidr6",), "cidr6", TEXT, f"Sandbox IPv6 network, a /64 [default: {DEFAULT_CIDR6}].",
              metavar="PREFIX/64"),
    RunOption(("--no-offload",), "no_offload", FLAG, "Plain TAP without TSO/checksum offloads."),
    RunOption(("--busy-poll",), "busy_poll", TEXT,
              "After brief work on small batches, poll for up to US microseconds (e.g. 200) "
              "before sleeping, the window adapting to the gaps in the traffic: lower "
              "request/response latency for up to one core of CPU while such traffic lasts (bulk "
              "transfers do not poll); 0: off. Default: SLIRPY_BUSY_POLL_US, else off (always "
              "off with a single usable CPU).", metavar="US"),
    RunOption(("--allow-host-loopback",), "allow_host_loopback", FLAG,
              "Let the gateway addresses reach the host's 127.0.0.1 and ::1."),
    RunOption(("--map-subuids",), "map_subuids", FLAG,
              "Map the user's whole subuid/subgid range (needs newuidmap/newgidmap)."),
    RunOption(("--disable-dns",), "disable_dns", FLAG,
              "No DNS forwarder at network+3 (the sandbox keeps the host's resolv.conf)."),
    RunOption(("--dns-upstream",), "dns_upstream", TEXT,
              "Forward DNS to this resolver instead of the host's resolv.conf nameservers.",
              metavar="ADDR[:PORT]"),
    RunOption(("--resolv-conf",), "resolv_conf", TEXT,
              "Host resolv.conf to read upstreams and search domains from (testing).",
              default="/etc/resolv.conf", hidden=True),
    RunOption(("--stats-file",), "stats_file", PATH, "Write counters as JSON on exit."),
    RunOption(("--outbound-addr",), "outbound_addr", TEXT,
              "Bind outbound IPv4 host sockets to this address (or this interface's).", metavar="IPv4|IFNAME"),
    RunOption(("--outbound-addr6",), "outbound_addr6", TEXT,
              "Bind outbound IPv6 host sockets to this address (or this interface's global one).",
              metavar="IPv6|IFNAME"),
    RunOption(("--limit",), "limits", MANY,
              "Override a bound (repeatable): max_tcp_flows, max_half_open, max_udp_flows, "
              "max_icmp_flows, max_neighbours, tcp_rcv_buf, tcp_rcv_buf_total, tcp_snd_buf, "
              "tcp_snd_buf_total, tcp_ack_delay (0: off), tcp_time_wait, max_time_wait, "
              "udp_timeout, ... (see slirpy/configtypes.py Limits).", metavar="NAME=VALUE"),
    RunOption(("--impair",), "impair", TEXT,
              "Fault injection between tap0 and the stack, both directions: "
              "loss=P%,reorder=P%,dup=P%,corrupt=P%,delay=MS,seed=N.", metavar="SPEC"),
    RunOption(("-p", "--publish"), "publish", MANY,
              f"Publish a sandbox port on the host: {PORT_SPEC_SYNTAX}; ranges and "
              "[IPv6]:host:container work; repeatable. The sandbox sees each client's address. "
              "auto, auto/tcp, auto/udp: publish every port the sandbox binds, as it binds it.", metavar="SPEC"),
    RunOption(("--publish-auto-addr",), "publish_auto_addr", TEXT,
              "Host address of the -p auto ports [default: 127.0.0.1].", metavar="IP"),
    RunOption(("--api-socket",), "api_socket", PATH,
              "Serve slirp4netns's JSON API (add_hostfwd, list_hostfwd, remove_hostfwd) here."),
    RunOption(("--pcap",), "pcap", PATH, "Capture every frame crossing tap0, both ways, to this pcap file."),
    RunOption(("--pcap-max-size",), "pcap_max_size", TEXT,
              "Stop the capture before the file exceeds SIZE bytes (K/M/G suffixes).",
              default="1G", show_default=True, metavar="SIZE"),
    RunOption(("--name",), "name", TEXT,
              "Name of the sandbox (`slirpy ps`, `port add NAME`...) [default: a free adjective_noun].",
              metavar="NAME"),
    RunOption(("--network",), "network", MANY,
              "none: only lo; host: the user's own network namespace; sandbox:NAME: join NAME's; "
              "a network name: join that network (repeatable). Default: a private network.",
              metavar="NAME|none|host|sandbox:NAME"),
    RunOption(("--ip",), "ips", MANY, "The address on a --network NAME (pinned).", metavar="IP"),
    RunOption(("--network-alias",), "network_aliases", MANY,
              "Another name of the sandbox on its --network NAME (repeatable).", metavar="ALIAS"),
    RunOption(("--hostname",), "hostname", TEXT, "Host name inside (own UTS namespace) [default: --name].",
              metavar="NAME"),
    RunOption(("--add-host",), "add_hosts", MANY, "A line of the sandbox's /etc/hosts (repeatable).",
              metavar="NAME:IP"),
    RunOption(("--dns",), "dns", MANY,
              "Nameserver of the sandbox's /etc/resolv.conf instead of slirpy's (repeatable).", metavar="IP"),
    RunOption(("--no-sandbox",), "no_sandbox", FLAG,
              "Do not harden the network process (no seccomp filter, no emptied mount view, "
              "capabilities kept): for debugging."),
    RunOption(("--debug",), "debug", FLAG, "Debug logging."),
)

# `slirpy run` options that belong to a network's router (one for every member), not to one
# member: given with --network NAME they are refused (named.network_options), never ignored.
ROUTER_WIDE = frozenset({"mtu", "cidr", "ipv6", "cidr6", "no_offload", "busy_poll", "map_subuids", "disable_dns",
                         "dns_upstream", "outbound_addr", "outbound_addr6", "limits", "impair",
                         "api_socket", "pcap", "pcap_max_size", "stats_file", "no_sandbox"})


def router_wide_given(given: set[str]) -> dict[str, bool]:
    """{spelling ("--ipv6/--no-ipv6"): typed?} for the ROUTER_WIDE options (named.network_options)."""
    return {"/".join(o.decls): o.dest in given for o in RUN_OPTIONS if o.dest in ROUTER_WIDE}


def initial_values() -> dict[str, object]:
    """Every option's value when none is given (as click passes them to the command)."""
    return {o.dest: (() if o.kind == MANY else False if o.kind == FLAG else o.default) for o in RUN_OPTIONS}


def _spellings() -> dict[str, tuple[RunOption, object]]:
    """{spelling: (option, the value a FLAG or PAIR spelling sets)}."""
    table: dict[str, tuple[RunOption, object]] = {}
    for o in RUN_OPTIONS:
        for i, decl in enumerate(o.decls):
            table[decl] = (o, (i == 0) if o.kind == PAIR else True)
    return table


_BY_SPELLING = _spellings()


class Parsed:
    """What `parse` read: every option's value (click's keyword arguments), which ones were
    typed, and the command."""
    __slots__ = ("values", "given", "command")

    def __init__(self, values: dict[str, object], given: set[str], command: tuple[str, ...]) -> None:
        self.values = values
        self.given = given
        self.command = command


def parse(args: list[str]) -> Parsed | None:
    """`slirpy run ARGS` read as click reads it, or None where click must read it (see above)."""
    values = initial_values()
    given: set[str] = set()
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            break
        if arg[:1] != "-" or arg == "-":     # the command (options end at its first word)
            i -= 1
            break
        if arg.startswith("--"):
            spelling, eq, attached = arg.partition("=")
        elif arg[:2] == "-p" and len(arg) > 2:       # -pSPEC: the only short option with a value
            spelling, eq, attached = "-p", "=", arg[2:]
        else:
            spelling, eq, attached = arg, "", ""
        found = _BY_SPELLING.get(spelling)
        if found is None:
            return None                       # --help, a typo, an unknown option: click says
        option, flag_value = found
        if option.kind in (FLAG, PAIR):
            if eq:
                return None                   # --flag=VALUE: click's error
            value: object = flag_value
        else:
            if eq:
                text = attached
            elif i < len(args):
                text = args[i]
                i += 1
            else:
                return None                   # no value: click's error
            if option.kind == PATH and os.path.lexists(text):
                return None                   # click.Path checks what exists (a directory...)
            value = (*values[option.dest], text) if option.kind == MANY else text   # type: ignore[misc]
        values[option.dest] = value
        given.add(option.dest)
    command = tuple(args[i:])
    if not command:
        return None                           # click's "Missing argument"
    return Parsed(values, given, command)
