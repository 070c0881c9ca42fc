# Multi-stage build: compile in the Rust image, run as a non-root user in a slim
# Debian image. libclang is there for pg_query (the SQL parser) used by the DDL engine.
FROM rust:1-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends libclang-dev clang \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && cargo build --release --locked || true
COPY src ./src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin pgshift

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin pgshift
COPY --from=build /src/target/release/pgshift /usr/local/bin/pgshift
COPY proxy-config/pgshift.toml /etc/pgshift/pgshift.toml
USER 10001:10001
# 6432 proxy, 6433 admin console, 9187 metrics.
EXPOSE 6432 6433 9187
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/pgshift"]
# Listen on all interfaces inside the container; point upstream at your Postgres.
# /metrics is reachable from outside for a scraper (it has no login: publish 9187
# only on a network you trust); the admin console stays on loopback (no TLS yet).
CMD ["serve", "--config", "/etc/pgshift/pgshift.toml", "--listen", "0.0.0.0:6432", "--metrics-listen", "0.0.0.0:9187"]
