"""What a caller passes to `Sandbox.start` and the one error every step of the package raises.

Its own module so that each module of the package can use them without importing another
one's processes: this imports nothing from the package.
"""

from __future__ import annotations

from slirpy.config import NetConfig
from slirpy.sandbox.errors import SandboxError  # noqa: F401 (the package's modules import it from here)

TYPE_CHECKING = False   # typing.TYPE_CHECKING without importing typing before a run's command starts
if TYPE_CHECKING:  # pragma: no cover
    from typing import Callable

# Where the sandbox's network comes from (see `modes`):
#   private  its own user+net ns with tap0 served by slirpy (`slirpy run`'s default)
#   none     its own user+net ns with only lo          host    no net ns of its own
#   join     the user+net (and UTS) ns of a running sandbox (`--network sandbox:NAME`)
#   member   a new net ns inside `userns_path`, set up by `member_setup` (named networks)
NET_MODES = ("private", "none", "host", "join", "member")


class SandboxOptions:
    """What a sandbox runs (argv), on which network (net, net_mode) and with what inside it.

    A plain class, not a dataclass: `slirpy run` builds one on its way to its command's start,
    where a dataclass's generated methods cost their compilation at import (issue 18)."""

    __slots__ = ("argv", "net", "map_subuids", "resolv_conf_text", "hosts_text", "hostname", "net_mode",
                 "join_pid", "userns_path", "member_setup")

    def __init__(self, argv: list[str], net: NetConfig, map_subuids: bool = False,
                 resolv_conf_text: str | None = None, hosts_text: str | None = None,
                 hostname: str | None = None, net_mode: str = "private", join_pid: int | None = None,
                 userns_path: str | None = None,
                 member_setup: Callable[[], list[str]] | None = None) -> None:
        self.argv = argv
        self.net = net
        self.map_subuids = map_subuids          # full subuid/subgid range via newuidmap/newgidmap
        self.resolv_conf_text = resolv_conf_text  # bind-mounted over /etc/resolv.conf inside, if set
        self.hosts_text = hosts_text            # likewise /etc/hosts
        self.hostname = hostname                # UTS name in a UTS namespace of its own (not with join)
        self.net_mode = net_mode
        self.join_pid = join_pid                # join: a process inside the namespaces to join
        self.userns_path = userns_path          # member: the user namespace to enter first
        # member: called in the supervisor once its namespaces exist, before the command runs;
        # returns warnings, raises SandboxError
        self.member_setup = member_setup

    def __repr__(self) -> str:
        return f"SandboxOptions({', '.join(f'{k}={getattr(self, k)!r}' for k in self.__slots__)})"
