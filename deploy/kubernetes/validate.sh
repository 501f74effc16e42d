#!/usr/bin/env bash
# Validates the manifests offline against the Kubernetes schemas
# (kubernetes-validate --strict catches misspelt fields), and the sidecar in
# the Helm values the same way: its containers and volumes put in a Pod.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VENV=${OPS_VENV:-$ROOT/target/ops-venv}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$VENV/bin/kubernetes-validate" --strict "$ROOT/deploy/kubernetes/bridge.yaml" \
    "$ROOT/deploy/kubernetes/secret-and-spool.yaml"
"$VENV/bin/python" - "$ROOT/deploy/kubernetes/prefect-server-values.yaml" "$dir/sidecar-pod.yaml" <<'PY'
import sys, yaml
values = yaml.safe_load(open(sys.argv[1]))["server"]
pod = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "prefect-server-with-bridge"},
    "spec": {
        "containers": [{"name": "prefect-server", "image": "prefecthq/prefect:3-latest"}]
        + values["extraContainers"],
        "volumes": values["extraVolumes"],
    },
}
yaml.safe_dump(pod, open(sys.argv[2], "w"))
PY
"$VENV/bin/kubernetes-validate" --strict "$dir/sidecar-pod.yaml"
