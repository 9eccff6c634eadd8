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
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
PYTHON="${PYTHON:-python3}"
PACKAGES=('openai>=1.40' 'anthropic>=0.40')
[ "$PYTHON" != python3 ] || ensure python3
command -v "$PYTHON" >/dev/null 2>&1 || die "e2e: $PYTHON not found (install Python 3)"
if ! "$PYTHON" -c 'import openai, anthropic' 2>/dev/null; then
    echo "e2e: installing ${PACKAGES[*]}"
    if ! "$PYTHON" -m pip install --quiet "${PACKAGES[@]}"; then
        # A system Python may refuse (PEP 668, "externally managed") or have no pip: use a
        # venv of our own (Debian's python3 needs python3-venv for it).
        VENV="${CARGO_TARGET_DIR:-target}/tools/py"
        echo "e2e: pip refused; installing them into a virtual environment at $VENV"
        if [ ! -x "$VENV/bin/python" ] && ! "$PYTHON" -m venv "$VENV"; then
            rm -rf "$VENV"
            apt_install python3-venv
            "$PYTHON" -m venv "$VENV" || die "e2e: cannot create a virtual environment at $VENV"
        fi
        "$VENV/bin/pip" install --quiet "${PACKAGES[@]}" || die "e2e: cannot install ${PACKAGES[*]} from PyPI"
        PYTHON="$VENV/bin/python"
    fi
fi
"$PYTHON" -c 'import openai, anthropic; print("e2e: openai", openai.__version__, "anthropic", anthropic.__version__)'
cargo build --quiet --bin tollgate --example fake_upstreams
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
TOLLGATE_BIN="$TARGET_DIR/debug/tollgate" timeout 300 "$PYTHON" tests/e2e_openai.py
TOLLGATE_BIN="$TARGET_DIR/debug/tollgate" FAKES_BIN="$TARGET_DIR/debug/examples/fake_upstreams" \
    timeout 300 "$PYTHON" tests/e2e_providers.py
