#!/usr/bin/env bash
# Opens an HTML page in headless Chromium and fails unless it loads with no console error
# and its charts have content (`data-series` and `data-bands`, set by the page's script,
# above the given minimums). Used by scripts/test.sh on `tollgate simulate --format html`.
#
#   bash scripts/html_check.sh PAGE.html [MIN_SERIES] [MIN_BANDS]
set -euo pipefail
page=$(realpath "$1")
min_series=${2:-1}
min_bands=${3:-0}
browser=$(command -v chromium || command -v chromium-browser || true)
[ -n "$browser" ] || { echo "chromium not found" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# --enable-logging=stderr prints the page's console messages and uncaught errors
# ("CONSOLE(…)", "Uncaught …") to stderr; --dump-dom prints the DOM after the scripts ran.
timeout 120 "$browser" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
    --user-data-dir="$out/profile" --enable-logging=stderr --v=0 \
    --dump-dom "file://$page" >"$out/dom" 2>"$out/log" || {
    cat "$out/log" >&2; echo "chromium failed on $page" >&2; exit 1; }
if grep -Ei 'CONSOLE|Uncaught' "$out/log" >&2; then
    echo "console errors on $page" >&2; exit 1
fi
series=$(grep -o 'data-series="[0-9]*"' "$out/dom" | grep -o '[0-9]*' || echo 0)
bands=$(grep -o 'data-bands="[0-9]*"' "$out/dom" | grep -o '[0-9]*' || echo 0)
echo "$page: $series chart lines, $bands breaker bands, no console error"
[ "$series" -ge "$min_series" ] || { echo "too few chart lines ($series < $min_series)" >&2; exit 1; }
[ "$bands" -ge "$min_bands" ] || { echo "too few breaker bands ($bands < $min_bands)" >&2; exit 1; }
