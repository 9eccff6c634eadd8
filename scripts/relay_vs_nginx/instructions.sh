#!/usr/bin/env bash
# Instructions per relayed request, counted by callgrind (deterministic, unlike wall time on
# this shared machine): `tollgate serve` (one worker thread) and examples/relay_floor, each
# in front of nginx answering a fixed chat completion, under wrk at 4 connections for 15 s.
# Startup is included in the total but is under 1% of it.
#   bash scripts/relay_vs_nginx/instructions.sh [TOLLGATE_BIN ...]   (default: target/release/tollgate)
# Installs nginx, wrk and valgrind with apt-get when missing (needs root).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
for tool in nginx wrk curl valgrind; do ensure "$tool"; done
[ $# -gt 0 ] || { cargo build --release --quiet --bin tollgate; set -- "$ROOT/target/release/tollgate"; }
FLOOR="${FLOOR_BIN:-$ROOT/target/release/examples/relay_floor}"
[ -n "${FLOOR_BIN:-}" ] || cargo build --release --quiet --example relay_floor
WORK=$(mktemp -d)
trap 'stop_all "$WORK"' EXIT
UP=18481; PORT=18483
BODY='{"id":"chatcmpl-1","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}'
cat > "$WORK/up.conf" <<CONF
worker_processes 1;
pid $WORK/up.pid;
error_log $WORK/up.err warn;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $WORK/b; proxy_temp_path $WORK/p;
  server { listen 127.0.0.1:$UP; location / { default_type application/json; return 200 '$BODY'; } } }
CONF
nginx -p "$WORK" -c "$WORK/up.conf"
# The policy of run.sh (limits, breaker, retry budget, budget: none triggered).
sed -n '/^cat > "\$WORK\/policy.toml"/,/^POLICY/p' scripts/relay_vs_nginx/run.sh | sed '1d;$d' \
    | sed "s/\$UP/$UP/" > "$WORK/policy.toml"
cat > "$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"main","messages":[{"role":"user","content":"hello there"}]}'
LUA
count() { # NAME COMMAND...
    local name=$1; shift
    TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.$name" "$@" 2>"$WORK/err.$name" &
    local pid=$!
    for _ in $(seq 300); do
        curl -s -o /dev/null -XPOST "http://127.0.0.1:$PORT/v1/chat/completions" -d '{}' 2>/dev/null && break
        sleep 0.2
    done
    kill -0 "$pid" 2>/dev/null || { echo "$name exited:" >&2; cat "$WORK/err.$name" >&2; exit 1; }
    local n
    n=$(wrk -t1 -c4 -d15s -s "$WORK/post.lua" "http://127.0.0.1:$PORT/v1/chat/completions" | awk '/requests in/ {print $1}')
    # SIGTERM: a script's background jobs ignore SIGINT. Callgrind writes its profile on it.
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    local total
    total=$(callgrind_annotate "$WORK/cg.$name" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
    printf '%-40s %8s requests %10s instructions/request\n' "$name" "$n" "$((total / n))"
}
count floor "$FLOOR" "127.0.0.1:$PORT" "http://127.0.0.1:$UP"
for bin in "$@"; do
    count "$(basename "$bin")" "$bin" serve --policy "$WORK/policy.toml" --listen "127.0.0.1:$PORT"
done
