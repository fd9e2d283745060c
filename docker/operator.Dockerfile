# syntax=docker/dockerfile:1
# The operator image: a static-enough Rust binary (rustls, no OpenSSL) on distroless/cc, which has
# glibc and libgcc and nothing else — no shell, no package manager. Build from the repository root:
#   docker build -f docker/operator.Dockerfile -t ghcr.io/kontrast-dev/kontrast-operator:0.1.0 .

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
# The whole workspace is needed for cargo to resolve it; only the operator and its dependencies
# (kontrast-api, no libtorch) are compiled.
COPY Cargo.toml Cargo.lock ./
COPY api api
COPY operator operator
COPY worker worker
COPY data data
COPY tests tests
# Cache mounts keep the registry and the build directory between builds; the binary is copied out
# of the cached target directory because the mount is gone in later steps.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p kontrast-operator --bin kontrast-operator \
 && install -D -m 0755 target/release/kontrast-operator /out/kontrast-operator

# The builder is Debian bookworm, so the runtime must be a bookworm glibc too.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/kontrast-operator /usr/local/bin/kontrast-operator
# distroless's "nonroot" user; numeric so that runAsNonRoot can verify it without /etc/passwd.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/kontrast-operator"]
