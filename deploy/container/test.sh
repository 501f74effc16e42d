#!/usr/bin/env bash
# Builds an image of the Dockerfile's final stage from a local release build
# (no registry needed) and tests it by running it with podman:
#   - health within 2 s of start, and the image's own HEALTHCHECK passes;
#   - a Prefect event gets 202 and reaches the PagerDuty double on the host;
#   - uid 65532, read-only root filesystem, no capabilities, no new privileges;
#   - SIGTERM to PID 1 (`podman stop`) exits 0 within 5 s with nothing lost:
#     an event queued while PagerDuty is away is sent by the next container
#     on the same volume, and an alert opened before the stop still resolves;
#   - secrets from the environment and from a mounted file;
#   - the Kubernetes Deployment in deploy/kubernetes starts with `podman kube play`.
# Ends with "N passed, M failed" and exits non-zero when anything failed.
#
# Needs: podman (with /etc/containers/containers.conf as .ci/run writes it),
# curl, python3, `cargo build --release` and `cargo build --example
# pagerduty-double` done. Run as root (rootful podman).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${PPB_BIN:-$ROOT/target/release/prefect-pagerduty-bridge}
DOUBLE_BIN=${PPB_DOUBLE_BIN:-$ROOT/target/debug/examples/pagerduty-double}
IMAGE=localhost/prefect-pagerduty-bridge:test
NAME=ppb-container-test
VOLUME=ppb-container-test-data
KEY_ENV=R0UTINGKEYENVAAAAAAAAAAAAAAAAAAA
KEY_FILE=R0UTINGKEYF1LEBBBBBBBBBBBBBBBBBB
TOKEN=container-test-token-0123456789
WORK=$(mktemp -d)
DOUBLE_PID=
pass=0
fail=0

ok() { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
check() { # check NAME COMMAND...
    local name=$1; shift
    if "$@"; then ok "$name"; else bad "$name"; fi
}

cleanup() {
    podman rm -f -t 0 "$NAME" >/dev/null 2>&1
    podman kube down "$WORK/kube.yaml" >/dev/null 2>&1
    podman volume rm -f "$VOLUME" prefect-pagerduty-bridge-spool >/dev/null 2>&1
    [ -n "$DOUBLE_PID" ] && kill "$DOUBLE_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

for f in "$BIN" "$DOUBLE_BIN"; do
    [ -x "$f" ] || { echo "missing $f (cargo build --release; cargo build --example pagerduty-double)"; exit 2; }
done

# --- The image: the Dockerfile's final stage, fed local files -------------
# The final stage's instructions are taken from the Dockerfile itself, so
# the image tested is the layout users build; only its base (distroless cc:
# glibc, libgcc, CA certificates, a nonroot user) is assembled here from
# this machine's files, as no registry is reachable.
ctx=$WORK/context
mkdir -p "$ctx/base/etc/ssl/certs" "$ctx/out/data"
cp "$BIN" "$ctx/out/prefect-pagerduty-bridge"
for lib in $(ldd "$BIN" | grep -o '/[^ ]*'); do
    mkdir -p "$ctx/base$(dirname "$lib")"
    cp -L "$lib" "$ctx/base$lib"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$ctx/base/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$ctx/base/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$ctx/base/etc/group"
mkdir -p "$ctx/base/tmp" "$ctx/base/home/nonroot"
{
    echo "FROM scratch"
    echo "COPY base/ /"
    # Everything after the last FROM, with the build stage's /out/ as local files.
    awk '/^FROM /{buf=""; next} {buf = buf $0 "\n"} END {printf "%s", buf}' "$ROOT/Dockerfile" |
        sed -e 's#--from=build ##' -e 's# /out/# out/#'
} >"$ctx/Containerfile"
if podman build --format docker -q -t "$IMAGE" -f "$ctx/Containerfile" "$ctx" >/dev/null; then
    ok "image builds from the Dockerfile's final stage"
else
    bad "image builds from the Dockerfile's final stage"
    echo "$pass passed, $fail failed"
    exit 1
fi
size=$(podman image inspect -f '{{.Size}}' "$IMAGE")
check "image is under 25 MB ($((size / 1000)) kB)" test "$size" -lt 25000000

# --- The PagerDuty double, on the host -----------------------------------
DPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("",0)); print(s.getsockname()[1])')
start_double() {
    PPB_TEST_LIMIT_SECS=100000 "$DOUBLE_BIN" "0.0.0.0:$DPORT" >>"$WORK/double.jsonl" 2>>"$WORK/double.err" &
    DOUBLE_PID=$!
    for _ in $(seq 50); do
        grep -q '^listening' "$WORK/double.jsonl" 2>/dev/null && return 0
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
check "the PagerDuty double starts on the host" start_double

# --- Running it -------------------------------------------------------------
mkdir -p "$WORK/secrets"
printf '%s\n' "$TOKEN" >"$WORK/secrets/token"
printf '%s\n' "$KEY_FILE" >"$WORK/secrets/pd-key"
chmod 0444 "$WORK/secrets/"*
HPORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("",0)); print(s.getsockname()[1])')
podman volume create "$VOLUME" >/dev/null

run_bridge() {
    podman run -d --name "$NAME" \
        -p "127.0.0.1:$HPORT:8080" \
        --read-only --cap-drop=ALL --security-opt no-new-privileges \
        -v "$VOLUME:/data" -v "$WORK/secrets:/run/secrets:ro" \
        -e PD_KEY="$KEY_ENV" \
        "$IMAGE" serve \
        --action oncall=env:PD_KEY \
        --action files=file:/run/secrets/pd-key \
        --webhook-token file:/run/secrets/token \
        --pagerduty-url "http://host.containers.internal:$DPORT" \
        --retry-initial-interval 200ms >/dev/null
}
# healthy_within SECONDS: /healthz answers 200 from the host within SECONDS.
healthy_within() {
    local start end
    start=$(date +%s%N)
    run_bridge || return 1
    while :; do
        if curl -fsS -o /dev/null "http://127.0.0.1:$HPORT/healthz" 2>/dev/null; then
            end=$(date +%s%N)
            echo "     healthy $(((end - start) / 1000000)) ms after podman run"
            [ $(((end - start) / 1000000)) -le $(($1 * 1000)) ]
            return
        fi
        [ $((($(date +%s%N) - start) / 1000000)) -gt 10000 ] && return 1
        sleep 0.05
    done
}
post() { # post ACTION FILE [TOKEN]: prints the status
    curl -s -o "$WORK/answer.json" -w '%{http_code}' \
        -H "Authorization: Bearer ${3:-$TOKEN}" --data-binary @"$2" \
        "http://127.0.0.1:$HPORT/v1/prefect/$1"
}

check "healthy within 2 s of start" healthy_within 2
check "the image's HEALTHCHECK (the healthcheck subcommand) passes" podman healthcheck run "$NAME"

pid=$(podman inspect -f '{{.State.Pid}}' "$NAME")
check "runs as uid 65532" test "$(awk '/^Uid:/ {print $2}' /proc/"$pid"/status)" = 65532
check "read-only root filesystem" test "$(podman inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$NAME")" = true
check "no capabilities" test "$(awk '/^CapEff:/ {print $2}' /proc/"$pid"/status)" = 0000000000000000
check "no new privileges" test "$(awk '/^NoNewPrivs:/ {print $2}' /proc/"$pid"/status)" = 1

failed=$ROOT/fixtures/examples/flow-run-failed.json
completed=$ROOT/fixtures/examples/flow-run-completed.json
run1=prefect/flow-run/39eed61c
check "a Prefect event gets 202" test "$(post oncall "$failed")" = 202
check "it reaches the PagerDuty double (key from the environment)" wait_received 10 "$KEY_ENV" trigger "$run1" 1
check "a wrong token gets 401" test "$(post oncall "$failed" wrong-token-0000000000)" = 401
check "a routing key from a mounted file" test "$(post files "$failed")" = 202
check "its event reaches the double with that key" wait_received 10 "$KEY_FILE" trigger "$run1" 1

# PagerDuty goes away; an event is accepted and waits in the spool.
stop_double
sed -e 's/39eed61c-5f3c-4e8c-8dbe-05b23d4c268e/0000aaaa-5f3c-4e8c-8dbe-05b23d4c268e/' \
    -e 's/01a2214c-827e-7f4d-8af1-2c04918bd893/0000bbbb-827e-7f4d-8af1-2c04918bd893/' "$failed" >"$WORK/second.json"
check "an event while PagerDuty is away gets 202" test "$(post oncall "$WORK/second.json")" = 202

stop_started=$(date +%s%N)
podman stop -t 10 "$NAME" >/dev/null
stop_ms=$((($(date +%s%N) - stop_started) / 1000000))
check "podman stop (SIGTERM to PID 1) takes under 5 s ($stop_ms ms)" test "$stop_ms" -lt 5000
check "and exits 0" test "$(podman inspect -f '{{.State.ExitCode}}' "$NAME")" = 0
podman logs "$NAME" >"$WORK/first.log" 2>&1
podman rm "$NAME" >/dev/null

# A new container on the same volume, PagerDuty back.
check "the PagerDuty double comes back" start_double
check "a new container on the same volume is healthy within 2 s" healthy_within 2
check "the event queued before the stop is delivered (nothing lost)" \
    wait_received 15 "$KEY_ENV" trigger prefect/flow-run/0000aaaa 1
check "a recovery after the restart gets 202" test "$(post oncall "$completed")" = 202
check "and resolves the alert opened before the stop" wait_received 10 "$KEY_ENV" resolve "$run1" 1
if grep -q "$TOKEN\|$KEY_ENV\|$KEY_FILE" "$WORK/first.log" <(podman logs "$NAME" 2>&1); then
    bad "no secret in the container's logs"
else
    ok "no secret in the container's logs"
fi
podman rm -f -t 5 "$NAME" >/dev/null 2>&1

# --- The Kubernetes Deployment, started with podman kube play ------------
kube_image=$(awk '/image:/ {print $2; exit}' "$ROOT/deploy/kubernetes/bridge.yaml")
podman tag "$IMAGE" "$kube_image"
# The manifest as users apply it, with the Secret's values for this test
# and the PagerDuty URL of the double. Podman 4.3 (Debian 12) cannot mount a
# Secret (`kube play` crashes in VolumeFromSecret), so the test does what
# the kubelet does: it writes the Secret's keys as files and mounts that
# directory (hostPath) where the secret volume would be. Everything else is
# the Deployment as shipped.
mkdir -p "$WORK/kube-secrets"
printf '%s' "$KEY_ENV" >"$WORK/kube-secrets/pagerduty-key"
printf '%s' "$TOKEN" >"$WORK/kube-secrets/webhook-token"
chmod 0444 "$WORK/kube-secrets/"*
python3 - "$ROOT/deploy/kubernetes/bridge.yaml" "$WORK/kube.yaml" "$WORK/kube-secrets" "$DPORT" <<'EOF'
import sys
src, dst, secrets, port = sys.argv[1:5]
docs = open(src).read().split("\n---\n")
docs = [d for d in docs if "\nkind: Secret\n" not in "\n" + d]
text = "\n---\n".join(docs)
secret_volume = (
    "          secret:\n"
    "            secretName: prefect-pagerduty-bridge\n"
)
assert secret_volume in text, "the Deployment no longer mounts the Secret as the test expects"
text = text.replace(secret_volume, f"          hostPath:\n            path: {secrets}\n            type: Directory\n")
text = text.replace("https://events.pagerduty.com", f"http://host.containers.internal:{port}")
open(dst, "w").write(text)
EOF
podman volume rm -f prefect-pagerduty-bridge-spool >/dev/null 2>&1
if podman kube play --replace "$WORK/kube.yaml" >"$WORK/kube.log" 2>&1; then
    ok "podman kube play starts the Deployment"
else
    bad "podman kube play starts the Deployment"; cat "$WORK/kube.log"
fi
kube_ctr=$(podman ps --format '{{.Names}}' | grep -m1 -- '-pod-0-prefect-pagerduty-bridge$')
ip=$(podman inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$kube_ctr" 2>/dev/null)
kube_healthy() {
    for _ in $(seq 50); do
        curl -fsS -o /dev/null "http://$ip:8080/readyz" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
check "the Deployment's pod is ready (GET /readyz at $ip)" kube_healthy
kpid=$(podman inspect -f '{{.State.Pid}}' "$kube_ctr" 2>/dev/null)
check "the pod runs as uid 65532" test "$(awk '/^Uid:/ {print $2}' /proc/"$kpid"/status 2>/dev/null)" = 65532
check "the pod's root filesystem is read-only" test "$(podman inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$kube_ctr" 2>/dev/null)" = true
check "the pod has no capabilities" test "$(awk '/^CapEff:/ {print $2}' /proc/"$kpid"/status 2>/dev/null)" = 0000000000000000
kube_post() {
    curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" \
        --data-binary @"$WORK/third.json" "http://$ip:8080/v1/prefect/oncall"
}
sed -e 's/39eed61c-5f3c-4e8c-8dbe-05b23d4c268e/0000cccc-5f3c-4e8c-8dbe-05b23d4c268e/' \
    -e 's/01a2214c-827e-7f4d-8af1-2c04918bd893/0000dddd-827e-7f4d-8af1-2c04918bd893/' "$failed" >"$WORK/third.json"
check "the pod takes a Prefect event (202), secrets from the Secret" test "$(kube_post)" = 202
check "and it reaches the double" wait_received 10 "$KEY_ENV" trigger prefect/flow-run/0000cccc 1
podman kube down "$WORK/kube.yaml" >/dev/null 2>&1

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
