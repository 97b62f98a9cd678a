# syntax=docker/dockerfile:1
#
# kurz's container image: built on the official Rust image, run from a distroless image that has
# glibc, libgcc and CA certificates and nothing else (no shell, no package manager), as a
# non-root user. The binary has the default features (DynamoDB included).
#
#   docker build -t kurz .
#   docker run --rm -p 8080:8080 kurz          # embedded store under /home/nonroot/data
#
# The image is for the architecture it is built on; cross-build with
# `docker buildx build --platform linux/arm64 ...` and set cpu_architecture = "ARM64" in infra/.

FROM rust:1.95-bookworm AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /app

# Dependencies first, in their own layer: it is rebuilt only when Cargo.toml or Cargo.lock
# change. Stub sources stand in for src/ and for the benchmarks Cargo.toml names (cargo wants
# every declared target's file to exist), then the stub's own artifacts are removed.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && : > src/lib.rs \
    && sed -n '/^\[\[bench\]\]/,/^name/ s/^name = "\(.*\)"$/\1/p' Cargo.toml \
        | while read -r bench; do echo 'fn main() {}' > "benches/${bench}.rs"; done \
    && cargo build --release --locked \
    && rm -rf src benches target/release/kurz target/release/deps/kurz-* \
        target/release/deps/libkurz-* target/release/.fingerprint/kurz-*

# kurz itself.
COPY src ./src
COPY benches ./benches
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && cp target/release/kurz /kurz

FROM gcr.io/distroless/cc-debian12:nonroot

LABEL org.opencontainers.image.title="kurz" \
      org.opencontainers.image.description="A fast URL shortener: one binary from a laptop to a DynamoDB + Redis fleet" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"

COPY --from=builder /kurz /usr/local/bin/kurz

# distroless's nonroot user (uid 65532; by number, so every runtime resolves it) owns its home:
# the embedded store's ./data goes there when the image runs without DynamoDB.
WORKDIR /home/nonroot
USER 65532:65532

ENV KURZ__SERVER__BIND=0.0.0.0:8080
EXPOSE 8080

# `kurz healthcheck` asks /healthz on the bind address and exits 0 when it answers (the image
# has no shell or curl to do it otherwise).
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["/usr/local/bin/kurz", "healthcheck"]

ENTRYPOINT ["/usr/local/bin/kurz"]
CMD ["serve"]
