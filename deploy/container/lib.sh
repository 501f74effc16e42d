# Helpers for the deploy tests: counting checks, and the PagerDuty double
# (the test suite's, as a program) on the host, where containers reach it
# as host.containers.internal. Expects WORK, DOUBLE_BIN and DPORT.

ok() { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
check() { # check NAME COMMAND...
    local name=$1; shift
    if "$@"; then ok "$name"; else bad "$name"; fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("",0)); print(s.getsockname()[1])'
}

start_double() {
    local before
    before=$(grep -c '^listening' "$WORK/double.jsonl" 2>/dev/null)
    PPB_TEST_LIMIT_SECS=100000 "$DOUBLE_BIN" "0.0.0.0:$DPORT" >>"$WORK/double.jsonl" 2>>"$WORK/double.err" &
    DOUBLE_PID=$!
    for _ in $(seq 50); do
        [ "$(grep -c '^listening' "$WORK/double.jsonl" 2>/dev/null)" -gt "${before:-0}" ] && return 0
        sleep 0.1
    done
    return 1
}
stop_double() { kill "$DOUBLE_PID" 2>/dev/null; wait "$DOUBLE_PID" 2>/dev/null; DOUBLE_PID=; }
# received KEY ACTION DEDUP_PREFIX: how many valid events the double took.
received() {
    python3 - "$WORK/double.jsonl" "$@" <<'EOF'
import json, sys
path, key, action, dedup = sys.argv[1:5]
n = 0
for line in open(path):
    if not line.startswith("{"):
        continue
    r = json.loads(line)
    b = r["body"] or {}
    if (r["status"] == 202 and not r["errors"] and b.get("routing_key") == key
            and b.get("event_action") == action and b.get("dedup_key", "").startswith(dedup)):
        n += 1
print(n)
EOF
}
wait_received() { # wait_received SECONDS KEY ACTION DEDUP_PREFIX COUNT
    local until=$((SECONDS + $1))
    while [ $SECONDS -le $until ]; do
        [ "$(received "$2" "$3" "$4")" -ge "$5" ] && return 0
        sleep 0.2
    done
    return 1
}
