"""The `slirpy` command (console script and `python -m slirpy`).

`slirpy run ...` is read by runopts.parse and goes straight to runcmd.run, without importing
click (start-up time: the command waits for it); everything else, and whatever runopts.parse
leaves to click, goes to cli.py's click commands.
"""

from __future__ import annotations

import sys


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["run"]:
        from . import runopts

        parsed = runopts.parse(args[1:])
        if parsed is not None:
            from . import runcmd
            from .exitnow import exit_now   # now: the sandbox may hide slirpy's files later

            try:
                runcmd.run(parsed.values, parsed.given, parsed.command)
            except SystemExit as done:      # the command's status, or slirpy's own error
                exit_now(done.code)         # without the interpreter's teardown (exitnow.py)
    from .cli import main as click_main

    click_main()

