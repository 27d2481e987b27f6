# Images for docker-compose.yml. One build stage compiles everything; the runtime stages
# carry one binary (or the filter) each.
FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN rustup target add wasm32-wasip1
COPY . .
RUN cargo build --release -p palisade-scorer -p palisade-backend \
 && cargo build -p palisade-filter --target wasm32-wasip1 --profile wasm

FROM debian:bookworm-slim AS scorer
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/palisade-scorer /usr/local/bin/palisade-scorer
# The security-event spool (docs/telemetry.md): mount a volume here to keep it across restarts.
RUN mkdir -p /var/lib/palisade/events && chown -R 65534:65534 /var/lib/palisade
ENV PALISADE_SPOOL_DIR=/var/lib/palisade/events
USER 65534:65534
ENTRYPOINT ["palisade-scorer"]
CMD ["serve"]

FROM debian:bookworm-slim AS backend
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/palisade-backend /usr/local/bin/palisade-backend
USER 65534:65534
ENTRYPOINT ["palisade-backend"]

# Envoy with the filter; the entrypoint renders envoy/envoy.yaml's placeholders with envsubst.
FROM envoyproxy/envoy:v1.40.0 AS envoy
RUN apt-get update && apt-get install -y --no-install-recommends gettext-base && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/wasm32-wasip1/wasm/palisade_filter.wasm /etc/palisade/palisade_filter.wasm
COPY envoy/envoy.yaml /etc/palisade/envoy.yaml.tmpl
COPY docker/envoy-entrypoint.sh /usr/local/bin/palisade-envoy
ENTRYPOINT ["/usr/local/bin/palisade-envoy"]
