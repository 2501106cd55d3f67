"""The `slirpy` command (console script and `python -m slirpy`).

`slirpy run ...` is read by runopts.parse and goes straight to runcmd.run, without importing
click (start-up time: the command waits for it), and with dataclasses imported without
inspect (import_dataclasses); everything else, and whatever runopts.parse
leaves to click, goes to cli.py's click commands.
"""

from __future__ import annotations

import sys


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["run"]:
        import_dataclasses()
        from . import runopts

        parsed = runopts.parse(args[1:])
        if parsed is not None:
            from . import runcmd

            runcmd.run(parsed.values, parsed.given, parsed.command)
    from .cli import main as click_main

    click_main()


def import_dataclasses() -> None:
    """Import dataclasses (which `slirpy run`'s modules use) without the `inspect` it imports:
    ~4 ms on the way to the command's start.  It reads inspect only for a class that has no
    docstring, and a stand-in imports the real inspect then (standin.forwarding)."""
    if "inspect" not in sys.modules:
        from . import standin

        standin.import_with("dataclasses", {"inspect": standin.forwarding("inspect")})
