# Multi-stage build of the `arbiter` binary:
#   docker build -t ghcr.io/arbiter-dev/arbiter:0.1.0 .
# The build stage compiles RocksDB (clang for its bindings), wasmtime and
# etcd's client (protoc for its API); the runtime image holds the stripped
# binary only (its debug info stays in the build stage as arbiter.debug)
# and runs as a non-root user (uid 10001, as in deploy/kubernetes) on a
# read-only root filesystem.

FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends clang libclang-dev protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock rustfmt.toml clippy.toml ./
COPY proto proto
COPY crates crates
COPY policies/wit policies/wit
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p arbiter-server --bin arbiter \
 && objcopy --only-keep-debug target/release/arbiter /usr/local/bin/arbiter.debug \
 && objcopy --strip-all --add-gnu-debuglink=/usr/local/bin/arbiter.debug target/release/arbiter /usr/local/bin/arbiter

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin arbiter
COPY --from=build /usr/local/bin/arbiter /usr/local/bin/arbiter
USER 10001:10001
EXPOSE 50051 8080
ENTRYPOINT ["/usr/local/bin/arbiter"]
CMD ["serve", "--data-dir", "/var/lib/arbiter", "--grpc-addr", "0.0.0.0:50051", "--http-addr", "0.0.0.0:8080", "--log-format", "json"]
