# credwatch container image: a release build, run from a minimal base as a
# non-root user. Build: docker build -t registry.example.com/credwatch:0.1.0 .
# Linted in CI with hadolint (deploy/check); see docs/operations.md ("Container image")
# for what was and was not built here.

FROM rust:1.95-slim-bookworm AS build
# librdkafka (bundled by rdkafka) builds with make, a C/C++ compiler,
# pkg-config, zlib's headers, and OpenSSL's for TLS to Kafka (the `tls`
# feature: a SASL password must not travel in clear text).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends make gcc g++ pkg-config zlib1g-dev libssl-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# The workspace's other member (the test kit): cargo reads its manifest.
COPY tests/support ./tests/support
RUN cargo build --release --locked --features tls --bin credwatch \
    && strip target/release/credwatch

# glibc, libgcc, OpenSSL (libssl3) and CA certificates, no shell, uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/credwatch /usr/local/bin/credwatch
USER 65532:65532
EXPOSE 9898
ENTRYPOINT ["/usr/local/bin/credwatch"]
CMD ["run", "--config", "/etc/credwatch/credwatch.toml"]
