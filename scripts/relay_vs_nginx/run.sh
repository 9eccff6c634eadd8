#!/usr/bin/env bash
# Issue 12, goal 1: `tollgate serve` against an nginx reverse proxy, in front of the same
# upstream (nginx answering a fixed chat completion with `return 200`), side by side in one
# run, with wrk at 1, 16 and 64 connections:
#   direct   wrk → upstream nginx
#   nginx    wrk → nginx (proxy_pass, keepalive) → upstream nginx
#   floor    wrk → examples/relay_floor (axum + hyper's client forwarding bytes: the stack
#            tollgate serve is built on, doing nothing else) → upstream nginx
#   tollgate wrk → tollgate serve (one route: limits, breaker, retry budget, budget, never
#            triggered) → upstream nginx
# Installs nginx and wrk with apt-get when missing (needs root). Builds tollgate in release.
#   bash scripts/relay_vs_nginx/run.sh [SECONDS per run, default 10]   (CONNS="1 16 64" to choose)
# Everything shares this machine's cores (wrk, the proxy, the upstream): the figures are
# relative, for comparing the three columns of one run.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
DUR="${1:-10}"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
for tool in nginx wrk curl; do ensure "$tool"; done
# TOLLGATE_BIN=path runs another build (a debug one, to try the script out).
BIN="${TOLLGATE_BIN:-$ROOT/target/release/tollgate}"
[ -n "${TOLLGATE_BIN:-}" ] || cargo build --release --quiet --bin tollgate
FLOOR="${FLOOR_BIN:-$ROOT/target/release/examples/relay_floor}"
[ -n "${FLOOR_BIN:-}" ] || cargo build --release --quiet --example relay_floor
WORK=$(mktemp -d)
trap 'stop_all "$WORK"' EXIT
UP=18471; PX=18472; TG=18473; FL=18474
BODY='{"id":"chatcmpl-1","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}'
nginx_conf() { # NAME PORT LOCATION-BODY
    cat > "$WORK/$1.conf" <<CONF
worker_processes 1;
pid $WORK/$1.pid;
error_log $WORK/$1.err warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $WORK/$1-body;
    proxy_temp_path $WORK/$1-proxy;
    upstream up { server 127.0.0.1:$UP; keepalive 64; }
    server {
        listen 127.0.0.1:$2;
        location / { $3 }
    }
}
CONF
    nginx -p "$WORK" -c "$WORK/$1.conf"
}
nginx_conf up $UP "default_type application/json; return 200 '$BODY';"
nginx_conf px $PX "proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\";"
cat > "$WORK/policy.toml" <<POLICY
version = 1
[defaults]
timeouts = { connect = "1s", per_try = "2s", total = "10s" }
retry = "standard"
breaker = "standard"
[upstreams.up]
base_url = "http://127.0.0.1:$UP/v1"
limits = { requests_per_second = 1000000, concurrency = 10000 }
[models.m]
upstream = "up"
price = { input_per_mtok = 1.0, output_per_mtok = 2.0 }
[retry.standard]
max_attempts = 3
budget = { ratio = 0.2, min_per_second = 10 }
[breakers.standard]
consecutive_failures = 1000
open_for = "1s"
[budgets.all]
limit_usd = 1000000000.0
window = "30d"
[[routes]]
name = "main"
targets = ["m"]
POLICY
"$BIN" serve --policy "$WORK/policy.toml" --listen "127.0.0.1:$TG" 2>"$WORK/tg.err" &
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$TG/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$TG/healthz" >/dev/null || die "tollgate serve did not start: $(cat "$WORK/tg.err")"
"$FLOOR" "127.0.0.1:$FL" "http://127.0.0.1:$UP" 2>"$WORK/floor.err" &
cat > "$WORK/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"main","messages":[{"role":"user","content":"hello there"}]}'
done = function(summary, latency, requests)
    io.write(string.format("RESULT %.0f %.3f %.3f\n", summary.requests / (summary.duration / 1e6),
        latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
LUA
printf '%-10s %6s %12s %10s %10s\n' target conns "req/s" "p50 ms" "p99 ms"
for c in ${CONNS:-1 16 64}; do
    for t in "direct $UP" "nginx $PX" "floor $FL" "tollgate $TG"; do
        set -- $t
        line=$(wrk -t1 -c"$c" -d"${DUR}s" -s "$WORK/post.lua" "http://127.0.0.1:$2/v1/chat/completions" | grep RESULT)
        set -- $1 $line
        printf '%-10s %6s %12s %10s %10s\n' "$1" "$c" "$3" "$4" "$5"
    done
done
