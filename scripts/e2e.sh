#!/usr/bin/env bash
# End-to-end test with the official Python `openai` package against `tollgate serve`.
# Installs `openai` if missing (fails loudly if it cannot: never skips), builds tollgate,
# and runs tests/e2e_openai.py, which starts the fake upstreams and `tollgate serve`
# on free loopback ports and stops them.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
die() { echo "e2e: ERROR: $*; the e2e test cannot run" >&2; exit 1; }
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (install Python 3)"
if ! "$PYTHON" -c 'import openai' 2>/dev/null; then
    echo "e2e: installing the openai package"
    if ! "$PYTHON" -m pip install --quiet 'openai>=1.40'; then
        # A system Python may refuse (PEP 668, "externally managed"): use a venv of our own.
        VENV="${CARGO_TARGET_DIR:-target}/tools/py"
        echo "e2e: pip refused; installing openai into a virtual environment at $VENV"
        "$PYTHON" -m venv "$VENV" \
            || die "cannot create a virtual environment (on Debian: apt-get install python3-venv)"
        "$VENV/bin/pip" install --quiet 'openai>=1.40' || die "cannot install the openai package from PyPI"
        PYTHON="$VENV/bin/python"
    fi
fi
"$PYTHON" -c 'import openai; print("e2e: openai", openai.__version__)'
cargo build --quiet --bin tollgate
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
TOLLGATE_BIN="$TARGET_DIR/debug/tollgate" timeout 300 "$PYTHON" tests/e2e_openai.py
