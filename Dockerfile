# Dockerfile — the redis-api container image: a release build in rust:bookworm, run on
# debian:bookworm-slim as a non-root user. Only the binary and run.sh (the entrypoint) are in the
# image. Build from the repository root: `docker build -t redis-api:dev .`

# --- build stage -----------------------------------------------------------------------------
# Pinned to the toolchain the project is developed and tested with.
FROM rust:1.95.0-bookworm AS build
WORKDIR /src

# Dependencies first, in a layer of their own: it is rebuilt only when Cargo.toml or Cargo.lock
# change. A dummy library and binary stand in for the real sources.
# The workspace's other member (cluster/, a test tool) only needs its manifest and a stub to
# resolve: it is never built here.
COPY Cargo.toml Cargo.lock ./
COPY cluster/Cargo.toml cluster/Cargo.toml
RUN mkdir -p src/bin cluster/src \
    && echo '// dummy: builds the dependencies only' > src/lib.rs \
    && echo 'fn main() {}' > src/bin/redis-api.rs \
    && echo 'fn main() {}' > cluster/src/main.rs \
    && cargo build --release --locked -p redis-api \
    && rm -rf src

# The real sources. COPY keeps their (older) modification times, which would let cargo take the
# dummy's build as fresh: touch them so it rebuilds the crate itself.
COPY src ./src
RUN touch src/lib.rs src/bin/redis-api.rs \
    && cargo build --release --locked -p redis-api

# --- runtime stage ---------------------------------------------------------------------------
# Same Debian release as the build stage (glibc), pinned to a dated snapshot. Its bash runs run.sh.
FROM debian:bookworm-20251229-slim

COPY --from=build /src/target/release/redis-api /usr/local/bin/redis-api
COPY run.sh /usr/local/bin/run.sh

# A numeric UID:GID with no account: nothing in the image needs one, and Kubernetes can check
# runAsNonRoot against a number. The root filesystem can be read-only: nothing writes to it.
USER 10001:10001
EXPOSE 8080
# run.sh maps the environment to flags and execs redis-api, so SIGTERM reaches the server.
ENTRYPOINT ["/usr/local/bin/run.sh"]
