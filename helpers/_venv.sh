# Sourced by helpers/test and helpers/demo: make sure the dev venv exists and is current.
#   SLIRPY_VENV   venv directory (default: <repo>/.venv)
# The venv is (re)built from /usr/bin/python3 with `pip install -e .[test]` when it is
# missing, broken, or pyproject.toml changed since the last install (a stamp file records
# pyproject.toml's sha256).  Sets VENV and VENV_PY.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SLIRPY_VENV:-$REPO/.venv}"
VENV_PY="$VENV/bin/python"
BASE_PY="${SLIRPY_BASE_PYTHON:-/usr/bin/python3}"

ensure_venv() {
    local want stamp="$VENV/.slirpy-install-stamp"
    want="$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1) $REPO"
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
