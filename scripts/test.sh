#!/usr/bin/env bash
# The project's test command (see README): installs nats-server if needed,
# then checks formatting, lints and runs every test of the workspace (debug).
set -euo pipefail

cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."

step() { printf '\n==> %s\n' "$*"; }

step "install nats-server (scripts/install-nats.sh)"
NATS_SERVER_BIN="$(bash scripts/install-nats.sh)"
export NATS_SERVER_BIN
echo "NATS_SERVER_BIN=${NATS_SERVER_BIN} ($("${NATS_SERVER_BIN}" --version))"

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test --workspace"
cargo test --workspace
