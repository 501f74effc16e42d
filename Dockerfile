# syntax=docker/dockerfile:1
# The bridge as a sidecar image: a Rust build, then a final stage with
# nothing but the binary, the C libraries it links, CA certificates and a
# nonroot user: no shell, uid 65532, the spool on /data.
#   docker build -t prefect-pagerduty-bridge .
#   docker run -p 8080:8080 -v ppb-data:/data -e PD_KEY=… -e TOKEN=… \
#     prefect-pagerduty-bridge serve --action oncall=env:PD_KEY --webhook-token env:TOKEN
# deploy/container/test.sh builds this final stage from a local release
# build (the same rootfs.sh) and tests it with podman.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
COPY tests ./tests
COPY deploy/container/rootfs.sh ./deploy/container/rootfs.sh
RUN cargo build --release --locked --bin prefect-pagerduty-bridge \
    && deploy/container/rootfs.sh target/release/prefect-pagerduty-bridge /out

# 14 MB: only what the bridge uses (a distroless base would add a Debian
# base's libraries and data).
FROM scratch
COPY --from=build /out/rootfs/ /
# The spool volume, owned by the runtime user (an image without it cannot
# create its spool).
COPY --from=build --chown=65532:65532 /out/data /data
ENV PPB_LISTEN=0.0.0.0:8080 \
    PPB_SPOOL=/data/prefect-pagerduty-bridge.redb \
    PPB_LOG_FORMAT=json
USER 65532:65532
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/usr/local/bin/prefect-pagerduty-bridge", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/prefect-pagerduty-bridge"]
CMD ["serve"]
