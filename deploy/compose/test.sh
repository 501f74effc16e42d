#!/usr/bin/env bash
# Starts deploy/compose/compose.yaml with podman-compose (locally built
# stand-ins for its images: the bridge from the release build, Prefect from
# PyPI) and shows that it works end to end: the one-shot setup service
# wires Prefect to the bridge, a flow run that fails (run from this host
# against the composed Prefect) pages the PagerDuty double on the host, the
# run retried to Completed resolves the alert, and setup run again changes
# nothing. Ends with "N passed, M failed".
#
# Needs: podman, podman-compose, mmdebstrap, python3, the test suite's
# Prefect venv (target/prefect-venv), `cargo build --release` and
# `cargo build --example pagerduty-double`.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${PPB_BIN:-$ROOT/target/release/prefect-pagerduty-bridge}
DOUBLE_BIN=${PPB_DOUBLE_BIN:-$ROOT/target/debug/examples/pagerduty-double}
VENV=$ROOT/target/prefect-venv
PROJECT=ppb-compose-test
KEY=R0UTINGKEYC0MP0SEAAAAAAAAAAAAAAA
TOKEN=compose-test-token-0123456789
WORK=$(mktemp -d)
DOUBLE_PID=
pass=0
fail=0
# shellcheck source=deploy/container/lib.sh
. "$ROOT/deploy/container/lib.sh"

PREFECT_PORT=$(free_port)
BRIDGE_PORT=$(free_port)
compose() {
    PD_KEY=$KEY WEBHOOK_TOKEN=$TOKEN PAGERDUTY_URL="http://host.containers.internal:$DPORT" \
        PREFECT_PORT=$PREFECT_PORT BRIDGE_PORT=$BRIDGE_PORT \
        podman-compose -p "$PROJECT" -f "$ROOT/deploy/compose/compose.yaml" "$@"
}
cleanup() {
    compose down -v >/dev/null 2>&1
    [ -n "$DOUBLE_PID" ] && kill "$DOUBLE_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

for f in "$BIN" "$DOUBLE_BIN" "$VENV/bin/python"; do
    [ -x "$f" ] || { echo "missing $f"; exit 2; }
done

check "the bridge image builds" "$ROOT/deploy/container/build-image.sh" localhost/prefect-pagerduty-bridge:latest
check "the Prefect stand-in image is there" "$ROOT/deploy/compose/prefect-image.sh"
DPORT=$(free_port)
check "the PagerDuty double starts on the host" start_double

compose up -d >"$WORK/up.log" 2>&1
check "podman-compose up starts the services" test $? -eq 0
setup_ctr=$(podman ps -a --format '{{.Names}}' | grep -m1 "^${PROJECT}_prefect-setup")
setup_done() { # the one-shot service exits 0 within 3 minutes
    local code
    code=$(timeout 200 podman wait "$setup_ctr" 2>/dev/null)
    podman logs "$setup_ctr" >"$WORK/setup.log" 2>&1
    [ "$code" = 0 ]
}
check "the one-shot setup service wires Prefect and exits 0" setup_done
check "it created the block and the automations" grep -q "created" "$WORK/setup.log"

export PREFECT_API_URL=http://127.0.0.1:$PREFECT_PORT/api PREFECT_HOME=$WORK/prefect-home
export PREFECT_LOGGING_LEVEL=WARNING DO_NOT_TRACK=1
driver() { "$VENV/bin/python" "$ROOT/tests/it/prefect_e2e.py" "$@" 2>>"$WORK/driver.err" | tail -1; }
run=$(driver fail "$WORK/marker" | python3 -c 'import json,sys; print(json.load(sys.stdin)["flow_run_id"])')
check "a flow run fails in the composed Prefect" test -n "$run"
check "its failure pages the double (through Prefect's automation and the bridge)" \
    wait_received 60 "$KEY" trigger "prefect/flow-run/$run" 1
driver retry "$run" "$WORK/marker" >/dev/null
check "its completion after a retry resolves the alert" wait_received 60 "$KEY" resolve "prefect/flow-run/$run" 1

podman start -a "$setup_ctr" >"$WORK/setup-again.log" 2>&1
check "setup run again changes nothing" grep -q "nothing changed" "$WORK/setup-again.log"
check "the bridge answers on this host (health)" \
    curl -fsS -o /dev/null "http://127.0.0.1:$BRIDGE_PORT/healthz"

if [ "$fail" -ne 0 ]; then
    echo "--- compose up"; cat "$WORK/up.log"
    echo "--- setup"; cat "$WORK/setup.log"
    echo "--- driver"; tail -20 "$WORK/driver.err"
    for c in $(podman ps -a --format '{{.Names}}' | grep "^$PROJECT"); do
        echo "--- $c"; podman logs "$c" 2>&1 | tail -20
    done
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
