#!/usr/bin/env bash
# Brings up a working ledger on this machine: installs nats-server (2.12+)
# if none is on PATH, starts it with JetStream on loopback, builds the CLI,
# then runs `tokenledger serve` in the foreground. Ctrl-C (or SIGTERM) stops
# the ledger cleanly, then the nats-server this script started. Exits with
# the server's exit code (4: the data dir is held by another process).
#
# Environment: TOKENLEDGER_DATA_DIR (the ledger's data dir, default ./data,
# the CLI's default too, so that the CLI finds it once the server stops),
# NATS_STORE_DIR (JetStream's store, default ./nats-data), NATS_PORT
# (default 4222), GOGC for nats-server (default 800, see the README's
# "Tuning nats-server"). CARGO_TARGET_DIR is honoured.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${TOKENLEDGER_DATA_DIR:-./data}"
STORE="${NATS_STORE_DIR:-./nats-data}"
PORT="${NATS_PORT:-4222}"
URL="nats://127.0.0.1:${PORT}"
mkdir -p "$STORE"

NATS_BIN=$(bash scripts/install-nats.sh)
NATS_PID=""
if (exec 3<>"/dev/tcp/127.0.0.1/${PORT}") 2>/dev/null; then
  echo "== a NATS server already listens on ${URL}; using it (it must have JetStream)" >&2
else
  echo "== starting $("$NATS_BIN" --version) with JetStream on ${URL} (store ${STORE})" >&2
  # In a session of its own: a Ctrl-C in the terminal reaches the whole
  # foreground process group, and nats-server must outlive the ledger's
  # drain (the EXIT trap stops it afterwards).
  GOGC="${GOGC:-800}" setsid "$NATS_BIN" -js -a 127.0.0.1 -p "$PORT" -sd "$STORE" >"$STORE/nats-server.log" 2>&1 &
  NATS_PID=$!
  listening=""
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/${PORT}") 2>/dev/null && { listening=1; break; }
    kill -0 "$NATS_PID" 2>/dev/null || { cat "$STORE/nats-server.log" >&2; exit 1; }
    sleep 0.1
  done
  [ -n "$listening" ] || { echo "nats-server is not listening on ${URL} after 10 s" >&2; cat "$STORE/nats-server.log" >&2; exit 1; }
fi
stop_nats() { [ -n "$NATS_PID" ] && kill "$NATS_PID" 2>/dev/null && wait "$NATS_PID" 2>/dev/null; true; }
trap stop_nats EXIT

echo "== building tokenledger" >&2
cargo build --quiet -p tokenledger
TARGET=$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BIN="$TARGET/debug/tokenledger"
echo "== serving (data dir ${DATA}); in another shell try:" >&2
echo "   $BIN --nats ${URL} --workspace acme issue --name first" >&2
echo "   $BIN --nats ${URL} watch --workspace acme" >&2
"$BIN" --data-dir "$DATA" serve --nats "$URL" &
LEDGER_PID=$!
trap 'kill -TERM "$LEDGER_PID" 2>/dev/null' INT TERM
# A trapped signal cuts `wait` short while the server is still stopping (a
# stopped but unreaped server still answers kill -0): wait again, until
# `wait` has the server's own exit code.
while true; do
  wait "$LEDGER_PID" && STATUS=0 || STATUS=$?
  kill -0 "$LEDGER_PID" 2>/dev/null || break
done
exit "$STATUS"
