#!/usr/bin/env bash
# End-to-end tests with clients nobody here wrote, against `tollgate serve`:
# - tests/e2e_openai.py: the official Python `openai` package, with Python fake upstreams;
# - tests/e2e_providers.py: `openai` through Anthropic and Gemini upstreams, and the official
#   `anthropic` package against the relay's /v1/messages, with the strict Rust fakes of
#   `examples/fake_upstreams.rs`.
# Installs `openai` and `anthropic` if missing (fails loudly if it cannot: never skips),
# builds tollgate and the fakes, and runs both; each starts what it needs on free loopback
# ports and stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
PACKAGES=('openai>=1.40' 'anthropic>=0.40')
die() { echo "e2e: ERROR: $*; the e2e test cannot run" >&2; exit 1; }
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (install Python 3)"
if ! "$PYTHON" -c 'import openai, anthropic' 2>/dev/null; then
    echo "e2e: installing ${PACKAGES[*]}"
    if ! "$PYTHON" -m pip install --quiet "${PACKAGES[@]}"; then
        # A system Python may refuse (PEP 668, "externally managed"): use a venv of our own.
        VENV="${CARGO_TARGET_DIR:-target}/tools/py"
        echo "e2e: pip refused; installing them into a virtual environment at $VENV"
        [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV" \
            || die "cannot create a virtual environment (on Debian: apt-get install python3-venv)"
        "$VENV/bin/pip" install --quiet "${PACKAGES[@]}" || die "cannot install ${PACKAGES[*]} from PyPI"
        PYTHON="$VENV/bin/python"
    fi
fi
"$PYTHON" -c 'import openai, anthropic; print("e2e: openai", openai.__version__, "anthropic", anthropic.__version__)'
cargo build --quiet --bin tollgate --example fake_upstreams
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
TOLLGATE_BIN="$TARGET_DIR/debug/tollgate" timeout 300 "$PYTHON" tests/e2e_openai.py
TOLLGATE_BIN="$TARGET_DIR/debug/tollgate" FAKES_BIN="$TARGET_DIR/debug/examples/fake_upstreams" \
    timeout 300 "$PYTHON" tests/e2e_providers.py
