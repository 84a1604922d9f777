# Multi-stage build: a Rust builder with protoc (etcd-client's build needs it), then a slim
# runtime running as a non-root user.
FROM rust:1.95-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home crawler
COPY --from=build /src/target/release/crawler /usr/local/bin/crawler
COPY config.yaml /etc/crawler/config.yaml
USER crawler
EXPOSE 8080 9089
ENTRYPOINT ["crawler"]
