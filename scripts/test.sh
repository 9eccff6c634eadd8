#!/usr/bin/env bash
# THE test command (README): `bash scripts/test.sh`.
#
# 1. cargo test --all-targets: unit, integration (incl. tests/schema.rs and the no-panic
#    fuzz stand-in tests/no_panic.rs), benches in test mode (each benchmark run once);
# 2. cargo test --doc, then scripts/e2e.sh (the Python `openai` and `anthropic` packages against
#    `tollgate serve`; installs them from PyPI if missing, fails loudly if it cannot);
# 3. cargo test --features redis --test redis_shared --test serve_reload, against a real
#    redis-server (installed with apt-get when missing; fails loudly when it cannot be);
# 4. taplo: every example policy against schemas/policy.schema.json, and a probe that
#    taplo does reject a bad policy, through --schema and through the `#:schema` directive;
#    the shipped scenarios against schemas/scenario.schema.json;
# 5. `tollgate simulate --format html` opened in headless Chromium (installed with apt-get
#    when missing): no console error, charts drawn; and a probe page with an error is caught.
#
# Installs what is missing (taplo, from npm, into target/tools/, and npm itself with apt-get
# as root) and fails loudly when it cannot: nothing is skipped silently.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TAPLO_VERSION=0.7.0   # npm @taplo/cli (taplo 0.9)

# shellcheck source=scripts/lib.sh
source scripts/lib.sh

# --- tools -------------------------------------------------------------------------------
if ! command -v taplo >/dev/null 2>&1; then
    tools="$ROOT/target/tools"
    if [ ! -x "$tools/node_modules/.bin/taplo" ]; then
        step "taplo not found on PATH: installing @taplo/cli@$TAPLO_VERSION from npm into $tools"
        ensure npm nodejs npm
        mkdir -p "$tools"
        npm install --no-save --no-audit --no-fund --prefix "$tools" "@taplo/cli@$TAPLO_VERSION" \
            || die "installing taplo failed (npm install @taplo/cli@$TAPLO_VERSION); install it by hand: npm install -g @taplo/cli"
    fi
    export PATH="$tools/node_modules/.bin:$PATH"
    command -v taplo >/dev/null 2>&1 || die "taplo still not found after installing it into $tools"
fi
echo "taplo: $(taplo --version)"

# --- Rust tests ----------------------------------------------------------------------------
step "cargo test --all-targets (includes tests/no_panic.rs, the fuzzers' stand-in)"
cargo test --all-targets

step "cargo test --doc"
cargo test --doc

step "end to end: the official Python openai and anthropic packages against tollgate serve (scripts/e2e.sh)"
bash scripts/e2e.sh

# --- shared state against a real Redis ---------------------------------------------------
# tests/redis_shared.rs starts its own redis-server on a free 127.0.0.1 port (and kills it);
# here we only make sure the binary exists.
# (The package starts a system service on :6379 on some systems; the tests do not use it.)
ensure redis-server
echo "redis-server: $(redis-server --version)"
step "cargo test --features redis: redis_shared (executors on one real Redis), serve_reload (serve refuses a reload that adds [state.redis])"
cargo test --features redis --test redis_shared --test serve_reload

# --- schema, as an editor sees it ------------------------------------------------------------
schema="file://$ROOT/schemas/policy.schema.json"
policies=(policies/*.toml)
if [ -d tests/valid ]; then
    while IFS= read -r f; do policies+=("$f"); done < <(find tests/valid -name '*.toml' | sort)
fi
step "taplo check --schema schemas/policy.schema.json (${#policies[@]} valid policies)"
taplo check --schema "$schema" "${policies[@]}"

step "taplo rejects a policy with an unknown key (--schema, and the #:schema directive)"
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
mkdir -p "$probe/policies" "$probe/schemas"
cp schemas/policy.schema.json "$probe/schemas/"
{ cat policies/minimal.toml; printf '\n[upstreams.typo]\nbase_url = "https://x.example"\nbase_ulr = "oops"\n'; } \
    > "$probe/policies/typo.toml"
head -n1 "$probe/policies/typo.toml" | grep -qx '#:schema ../schemas/policy.schema.json' \
    || die "policies/minimal.toml lost its #:schema directive"
for how in --schema directive; do
    if [ "$how" = --schema ]; then args=(--schema "$schema"); else args=(); fi
    if out=$(taplo check "${args[@]}" "$probe/policies/typo.toml" 2>&1); then
        die "taplo check (schema via $how) accepted a policy with an unknown key:
$out"
    fi
    grep -q "'base_ulr' was unexpected" <<<"$out" \
        || die "taplo check (schema via $how) failed, but not on the unknown key:
$out"
    echo "ok: taplo check (schema via $how) reports 'base_ulr' as unexpected"
done

step "taplo check --schema schemas/scenario.schema.json (scenarios/)"
taplo check --schema "file://$ROOT/schemas/scenario.schema.json" scenarios/*.toml

# --- the HTML report in a real browser -------------------------------------------------------
command -v chromium-browser >/dev/null 2>&1 || ensure chromium
step "tollgate simulate --format html, opened in headless chromium"
report="$ROOT/target/simulate-report.html"
cargo run -q -- simulate --scenario scenarios/slow-provider.toml --baseline policies/relay.toml \
    --format html --out "$report" policies/relay.toml
bash scripts/html_check.sh "$report" 8 3
printf '<!DOCTYPE html><html><body><script>throw new Error("probe")</script></body></html>' \
    > "$probe/broken.html"
if bash scripts/html_check.sh "$probe/broken.html" 0 0 >/dev/null 2>&1; then
    die "scripts/html_check.sh did not catch a page whose script throws"
fi
echo "ok: a page whose script throws is caught"

step "all tests passed"
