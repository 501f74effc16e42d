#!/usr/bin/env bash
# Builds IMAGE (default localhost/prefect-pagerduty-bridge:test) with podman:
# the Dockerfile's final stage, fed a local release build, as no registry is
# reachable here. The final stage's instructions are taken from the
# Dockerfile itself, so the image is the layout users build; only its base
# (what distroless cc holds: glibc, libgcc, CA certificates, a nonroot user
# 65532) is assembled from this machine's files.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${PPB_BIN:-$ROOT/target/release/prefect-pagerduty-bridge}
IMAGE=${1:-localhost/prefect-pagerduty-bridge:test}
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/base/etc/ssl/certs" "$ctx/base/tmp" "$ctx/base/home/nonroot" "$ctx/out/data"
cp "$BIN" "$ctx/out/prefect-pagerduty-bridge"
for lib in $(ldd "$BIN" | grep -o '/[^ ]*'); do
    mkdir -p "$ctx/base$(dirname "$lib")"
    cp -L "$lib" "$ctx/base$lib"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$ctx/base/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$ctx/base/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$ctx/base/etc/group"
{
    echo "FROM scratch"
    echo "COPY base/ /"
    # Everything after the last FROM, with the build stage's /out/ as local files.
    awk '/^FROM /{buf=""; next} {buf = buf $0 "\n"} END {printf "%s", buf}' "$ROOT/Dockerfile" |
        sed -e 's#--from=build ##' -e 's# /out/# out/#'
} >"$ctx/Containerfile"
# Docker's format: OCI images drop HEALTHCHECK.
podman build --format docker -q -t "$IMAGE" -f "$ctx/Containerfile" "$ctx"
