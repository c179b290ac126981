# syntax=docker/dockerfile:1

# ---- build stage -----------------------------------------------------------
FROM rust:1.95-bookworm AS builder
WORKDIR /src

# Only what the build needs (keeps target/, .tools/ and .git out of the
# image even without a .dockerignore).
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
# ledger-catalogue embeds the event schemas with include_str!, and the CLI's
# manifest names its integration tests under tests/.
COPY events ./events
COPY tests ./tests

# The cache mounts keep the registry and target/ between builds; the binary is
# copied out of target/ in the same step because the mount is not in the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p tokenledger \
    && install -m 0755 target/release/tokenledger /usr/local/bin/tokenledger

# ---- runtime stage ---------------------------------------------------------
FROM debian:bookworm-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home ledger \
    && mkdir -p /data \
    && chown ledger:ledger /data

COPY --from=builder /usr/local/bin/tokenledger /usr/local/bin/tokenledger

# A fresh named volume mounted at /data takes this directory's owner, so the
# unprivileged user can write its sled store there.
USER ledger
WORKDIR /data
VOLUME ["/data"]

CMD ["tokenledger", "serve", "--nats", "nats://nats:4222", "--data-dir", "/data"]
