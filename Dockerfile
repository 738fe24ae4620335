# casegraph appliance image (minimal until the appliance issue: builds the CLI and ships the
# shipped workflows; the service, ONNX Runtime and firmware profiles join it later).
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock rust-toolchain.toml ./
COPY engine ./engine
COPY src ./src
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/casegraph casegraph
COPY --from=build /src/target/release/casegraph /usr/local/bin/casegraph
COPY workflows /opt/casegraph/workflows
USER casegraph
WORKDIR /opt/casegraph
ENTRYPOINT ["casegraph"]
CMD ["validate", "workflows"]
