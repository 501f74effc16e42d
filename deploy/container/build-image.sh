#!/usr/bin/env bash
# Builds IMAGE (default localhost/prefect-pagerduty-bridge:test) with podman
# from a local release build, as no registry is reachable here: the files
# are laid out by the same rootfs.sh the Dockerfile's build stage runs, and
# the final stage's instructions are read from the Dockerfile itself, so the
# image tested is the image users build.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${PPB_BIN:-$ROOT/target/release/prefect-pagerduty-bridge}
IMAGE=${1:-localhost/prefect-pagerduty-bridge:test}
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
"$ROOT/deploy/container/rootfs.sh" "$BIN" "$ctx/out"
# The last stage, from its FROM on, with the build stage's /out/ as local files.
awk '/^FROM /{buf=""} {buf = buf $0 "\n"} END {printf "%s", buf}' "$ROOT/Dockerfile" |
    sed -e 's#--from=build ##' -e 's# /out/# out/#' >"$ctx/Containerfile"
grep -q '^FROM scratch' "$ctx/Containerfile" || { echo "the Dockerfile's last stage is not FROM scratch"; exit 1; }
# Docker's format: OCI images drop HEALTHCHECK.
podman build --format docker -q -t "$IMAGE" -f "$ctx/Containerfile" "$ctx"
