#!/usr/bin/env bash
# Brings up a working ledger on this machine: installs nats-server (2.12+)
# if none is on PATH, starts it with JetStream on loopback, builds the CLI,
# then runs `tokenledger serve` in the foreground. Ctrl-C (or SIGTERM) stops
# the ledger cleanly, then the nats-server this script started. Exits with
# the server's exit code (4: the data dir is held by another process), or 1
# with a message when it refuses to start (see below).
#
# Environment: TOKENLEDGER_DATA_DIR (the ledger's data dir, default ./data,
# the CLI's default too, so that the CLI finds it once the server stops),
# NATS_STORE_DIR (JetStream's store, default ./nats-data), NATS_PORT
# (default 4222), NATS_REUSE=1 (see below), GOGC for nats-server (default
# 800, see the README's "Tuning nats-server"). CARGO_TARGET_DIR is honoured.
#
# It refuses to start, and removes nothing, when:
# - something already listens on the NATS port (a nats-server left by an
#   earlier run, docker compose's, another program: this script cannot tell).
#   Stop it, or pick another NATS_PORT; NATS_REUSE=1 uses that server as it
#   is (it must be NATS with JetStream, and no other ledger may serve it).
# - the data dir holds no ledger but the JetStream store it manages holds the
#   stream TOKENS of an earlier one (`rm -rf data` alone): serve would stop
#   with `stream_ahead`. To start over, remove both: rm -rf data nats-data.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${TOKENLEDGER_DATA_DIR:-./data}"
STORE="${NATS_STORE_DIR:-./nats-data}"
PORT="${NATS_PORT:-4222}"
URL="nats://127.0.0.1:${PORT}"

listening() { (exec 3<>"/dev/tcp/127.0.0.1/${PORT}") 2>/dev/null; }
# nats-server keeps a stream in STORE/jetstream/ACCOUNT/streams/NAME.
holds_tokens_stream() {
  local dir
  for dir in "$1"/jetstream/*/streams/TOKENS; do [ -d "$dir" ] && return 0; done
  return 1
}

NATS_PID=""
# shellcheck disable=SC2329  # run by the EXIT trap
stop_nats() { [ -n "$NATS_PID" ] && kill "$NATS_PID" 2>/dev/null && wait "$NATS_PID" 2>/dev/null; true; }

if listening; then
  if [ "${NATS_REUSE:-}" != 1 ]; then
    cat >&2 <<EOF
up.sh: something already listens on 127.0.0.1:${PORT}, and this script cannot
tell what: a nats-server an earlier run left behind, the NATS of docker compose
(whose own ledger holds the writer lease), another program.
Stop it (\`ss -ltnp 'sport = :${PORT}'\` shows which process holds the port),
or use another port:   NATS_PORT=4223 bash scripts/up.sh
or use that server as it is (NATS with JetStream, no other ledger serving it):
                       NATS_REUSE=1 bash scripts/up.sh
EOF
    exit 1
  fi
  echo "== NATS_REUSE=1: using the NATS server on ${URL} (it must have JetStream; its store is its own, not ${STORE})" >&2
else
  # Starting over with `rm -rf data` alone: the store still holds the old
  # ledger's stream, which the fresh log is behind (serve: stream_ahead).
  if [ ! -e "$DATA/ledger.sled" ] && holds_tokens_stream "$STORE"; then
    if [ -e "$DATA" ]; then remove=$(printf '%q %q' "$DATA" "$STORE"); else remove=$(printf '%q' "$STORE"); fi
    cat >&2 <<EOF
up.sh: the data dir ${DATA} holds no ledger, but the JetStream store ${STORE}
holds the stream TOKENS of an earlier one: serve would stop with stream_ahead.
Nothing was started or removed. To start over, remove what is left:
  rm -rf ${remove}
If the ledger lives in another data dir, set TOKENLEDGER_DATA_DIR to it. To
rebuild a lost data dir from the stream, see the README's "Recovering a lost
data dir".
EOF
    exit 1
  fi
  mkdir -p "$STORE"
  NATS_BIN=$(bash scripts/install-nats.sh)
  echo "== starting $("$NATS_BIN" --version) with JetStream on ${URL} (store ${STORE})" >&2
  # In a session of its own: a Ctrl-C in the terminal reaches the whole
  # foreground process group, and nats-server must outlive the ledger's
  # drain (the EXIT trap stops it afterwards).
  GOGC="${GOGC:-800}" setsid "$NATS_BIN" -js -a 127.0.0.1 -p "$PORT" -sd "$STORE" >"$STORE/nats-server.log" 2>&1 &
  NATS_PID=$!
  # From here on, any exit (a failure, Ctrl-C, SIGTERM) stops it.
  trap stop_nats EXIT
  deadline=$((SECONDS + 10))
  until listening; do
    kill -0 "$NATS_PID" 2>/dev/null || { cat "$STORE/nats-server.log" >&2; exit 1; }
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "nats-server is not listening on ${URL} after 10 s" >&2
      cat "$STORE/nats-server.log" >&2
      exit 1
    fi
    sleep 0.1
  done
fi

echo "== building tokenledger" >&2
cargo build --quiet -p tokenledger
TARGET=$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
BIN="$TARGET/debug/tokenledger"

# serve says "tokenledger: serving ..." on stderr once it answers (after the
# stream check and the writer lease); the hints come only then. Its stderr
# goes through this relay, which reads until serve closes it: it ignores the
# terminal's Ctrl-C so that serve's last lines still reach the terminal.
relay_serve_log() {
  local line hinted=""
  while IFS= read -r line || [ -n "$line" ]; do
    printf '%s\n' "$line" >&2
    if [ -z "$hinted" ] && [[ $line == "tokenledger: serving "* ]]; then
      hinted=1
      echo "== the ledger is serving; in another shell try:" >&2
      echo "   $BIN --nats ${URL} --workspace acme issue --name first" >&2
      echo "   $BIN --nats ${URL} watch --workspace acme" >&2
    fi
  done
}
echo "== starting tokenledger serve (data dir ${DATA})" >&2
exec {SERVE_LOG}> >(trap '' INT TERM; relay_serve_log)
RELAY_PID=$!
"$BIN" --data-dir "$DATA" serve --nats "$URL" 2>&"$SERVE_LOG" &
LEDGER_PID=$!
exec {SERVE_LOG}>&-
trap 'kill -TERM "$LEDGER_PID" 2>/dev/null' INT TERM
# A trapped signal cuts `wait` short while the server is still stopping (a
# stopped but unreaped server still answers kill -0): wait again, until
# `wait` has the server's own exit code.
while true; do
  wait "$LEDGER_PID" && STATUS=0 || STATUS=$?
  kill -0 "$LEDGER_PID" 2>/dev/null || break
done
# The relay ends when serve's stderr closes, i.e. now: let it print the rest.
wait "$RELAY_PID" 2>/dev/null || true
exit "$STATUS"
