"""Command line (click): every subcommand; `run` hands its options to runcmd.py.

`slirpy run` usually does not come here: entry.py reads its options with runopts.parse, without
importing click, and comes here only for what that leaves to click (`--help`, errors...).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import click

from . import __version__, runcmd
from .config import DEFAULT_CIDR, DEFAULT_MTU, PORT_SPEC_SYNTAX, ConfigError, parse_port_spec
from .launch import fail as _fail
from .runcmd import pcap_size
from .runopts import FLAG, MANY, PAIR, PATH, RUN_OPTIONS

if TYPE_CHECKING:  # pragma: no cover
    from .ps import Target


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        from .busypoll import describe as describe_busy_poll
        from .native import describe
        from .nativewaiter import describe as describe_waiter
        click.echo(f"slirpy, version {__version__}\nbuild: {describe()}\nwaiter: {describe_waiter()}\n"
                   f"busy poll: {describe_busy_poll()}")
        ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=_print_version, help="Show the version and the build (compiled or pure).")
def main() -> None:
    """Rootless userspace networking for Linux network namespaces."""


def _run_options(command: Callable[..., None]) -> Callable[..., None]:
    """`slirpy run`'s options (runopts.RUN_OPTIONS, which runopts.parse reads too) as click's."""
    for o in reversed(RUN_OPTIONS):         # the first option declared is the first in --help
        kw: dict[str, Any] = {"help": o.help, "metavar": o.metavar, "hidden": o.hidden,
                              "show_default": o.show_default}
        decls: tuple[str, ...]
        if o.kind == PAIR:
            decls, kw["default"] = ("/".join(o.decls), o.dest), None
        else:
            decls = (*o.decls, o.dest)
            if o.kind == FLAG:
                kw["is_flag"] = True
            elif o.kind == MANY:
                kw["multiple"] = True
            else:
                kw["default"] = o.default
                if o.kind == PATH:
                    kw["type"] = click.Path(dir_okay=False)
        command = click.option(*decls, **kw)(command)
    return command


@main.command(context_settings={"allow_interspersed_args": False})     # options end at COMMAND
@_run_options
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run(command: tuple[str, ...], **values: Any) -> None:
    """Run COMMAND in a new network namespace with internet access through slirpy."""
    ctx = click.get_current_context()
    given = {o.dest for o in RUN_OPTIONS
             if ctx.get_parameter_source(o.dest) == click.core.ParameterSource.COMMANDLINE}
    runcmd.run(values, given, command)


# ------------------------------------------------------------------ slirpy port add|ls|rm

_api_socket_option = click.option("--api-socket", type=click.Path(dir_okay=False),
                                  help="API socket of a running sandbox (instead of its NAME).")
_name_option = click.option("--name", "sandbox_name", metavar="NAME",
                            help="The running sandbox called NAME (`slirpy ps`); or NAME as first argument.")


def _target(api_socket: str | None, name: str | None, args: Iterable[str]) -> tuple[Target, list[str]]:
    from .ps import resolve

    return resolve(api_socket, name, list(args))


def _api_call(path: str, obj: dict) -> dict:
    from .api import ApiError, request

    try:
        reply = request(path, obj)
    except (OSError, ApiError) as e:
        _fail(f"API socket {path}: {getattr(e, 'strerror', None) or e}", 1)
    if not isinstance(reply, dict):
        _fail(f"API socket {path}: unexpected reply {reply!r}", 1)
    if "error" in reply:
        desc = reply["error"].get("desc") if isinstance(reply["error"], dict) else reply["error"]
        _fail(str(desc), 1)
    return reply


@main.group()
def port() -> None:
    """Publish, list and unpublish ports of a running sandbox (its --api-socket)."""


@port.command("add")
@_api_socket_option
@_name_option
@click.argument("specs", nargs=-1, required=True, metavar="[NAME] SPEC...")
def port_add(api_socket: str | None, sandbox_name: str | None, specs: tuple[str, ...]) -> None:
    """Publish SPEC ([IP:]HOST_PORT:CONTAINER_PORT[/tcp|/udp], ranges allowed); prints the ids."""
    target, rest = _target(api_socket, sandbox_name, specs)
    if not rest:
        _fail("no SPEC given: port add [NAME] SPEC...", 2)
    parsed = []
    for text in rest:
        try:
            one = parse_port_spec(text)
        except ConfigError as e:
            _fail(str(e), 2)
        if any(p.host_port == 0 for p in one):
            _fail(f"invalid port spec {text!r}: needs a host port ({PORT_SPEC_SYNTAX} with HOST_PORT)", 2)
        parsed.extend(one)
    guest_addr = target.guest_addr()      # a network member's: its first address
    for p in parsed:
        args = {"proto": p.proto, "host_addr": p.host_addr, "host_port": p.host_port, "guest_port": p.guest_port}
        reply = _api_call(target.api_socket, {"execute": "add_hostfwd", "arguments": (
            args if guest_addr is None else {**args, "guest_addr": guest_addr})})
        click.echo(reply.get("return", {}).get("id"))
    _note_ports(target)


def _port_entries(target: Target) -> list[dict]:
    reply = _api_call(target.api_socket, {"execute": "list_hostfwd"})
    # slirp4netns answers {"entries": [...]}; accept a {"return": {...}} wrapper too.
    entries = reply.get("entries", reply.get("return", {}).get("entries", []))
    mine = target.member_addresses()
    return [e for e in entries if e.get("guest_addr") in mine] if mine else entries


def _note_ports(target: Target) -> None:
    if target.rec is not None:
        from .ps import note_ports

        note_ports(target, _port_entries(target))


@port.command("ls")
@_api_socket_option
@_name_option
@click.option("--json", "as_json", is_flag=True, help="Print the API's entries as JSON.")
@click.argument("sandbox", required=False, metavar="[NAME]")
def port_ls(api_socket: str | None, sandbox_name: str | None, as_json: bool, sandbox: str | None) -> None:
    """List the published ports."""
    target, _ = _target(api_socket, sandbox_name, [sandbox] if sandbox else [])
    entries = _port_entries(target)
    if as_json:
        click.echo(json.dumps(entries))
        return
    from .ports import host_port_text

    click.echo(f"{'ID':>4}  {'PROTO':5}  {'HOST':<28}  GUEST")
    for e in entries:
        click.echo(f"{e['id']:>4}  {e['proto']:5}  {host_port_text(e['host_addr'], e['host_port']):<28}  "
                   f"{host_port_text(e['guest_addr'], e['guest_port'])}"
                   + ("  (auto)" if e.get("auto") else ""))       # published by -p auto


@port.command("rm")
@_api_socket_option
@_name_option
@click.argument("ids", nargs=-1, required=True, metavar="[NAME] ID...")
def port_rm(api_socket: str | None, sandbox_name: str | None, ids: tuple[str, ...]) -> None:
    """Unpublish the ports with these ids (existing connections continue)."""
    target, rest = _target(api_socket, sandbox_name, ids)
    if not rest or not all(i.isdigit() for i in rest):
        _fail(f"invalid port ids {' '.join(rest)!r}: expected numbers (from `slirpy port ls`)", 2)
    if target.member_addresses():
        known = {e.get("id") for e in _port_entries(target)}
        for fid in rest:
            if int(fid) not in known:
                _fail(f"port {fid} is not published for {target.rec.name if target.rec else ''}", 1)
    for fid in rest:
        _api_call(target.api_socket, {"execute": "remove_hostfwd", "arguments": {"id": int(fid)}})
    _note_ports(target)


@main.command()
@_api_socket_option
@_name_option
@click.option("--json", "as_json", is_flag=True, help="Print the reply as JSON.")
@click.argument("sandbox", required=False, metavar="[NAME]")
def stats(api_socket: str | None, sandbox_name: str | None, as_json: bool, sandbox: str | None) -> None:
    """Print the counters of a running sandbox (every drop has its own dotted name)."""
    target, _ = _target(api_socket, sandbox_name, [sandbox] if sandbox else [])
    data = _api_call(target.api_socket, {"execute": "stats"}).get("return", {})
    from .networks.cli import holder_rule_counters
    data.update(holder_rule_counters(target.api_socket))   # the networks' nft rules, on the holder's socket
    if as_json:
        click.echo(json.dumps(data, indent=1))
        return
    for section in ("flows", "host_sockets", "buffers"):
        for name, value in data.get(section, {}).items():
            click.echo(f"{section}.{name} {value}")
    if data.get("fds") is not None:
        click.echo(f"fds {data['fds']}")
    for name, value in data.get("counters", {}).items():
        click.echo(f"{name} {value}")
    for name, value in data.get("nft", {}).items():
        click.echo(f"nft.{name.replace(': ', '.').replace(' ', '_')} {value['packets']}")


@main.command()
@_api_socket_option
@_name_option
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@click.option("--watch", is_flag=True,
              help="Live view: refreshed in place, per-flow rates, busiest first (like `slirpy top`).")
@click.option("--interval", type=click.FloatRange(0.1, 3600), default=1.0, show_default=True,
              metavar="S", help="Seconds between two polls with --watch.")
@click.argument("sandbox", required=False, metavar="[NAME]")
def flows(api_socket: str | None, sandbox_name: str | None, as_json: bool, watch: bool, interval: float,
          sandbox: str | None) -> None:
    """List the live flows of a running sandbox, like `conntrack -L`."""
    target, _ = _target(api_socket, sandbox_name, [sandbox] if sandbox else [])
    if watch:
        if as_json:
            _fail("--watch and --json do not go together", 2)
        from .top import watch as _watch
        sys.exit(_watch(target.api_socket, interval))
    rows = _api_call(target.api_socket, {"execute": "flows"}).get("return", {}).get("flows", [])
    mine = target.member_addresses()     # a member: only its own flows of the holder's
    if mine:
        rows = [r for r in rows if r["guest"].rsplit(":", 1)[0].strip("[]") in mine]
    if as_json:
        click.echo(json.dumps(rows))
        return
    click.echo(f"{'PROTO':5} {'DIR':3} {'GUEST':21} {'HOST':21} {'STATE':12} {'TO-HOST':>11} "
               f"{'TO-GUEST':>11} {'AGE':>7}")
    for r in rows:
        unit = "" if r["unit"] == "bytes" else " dg"
        click.echo(f"{r['proto']:5} {r['direction']:3} {r['guest']:21} {r['host']:21} {r['state']:12} "
                   f"{str(r['to_host']) + unit:>11} {str(r['to_guest']) + unit:>11} {r['age']:>6}s")


# ------------------------------------------------------------------ slirpy pcap start|stop


@main.group("pcap")
def pcap_group() -> None:
    """Start and stop a packet capture of a running sandbox (its --api-socket)."""


@pcap_group.command("start")
@_api_socket_option
@_name_option
@click.option("--max-size", default="1G", show_default=True, metavar="SIZE",
              help="Stop the capture before the file exceeds SIZE bytes (K/M/G suffixes).")
@click.argument("args", nargs=-1, required=True, metavar="[NAME] FILE")
def pcap_start(api_socket: str | None, sandbox_name: str | None, max_size: str, args: tuple[str, ...]) -> None:
    """Capture every frame crossing the sandbox's TAP to FILE (pcap, nanosecond timestamps)."""
    import os

    target, rest = _target(api_socket, sandbox_name, args if len(args) > 1 else ())
    rest = rest if len(args) > 1 else list(args)
    if len(rest) != 1:
        _fail("expected one FILE: pcap start [NAME] FILE", 2)
    file = rest[0]
    size = pcap_size(max_size, "--max-size")
    _api_call(target.api_socket, {"execute": "pcap_start",
                           "arguments": {"path": os.path.abspath(file), "max_size": size}})


@pcap_group.command("stop")
@_api_socket_option
@_name_option
@click.argument("sandbox", required=False, metavar="[NAME]")
def pcap_stop(api_socket: str | None, sandbox_name: str | None, sandbox: str | None) -> None:
    """Stop the capture; prints the file, frames and bytes written."""
    target, _ = _target(api_socket, sandbox_name, [sandbox] if sandbox else [])
    info = _api_call(target.api_socket, {"execute": "pcap_stop"}).get("return", {})
    click.echo(f"{info.get('path')}: {info.get('frames')} frames, {info.get('bytes')} bytes")


@main.command()
@_api_socket_option
@_name_option
@click.option("--interval", type=click.FloatRange(0.1, 3600), default=1.0, show_default=True,
              metavar="S", help="Seconds between two polls.")
@click.argument("sandbox", required=False, metavar="[NAME]")
def top(api_socket: str | None, sandbox_name: str | None, interval: float, sandbox: str | None) -> None:
    """Live flow view of a running sandbox, busiest first (`slirpy flows --watch`; q or Ctrl-C quits)."""
    from .top import watch as _watch

    target, _ = _target(api_socket, sandbox_name, [sandbox] if sandbox else [])
    sys.exit(_watch(target.api_socket, interval))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
def ps(as_json: bool) -> None:
    """List the running sandboxes: name, pid, network mode, networks and addresses, ports, age."""
    from .ps import print_ps

    print_ps(as_json)


@main.command()
def doctor() -> None:
    """Check that this machine lets slirpy run, and say how to fix what does not."""
    from . import doctor as _doctor

    sys.exit(_doctor.print_report(sys.stdout))


@main.command()
@click.option("--size", default=64, show_default=True, help="MiB to move each way.")
@click.option("--mtu", default=str(DEFAULT_MTU), show_default=True)
@click.option("--no-offload", is_flag=True)
def selfcheck(size: int, mtu: str, no_offload: bool) -> None:
    """Serve data on host loopback and move it through a sandbox both ways, checking sha256."""
    from .selfcheck import run_selfcheck

    config = runcmd.build_config(mtu, DEFAULT_CIDR, not no_offload, True)
    sys.exit(run_selfcheck(config, size << 20))


@main.command("slirp4netns", add_help_option=False,
              context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def slirp4netns_cmd(args: tuple[str, ...]) -> None:
    """Drop-in for slirp4netns 1.2: serve a namespace someone else created (try: --help)."""
    from .slirp4netns import run as run_slirp4netns

    sys.exit(run_slirp4netns(list(args), "slirpy slirp4netns"))


from .networks.cli import network as _network_group  # noqa: E402  (slirpy network ...)

main.add_command(_network_group)


if __name__ == "__main__":  # pragma: no cover
    main()
