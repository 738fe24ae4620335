# casegraph appliance image: `casegraph serve` with the shipped workflows, intent model and
# firmware profiles, ONNX Runtime from PyPI's onnxruntime wheel, running as a non-root
# user with its state on a volume.
#
#   docker build -t casegraph .
#   docker run -d -p 8080:8080 -v casegraph-data:/var/lib/casegraph \
#       -e CASEGRAPH_PROFILE=edge-small --memory 1g --cpus 2 casegraph
#
# tests/dockerfile.rs keeps this file honest (Docker does not run where it is developed):
# every path it copies exists, the stages it copies from are defined, and the entrypoint's
# arguments parse with the real CLI. See docs/operations.md.

ARG ONNXRUNTIME_VERSION=1.31.1

# ONNX Runtime's shared library from the PyPI wheel: pip is the only tool that downloads
# anything for it, and only this stage has pip.
FROM python:3.12-slim-bookworm AS onnxruntime
ARG ONNXRUNTIME_VERSION
RUN pip install --no-cache-dir --no-deps --target /ort "onnxruntime==${ONNXRUNTIME_VERSION}" \
 && mkdir -p /out \
 && cp -L /ort/onnxruntime/capi/libonnxruntime.so.* /out/ \
 && cd /out && ln -s "$(ls libonnxruntime.so.* | head -n 1)" libonnxruntime.so

# The release binary (crates come from crates.io through Cargo.lock).
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . /src
RUN cargo build --release --locked -p casegraph

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --user-group --no-create-home \
        --home-dir /var/lib/casegraph --shell /usr/sbin/nologin casegraph \
 && mkdir -p /var/lib/casegraph \
 && chown casegraph:casegraph /var/lib/casegraph
COPY --from=build /src/target/release/casegraph /usr/local/bin/casegraph
COPY --from=onnxruntime /out/ /opt/casegraph/lib/
COPY --from=build /src/workflows /opt/casegraph/workflows
COPY --from=build /src/models /opt/casegraph/models
COPY --from=build /src/firmware-profiles /opt/casegraph/firmware-profiles
# The profile is chosen at `docker run -e CASEGRAPH_PROFILE=...`; any configuration key can
# be set the same way (CASEGRAPH_<SECTION>__<KEY>, e.g. CASEGRAPH_LIMITS__WORKERS=2).
# MALLOC_ARENA_MAX keeps glibc from growing one arena per thread on small boxes.
ENV CASEGRAPH_PROFILE=edge-small \
    CASEGRAPH_SERVER__LISTEN=0.0.0.0:8080 \
    CASEGRAPH_LOG_FORMAT=json \
    ORT_DYLIB_PATH=/opt/casegraph/lib/libonnxruntime.so \
    MALLOC_ARENA_MAX=2
VOLUME ["/var/lib/casegraph"]
EXPOSE 8080
USER casegraph:casegraph
WORKDIR /opt/casegraph
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["casegraph", "health", "--url", "http://127.0.0.1:8080/readyz"]
ENTRYPOINT ["casegraph"]
CMD ["serve", "--data", "/var/lib/casegraph"]
