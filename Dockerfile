# Dockerfile — the redis-api container image: a release build in rust:bookworm, run on
# debian:bookworm-slim as a non-root user. Only the binary and run.sh (the entrypoint) are in the
# image. Build from the repository root: `docker build -t redis-api:dev .`
# scripts/image-test.sh builds it (and runs it) with podman in CI.

# The base images. The defaults are the real upstream ones; the build args exist so a machine
# without Docker Hub can build from local stand-ins of the same role (scripts/image-test.sh).
# The build stage is pinned to the toolchain the project is developed and tested with; the
# runtime stage is the same Debian release (glibc), pinned to a dated snapshot.
ARG RUST_IMAGE=rust:1.95.0-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-20251229-slim

# --- build stage -----------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS build
WORKDIR /src

# Dependencies first, in a layer of their own: it is rebuilt only when a manifest or Cargo.lock
# changes. A dummy library and binary stand in for the real sources.
# Cargo loads every workspace member's manifest (cluster/, loadtest/, testkit/) to resolve
# the workspace: each needs its Cargo.toml and a stub target. None is built here. cli/ (the
# command-line convention) and http1/ (the HTTP layer) are dependencies of the server: copied
# whole, they are small and change less often than the server.
COPY Cargo.toml Cargo.lock ./
COPY cli ./cli
COPY http1 ./http1
COPY cluster/Cargo.toml cluster/Cargo.toml
COPY loadtest/Cargo.toml loadtest/Cargo.toml
COPY testkit/Cargo.toml testkit/Cargo.toml
RUN mkdir -p src/bin cluster/src loadtest/src testkit/src \
    && echo '// dummy: builds the dependencies only' > src/lib.rs \
    && echo 'fn main() {}' > src/bin/redis-api.rs \
    && echo 'fn main() {}' > cluster/src/main.rs \
    && echo 'fn main() {}' > loadtest/src/main.rs \
    && echo '// dummy: the test harness' > testkit/src/lib.rs \
    && cargo build --release --locked -p redis-api \
    && rm -rf src

# The real sources. COPY keeps their (older) modification times, which would let cargo take the
# dummy's build as fresh: touch them so it rebuilds the crate itself.
COPY src ./src
RUN touch src/lib.rs src/bin/redis-api.rs \
    && cargo build --release --locked -p redis-api

# --- runtime stage ---------------------------------------------------------------------------
# Its bash runs run.sh.
FROM ${RUNTIME_IMAGE}

COPY --from=build /src/target/release/redis-api /usr/local/bin/redis-api
COPY run.sh /usr/local/bin/run.sh

# A numeric UID:GID with no account: nothing in the image needs one, and Kubernetes can check
# runAsNonRoot against a number. The root filesystem can be read-only: nothing writes to it.
USER 10001:10001
EXPOSE 8080
# run.sh maps the environment to flags and execs redis-api, so SIGTERM reaches the server.
ENTRYPOINT ["/usr/local/bin/run.sh"]
