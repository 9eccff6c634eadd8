#!/usr/bin/env bash
# Issue 12, goal 4: relay throughput with 1,000 vs 10,000 per-caller budgets. Each caller
# `cI` has the key `kI` (`key_sha256` in the policy) and its own budget (`scope.keys`);
# every request is sent by the last caller. nginx (`return 200`) is the upstream; wrk at
# 16 connections; the two policies alternate twice, side by side in one run.
#   bash scripts/relay_vs_nginx/budgets.sh [SECONDS per run, default 5]
# Installs nginx and wrk with apt-get when missing; TOLLGATE_BIN=path runs another build.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
DUR="${1:-5}"
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
for tool in nginx wrk curl python3; do ensure "$tool"; done
BIN="${TOLLGATE_BIN:-$ROOT/target/release/tollgate}"
[ -n "${TOLLGATE_BIN:-}" ] || cargo build --release --quiet --bin tollgate
WORK=$(mktemp -d)
trap 'stop_all "$WORK"' EXIT
UP=18491; TG=18493
cat > "$WORK/up.conf" <<CONF
worker_processes 1;
pid $WORK/up.pid;
error_log $WORK/up.err warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $WORK/body;
    server {
        listen 127.0.0.1:$UP;
        location / { default_type application/json; return 200 '{"id":"c","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}'; }
    }
}
CONF
nginx -p "$WORK" -c "$WORK/up.conf"
policy() { # N → a policy of N callers, each with its own budget
    python3 - "$1" "$UP" <<'PY'
import hashlib, sys
n, up = int(sys.argv[1]), sys.argv[2]
out = [f'version = 1\n[upstreams.up]\nbase_url = "http://127.0.0.1:{up}/v1"\n'
       '[models.m]\nupstream = "up"\nprice = { input_per_mtok = 1.0, output_per_mtok = 2.0 }\n'
       '[[routes]]\nname = "main"\ntargets = ["m"]\n']
for i in range(n):
    h = hashlib.sha256(f"k{i}".encode()).hexdigest()
    out.append(f'[callers.c{i}]\nkey_sha256 = "{h}"\n[budgets.b{i}]\nlimit_usd = 1000000.0\n'
               f'window = "30d"\nscope = {{ keys = ["c{i}"] }}\n')
print("".join(out))
PY
}
run() { # N → req/s of wrk against a relay with N per-caller budgets
    policy "$1" > "$WORK/p$1.toml"
    "$BIN" serve --policy "$WORK/p$1.toml" --listen "127.0.0.1:$TG" 2>"$WORK/tg.err" &
    local pid=$!
    for _ in $(seq 300); do curl -sf "http://127.0.0.1:$TG/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
    curl -sf "http://127.0.0.1:$TG/healthz" >/dev/null || die "tollgate serve did not start: $(cat "$WORK/tg.err")"
    cat > "$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer k$(( $1 - 1 ))"
wrk.body = '{"model":"main","messages":[{"role":"user","content":"hello there"}]}'
done = function(summary, latency, requests)
    io.write(string.format("RESULT %.0f %.3f %d\\n", summary.requests / (summary.duration / 1e6),
        latency:percentile(50) / 1000, summary.errors.status))
end
LUA
    wrk -t1 -c16 -d"${DUR}s" -s "$WORK/post.lua" "http://127.0.0.1:$TG/v1/chat/completions" | grep RESULT
    kill "$pid"; wait "$pid" 2>/dev/null || true
}
printf '%-10s %10s %10s %8s\n' budgets "req/s" "p50 ms" "non-2xx"
for round in 1 2; do
    for n in 1000 10000; do
        set -- $(run "$n")
        printf '%-10s %10s %10s %8s\n' "$n" "$2" "$3" "$4"
    done
done
