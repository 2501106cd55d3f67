# Sourced by helpers/test and helpers/demo: make sure the dev venv exists and is current.
#   SLIRPY_VENV   venv directory (default: <repo>/.venv)
#   SLIRPY_PURE   1: install and run the pure-Python build (no mypyc compile, see setup.py)
# The venv is (re)built from /usr/bin/python3 with `pip install -e .[test]` when it is
# missing, broken, or pyproject.toml changed since the last install (a stamp file records
# pyproject.toml's sha256).  The editable install compiles slirpy's hot modules in place
# (setup.py); that step is re-run when a compiled module's .py is newer than its build, or the
# compiled files are missing (a fresh copy of the tree).  Sets VENV, VENV_PY and
# SLIRPY_EXPECT_BUILD (compiled or pure: what tests/unit/test_native.py checks is running).
# The compiled build also gets the native waiter of light runs (slirpy/sandbox/waiter.c, see
# slirpy/nativewaiter.py), rebuilt in place when it is missing or older than its source.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SLIRPY_VENV:-$REPO/.venv}"
VENV_PY="$VENV/bin/python"
BASE_PY="${SLIRPY_BASE_PYTHON:-/usr/bin/python3}"

pure_build() { [[ -n "${SLIRPY_PURE:-}" && "${SLIRPY_PURE}" != 0 ]]; }

# Exit 0 when the tree holds a compiled build that is not older than its sources.
compiled_build_current() {
    (cd "$REPO" && "$VENV_PY" -c 'import sys
from slirpy import native
c = native.compiled_modules()
sys.exit(0 if c and not native.stale_modules(c) else 1)') 2>/dev/null
}

# A C compiler and the Python headers (helpers/setup-host installs both): what setup.py needs.
can_compile() {
    command -v "$("$VENV_PY" -c 'import sysconfig; print((sysconfig.get_config_var("CC") or "cc").split()[0])')" \
        >/dev/null && "$VENV_PY" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'
}

ensure_venv() {
    ensure_venv_installed || return 1
    export SLIRPY_EXPECT_BUILD=pure
    pure_build && return 0
    if ! compiled_build_current && can_compile; then
        echo "helpers: compiling slirpy's hot modules with mypyc (pip install -e ., ~2 min)" >&2
        (cd "$REPO" && "$VENV_PY" -m pip install --quiet --disable-pip-version-check --no-deps -e .) \
            || return 1
    fi
    ensure_native_waiter || return 1
    if compiled_build_current; then
        export SLIRPY_EXPECT_BUILD=compiled
    elif [[ "${CI:-}" == true ]]; then
        echo "helpers: the compiled build failed (see above); CI needs it" >&2
        return 1
    else
        echo "helpers: WARNING: no compiled build (no C compiler or python3-dev?): pure Python" >&2
    fi
}

# The light run's waiter as a small C program: one compiler call (about a second), not pip.
ensure_native_waiter() {
    (cd "$REPO" && "$VENV_PY" -c 'import sys
from slirpy import nativewaiter as n
sys.exit(0 if not n.is_stale() or n.why_not_built() else 1)') 2>/dev/null && return 0
    echo "helpers: building the native waiter (slirpy/sandbox/waiter.c)" >&2
    (cd "$REPO" && "$VENV_PY" -m slirpy.nativewaiter build) && return 0
    if [[ "${CI:-}" == true ]]; then
        echo "helpers: the native waiter failed to build (see above); CI needs it" >&2
        return 1
    fi
    echo "helpers: WARNING: no native waiter: light runs use slirpy/sandbox/waiter.py" >&2
}

ensure_venv_installed() {
    local want stamp="$VENV/.slirpy-install-stamp"
    want="$(sha256sum "$REPO/pyproject.toml" "$REPO/setup.py" | cut -d' ' -f1 | tr '\n' ' ')$REPO"
    if [[ -x "$VENV_PY" ]] && [[ -f "$stamp" ]] && [[ "$(cat "$stamp")" == "$want" ]] \
        && "$VENV_PY" -c 'import slirpy, pytest, hypothesis, mypy, matplotlib' 2>/dev/null; then
        return 0
    fi
    if [[ ! -x "$BASE_PY" ]]; then
        echo "helpers: $BASE_PY not found; run: sudo helpers/setup-host" >&2
        return 1
    fi
    if [[ ! -x "$VENV_PY" ]]; then
        echo "helpers: creating venv $VENV" >&2
        "$BASE_PY" -m venv "$VENV" || {
            echo "helpers: python3 -m venv failed (missing python3-venv? run: sudo helpers/setup-host)" >&2
            return 1
        }
    fi
    echo "helpers: installing slirpy (editable) with test extras into $VENV" >&2
    (cd "$REPO" && "$VENV_PY" -m pip install --quiet --disable-pip-version-check -e ".[test]") || return 1
    echo "$want" > "$stamp"
}
