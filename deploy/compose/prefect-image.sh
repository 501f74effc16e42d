#!/usr/bin/env bash
# Builds a stand-in for the upstream Prefect image the compose file names
# (prefecthq/prefect:3-python3.11), as no registry is reachable here: a
# Debian bookworm base made with mmdebstrap, Python 3.11 and Prefect 3 from
# PyPI (the version the test suite's venv has, when it is there). Skips the
# build when the image exists. Needs podman and mmdebstrap; about 2 minutes.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
IMAGE=docker.io/prefecthq/prefect:3-python3.11
if podman image exists "$IMAGE"; then
    echo "$IMAGE exists"
    exit 0
fi
version=$("$ROOT/target/prefect-venv/bin/python" -c 'import prefect; print(prefect.__version__)' 2>/dev/null || true)
spec=${version:+prefect==$version}
spec=${spec:-prefect>=3,<4}
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
if ! podman image exists localhost/ppb-debian-python:bookworm; then
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$ctx/rootfs.tar" http://deb.debian.org/debian
    podman import -q "$ctx/rootfs.tar" localhost/ppb-debian-python:bookworm >/dev/null
    rm -f "$ctx/rootfs.tar"
fi
# This machine's CA bundle, for a TLS-intercepting egress to PyPI.
cp /etc/ssl/certs/ca-certificates.crt "$ctx/host-ca.crt"
cat >"$ctx/Containerfile" <<EOT
FROM localhost/ppb-debian-python:bookworm
COPY host-ca.crt /etc/ssl/certs/host-ca.crt
RUN python3 -m venv /opt/prefect \\
 && PIP_CERT=/etc/ssl/certs/host-ca.crt /opt/prefect/bin/pip install -q --disable-pip-version-check "$spec"
ENV PATH=/opt/prefect/bin:/usr/local/bin:/usr/bin:/bin
EXPOSE 4200
CMD ["prefect", "server", "start", "--host", "0.0.0.0"]
EOT
podman build --format docker -q -t "$IMAGE" "$ctx" >/dev/null
echo "built $IMAGE ($spec)"
