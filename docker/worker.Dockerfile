# syntax=docker/dockerfile:1
# The worker image: the `kontrast` binary (training, launch, evaluation) on the official PyTorch
# CUDA image, whose torch 2.13 wheel brings libtorch, CUDA and NCCL — exactly what tch 0.26 and the
# c10d shim link against. Build from the repository root:
#   docker build -f docker/worker.Dockerfile -t ghcr.io/kontrast-dev/kontrast-worker:0.1.0 .
# The devel image has the compiler and the CUDA headers the NCCL shim needs; the runtime image has
# the same Python environment (same paths, so the binary's rpath into torch/lib holds) without them.

ARG RUST_VERSION=1.95
ARG PYTORCH_TAG=2.13.0-cuda13.0-cudnn9

FROM rust:${RUST_VERSION}-bookworm AS rust

FROM pytorch/pytorch:${PYTORCH_TAG}-devel AS builder
# The Rust toolchain from the official image: rustup's binaries run on any glibc distribution.
COPY --from=rust /usr/local/cargo /usr/local/cargo
COPY --from=rust /usr/local/rustup /usr/local/rustup
ENV CARGO_HOME=/usr/local/cargo \
    RUSTUP_HOME=/usr/local/rustup \
    PATH=/usr/local/cargo/bin:/opt/conda/bin:${PATH} \
    # torch-sys asks the image's python for libtorch instead of downloading one.
    LIBTORCH_USE_PYTORCH=1 \
    # CUDA and NCCL headers for the c10d NCCL shim (worker/build.rs also looks beside the wheel).
    CUDA_HOME=/usr/local/cuda
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY api api
COPY operator operator
COPY worker worker
COPY data data
COPY tests tests
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    python -c "import torch; assert torch.__version__.startswith('2.13.'), torch.__version__" \
 && cargo build --release --locked -p kontrast-worker --features nccl --bin kontrast \
 && install -D -m 0755 target/release/kontrast /out/kontrast

FROM pytorch/pytorch:${PYTORCH_TAG}-runtime
COPY --from=builder /out/kontrast /usr/local/bin/kontrast
# The pods mount an emptyDir at /tmp and keep the root file system read-only: caches go there.
ENV HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    TORCH_HOME=/tmp/.cache/torch
WORKDIR /tmp
# The operator's worker pods run as 65532 (operator/src/objects/pod.rs); numeric for runAsNonRoot.
USER 65532:65532
ENTRYPOINT ["kontrast"]
CMD ["--help"]
