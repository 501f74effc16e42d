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
# shellcheck source=deploy/container/lib.sh
. "$ROOT/deploy/container/lib.sh"

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
if PPB_BIN=$BIN "$ROOT/deploy/container/build-image.sh" "$IMAGE" >"$WORK/build.log" 2>&1; then
    ok "image builds from the Dockerfile's final stage"
else
    bad "image builds from the Dockerfile's final stage"; cat "$WORK/build.log"
    echo "$pass passed, $fail failed"
    exit 1
fi
size=$(podman image inspect -f '{{.Size}}' "$IMAGE")
check "image is under 25 MB ($((size / 1000)) kB)" test "$size" -lt 25000000

# --- The PagerDuty double, on the host -----------------------------------
DPORT=$(free_port)
check "the PagerDuty double starts on the host" start_double

# --- Running it -------------------------------------------------------------
mkdir -p "$WORK/secrets"
printf '%s\n' "$TOKEN" >"$WORK/secrets/token"
printf '%s\n' "$KEY_FILE" >"$WORK/secrets/pd-key"
chmod 0444 "$WORK/secrets/"*
HPORT=$(free_port)
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
rss_kib=$(awk '/^VmRSS:/ {print $2}' /proc/"$pid"/status)
check "idle RSS $((rss_kib / 1024)) MiB, under the manifests' 32 MiB request" test "$rss_kib" -lt 32768
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
cat "$ROOT/deploy/kubernetes/secret-and-spool.yaml" <(echo ---) "$ROOT/deploy/kubernetes/bridge.yaml" >"$WORK/kube-shipped.yaml"
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
python3 - "$WORK/kube-shipped.yaml" "$WORK/kube.yaml" "$WORK/kube-secrets" "$DPORT" <<'EOF'
import sys
src, dst, secrets, port = sys.argv[1:5]
import re
docs = [d.strip("\n") for d in re.split(r"^---$", open(src).read(), flags=re.M)]
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
