"""The light run's waiter and PID 1 as a small C program (slirpy/sandbox/waiter.c): where it is,
whether this run uses it, and how it is built.

An idle sandbox of a light `slirpy run` (every network mode but the private one; a network's
member) is two processes: the `slirpy run` process waiting for the command, and its PID
namespace's PID 1.  As a bare Python interpreter (sandbox/waiter.py) and `cat` they cost most of
what an idle member costs; as this program, linked statically, almost nothing.  setup.py builds
it with `build()` (this file is loaded by path there, so it imports only the standard library)
when a C compiler is present and SLIRPY_PURE is not set: next to the sources for an editable
install, into the package for `pip install .`.  Without it, or with SLIRPY_PURE=1 when running,
slirpy falls back to waiter.py and `cat`, which behave the same.  `helpers/_venv.sh` rebuilds a
missing or stale in-tree binary with ``python -m slirpy.nativewaiter build``.
"""

from __future__ import annotations

import os
import sys

PURE_ENV = "SLIRPY_PURE"
BINARY_NAME = "slirpy-waiter"
_SANDBOX_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox")
SOURCE = os.path.join(_SANDBOX_DIR, "waiter.c")
# Tried in order: musl's static binaries are the smallest; a static glibc one still maps no
# shared libraries; a dynamic one is the last resort.
FLAGS = ("-Os", "-s", "-Wall", "-Wextra")


def binary_path(package_dir: str = _SANDBOX_DIR) -> str:
    return os.path.join(package_dir, BINARY_NAME)


def to_use(environ: dict[str, str] | os._Environ[str] = os.environ,
           package_dir: str = _SANDBOX_DIR) -> str | None:
    """The native waiter's path if this run should use it: built, executable, not SLIRPY_PURE."""
    if environ.get(PURE_ENV, "") not in ("", "0"):
        return None
    path = binary_path(package_dir)
    return path if os.access(path, os.X_OK) and os.path.isfile(path) else None


def is_stale(package_dir: str = _SANDBOX_DIR) -> bool:
    """True when the in-tree binary is missing or older than waiter.c."""
    path, source = binary_path(package_dir), os.path.join(package_dir, "waiter.c")
    try:
        return os.path.getmtime(path) < os.path.getmtime(source)
    except OSError:
        return True


def compilers(environ: dict[str, str] | os._Environ[str] = os.environ) -> list[list[str]]:
    """Compiler command lines to try, best first (each: argv up to the flags)."""
    import shutil
    import sysconfig              # (here: every `slirpy run` imports this module, via supervisor)
    cc = environ.get("CC") or (sysconfig.get_config_var("CC") or "cc")
    cc_argv = cc.split()
    out = []
    if shutil.which("musl-gcc"):
        out.append(["musl-gcc", "-static"])
    if cc_argv and shutil.which(cc_argv[0]):
        out += [[*cc_argv, "-static"], cc_argv]
    return out


def why_not_built(environ: dict[str, str] | os._Environ[str] = os.environ) -> str | None:
    """Why setup.py builds no native waiter, or None to build it."""
    if environ.get(PURE_ENV, "") not in ("", "0"):
        return f"{PURE_ENV} is set"
    if not compilers(environ):
        return "no C compiler (install gcc)"
    return None


def build(dest_dir: str, source: str = SOURCE,
          environ: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """Compile `source` into DEST_DIR/slirpy-waiter with the first compiler that works (atomic:
    a running copy is never overwritten).  One line saying what happened; raises nothing."""
    import subprocess
    import tempfile
    why = why_not_built(environ)
    if why is not None:
        return f"no native waiter: {why}"
    os.makedirs(dest_dir, exist_ok=True)
    errors = []
    for argv in compilers(environ):
        fd, tmp = tempfile.mkstemp(prefix=".waiter-", dir=dest_dir)
        os.close(fd)
        try:
            r = subprocess.run([*argv, *FLAGS, "-o", tmp, source], capture_output=True, text=True,
                               timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            errors.append(f"{' '.join(argv)}: {e}")
            os.unlink(tmp)
            continue
        if r.returncode != 0:
            errors.append(f"{' '.join(argv)}: {(r.stderr.strip().splitlines() or ['failed'])[-1]}")
            os.unlink(tmp)
            continue
        os.chmod(tmp, 0o755)
        os.replace(tmp, binary_path(dest_dir))
        return f"native waiter built with {' '.join(argv)}"
    return f"no native waiter: compiling {source} failed ({'; '.join(errors)})"


def describe() -> str:
    """One line for `slirpy --version` and `doctor`: which waiter a light run uses."""
    path = to_use()
    if path is not None:
        from slirpy import native
        stale = " (STALE: waiter.c changed since the build)" if native.built_in_place() and is_stale() else ""
        return f"native ({path}){stale}"
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return f"Python (sandbox/waiter.py) and cat as PID 1 ({PURE_ENV}=1)"
    return "Python (sandbox/waiter.py) and cat as PID 1 (no native waiter built)"


def main(argv: list[str]) -> int:
    """`python -m slirpy.nativewaiter build [DEST_DIR]`: (re)build it (helpers/_venv.sh)."""
    if not argv or argv[0] != "build" or len(argv) > 2:
        print("usage: python -m slirpy.nativewaiter build [DEST_DIR]", file=sys.stderr)
        return 2
    line = build(argv[1] if len(argv) > 1 else _SANDBOX_DIR)
    print(f"slirpy: {line}", file=sys.stderr)
    return 0 if line.startswith("native waiter built") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
