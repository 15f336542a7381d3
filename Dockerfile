# Container image of the `stratus` binary (every --target, the agent and
# the CLI). Build: docker build -t stratus:dev .
FROM rust:1-bookworm AS build
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p stratus \
 && install -D target/release/stratus /out/stratus

FROM debian:bookworm-slim
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data stratus \
 && mkdir -p /data && chown stratus /data
COPY --from=build /out/stratus /usr/local/bin/stratus
USER 10001
WORKDIR /data
EXPOSE 9009 9095
ENTRYPOINT ["/usr/local/bin/stratus"]
CMD ["--data-dir=/data"]
