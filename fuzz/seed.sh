#!/usr/bin/env bash
# Seeds the fuzz corpora with the example and corpus policies (fuzz/corpus/ is not
# committed). Run from anywhere: `bash fuzz/seed.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
for target in load_bytes load_structured; do
    mkdir -p "fuzz/corpus/$target"
    find policies tests/valid tests/invalid -name '*.toml' 2>/dev/null | while read -r f; do
        cp "$f" "fuzz/corpus/$target/$(echo "$f" | tr '/' '_')"
    done
    cp fuzz/regressions/* "fuzz/corpus/$target/" 2>/dev/null || true
done
echo "seeded: $(ls fuzz/corpus/load_bytes | wc -l) files per target"
