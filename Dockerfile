# Multi-stage build: a Rust builder with protoc and the well-known .proto files (etcd-client's
# build needs both), then a slim runtime running as a non-root user, with python3 and the
# example runner so that the demo's tasks really run.
FROM rust:1.95-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl python3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home crawler
COPY --from=build /src/target/release/crawler /usr/local/bin/crawler
COPY config.yaml /etc/crawler/config.yaml
# Workers start here, so the runner template's {worker_dir}/scripts/example_crawler.py is found.
WORKDIR /usr/share/crawler
COPY scripts/example_crawler.py scripts/crawler_agent.py /usr/share/crawler/scripts/
USER crawler
EXPOSE 8080 9089
ENTRYPOINT ["crawler"]
