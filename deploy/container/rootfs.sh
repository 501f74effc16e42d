#!/bin/sh
# Lays out the image's files under OUT: OUT/rootfs holds the binary, the C
# libraries it links (as ldd lists them), the CA bundle and a nonroot user
# (uid/gid 65532); OUT/data is the spool volume's directory. The Dockerfile's
# build stage runs it, and so does deploy/container/build-image.sh, so the
# image tested is the image shipped.
#   rootfs.sh BINARY OUT
set -eu
bin=$1
out=$2
root=$out/rootfs
mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/home/nonroot" "$root/tmp" "$out/data"
chmod 1777 "$root/tmp"
cp "$bin" "$root/usr/local/bin/prefect-pagerduty-bridge"
for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
