#!/usr/bin/env bash
# Brings up a working ledger on this machine: installs nats-server (2.12+)
# if none is on PATH, starts it with JetStream on loopback, builds the CLI,
# then runs `tokenledger serve` in the foreground. Ctrl-C (or SIGTERM) stops
# the ledger cleanly, then the nats-server this script started.
#
# Environment: TOKENLEDGER_DATA_DIR (default ./data), NATS_PORT (default 4222).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${TOKENLEDGER_DATA_DIR:-./data}"
PORT="${NATS_PORT:-4222}"
URL="nats://127.0.0.1:${PORT}"
mkdir -p "$DATA/nats"

NATS_BIN=$(bash scripts/install-nats.sh)
NATS_PID=""
if (exec 3<>"/dev/tcp/127.0.0.1/${PORT}") 2>/dev/null; then
  echo "== a NATS server already listens on ${URL}; using it (it must have JetStream)" >&2
else
  echo "== starting $("$NATS_BIN" --version) with JetStream on ${URL} (store ${DATA}/nats)" >&2
  "$NATS_BIN" -js -a 127.0.0.1 -p "$PORT" -sd "$DATA/nats" >"$DATA/nats/nats-server.log" 2>&1 &
  NATS_PID=$!
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/${PORT}") 2>/dev/null && break
    kill -0 "$NATS_PID" 2>/dev/null || { cat "$DATA/nats/nats-server.log" >&2; exit 1; }
    sleep 0.1
  done
fi
stop_nats() { [ -n "$NATS_PID" ] && kill "$NATS_PID" 2>/dev/null && wait "$NATS_PID" 2>/dev/null; true; }
trap stop_nats EXIT

echo "== building tokenledger" >&2
cargo build --quiet -p tokenledger
echo "== serving; in another shell try:" >&2
echo "   ./target/debug/tokenledger --nats ${URL} --workspace acme issue --name first" >&2
echo "   ./target/debug/tokenledger --nats ${URL} watch --workspace acme" >&2
./target/debug/tokenledger --data-dir "$DATA/ledger" serve --nats "$URL" &
LEDGER_PID=$!
trap 'kill -TERM "$LEDGER_PID" 2>/dev/null' INT TERM
wait "$LEDGER_PID" || true
wait "$LEDGER_PID" 2>/dev/null || true
