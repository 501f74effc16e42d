#!/usr/bin/env bash
# Instructions per event of the webhook handler's pure work (parse, and
# parse + translate + encode), counted by valgrind's callgrind on the
# `pipeline` bench. Unlike time, the count barely moves on a busy shared
# machine, so two builds compare exactly; it leaves out the cache misses
# and the kernel, which the load benchmark sees.
#
# Needs valgrind (Debian: apt-get install valgrind).
# Usage: benches/instructions.sh [pipeline bench binary]
#   (default: builds this tree's with `cargo bench --no-run`)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-}
if [ -z "$bin" ]; then
    bin=$(cargo bench --bench pipeline --no-run --message-format=json 2>/dev/null |
        sed -n 's/.*"executable":"\([^"]*pipeline[^"]*\)".*/\1/p' | tail -1)
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
count() { # capture phase events
    PIPELINE_ONLY=$1 PIPELINE_PHASE=$2 PIPELINE_RUNS=1 PIPELINE_EVENTS=$3 \
        valgrind --tool=callgrind --callgrind-out-file="$out/cg" "$bin" 2>&1 >/dev/null |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
echo "$bin"
for capture in failed_event_tojson failed_automation_tojson failed_firing; do
    for phase in parse whole; do
        # The slope between 500 and 1,500 events leaves start-up out.
        a=$(count "$capture" "$phase" 500)
        b=$(count "$capture" "$phase" 1500)
        echo "$capture $phase: $(((b - a) / 1000)) instructions per event"
    done
done
# As deployed with --prefect-ui-url: each trigger also gets its links.
export PIPELINE_UI_URL=http://127.0.0.1:4200
a=$(count failed_event_tojson whole 500)
b=$(count failed_event_tojson whole 1500)
echo "failed_event_tojson whole, with links: $(((b - a) / 1000)) instructions per event"
