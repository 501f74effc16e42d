#!/usr/bin/env bash
# Checks the unit with `systemd-analyze verify`, which also wants the
# ExecStart binary to exist: the built binary is bind-mounted on
# /usr/local/bin inside a private mount namespace, so the host is left as it
# was. Any warning counts as a failure (verify exits 0 on unknown keys).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${PPB_BIN:-$ROOT/target/release/prefect-pagerduty-bridge}
UNIT=$ROOT/deploy/systemd/prefect-pagerduty-bridge.service
bindir=$(mktemp -d)
trap 'rm -rf "$bindir"' EXIT
cp "$BIN" "$bindir/prefect-pagerduty-bridge"
out=$(unshare --mount sh -c "mount --bind '$bindir' /usr/local/bin && systemd-analyze verify '$UNIT'" 2>&1) || {
    echo "$out"
    echo "systemd-analyze verify failed"
    exit 1
}
if [ -n "$out" ]; then
    echo "$out"
    echo "systemd-analyze verify warned"
    exit 1
fi
echo "systemd-analyze verify: $UNIT is clean"
