#!/usr/bin/env bash
# Builds the CLI and walks one client token through its life on a fresh data
# dir: issue, list, trash, list the trash, history. Safe to run repeatedly:
# each run uses a new temporary data dir, removed at the end, and never a
# server or a data dir named by the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
# The CLI reads its defaults from TOKENLEDGER_* and goes over NATS whenever
# TOKENLEDGER_NATS is set (the README suggests exporting it), --data-dir or
# not: clear them all (TOKENLEDGER_NATS, TOKENLEDGER_NATS_CREDS,
# TOKENLEDGER_NATS_NKEY, TOKENLEDGER_DATA_DIR, ...), so that the demo's tokens
# never land in a real ledger.
unset "${!TOKENLEDGER_@}"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
DATA="$TMP/data"
cargo build --quiet -p tokenledger
TARGET=$(cargo metadata --format-version 1 --no-deps \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
tl() { "$TARGET/debug/tokenledger" --data-dir "$DATA" --workspace acme "$@"; }
echo "== data dir: $DATA (temporary)"
echo "== issue a client token named 'Deploy Bot'"
ID=$(tl --json issue --name "Deploy Bot" --group readers --expires +30d \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"]["resourceId"])')
echo "   resourceId $ID"
echo "== list"
tl list
echo "== trash it"
tl trash "$ID" --reason "demo"
echo "== list (trashed tokens are hidden by default)"
tl list
echo "== list --trashed only"
tl list --trashed only
echo "== history"
tl history "$ID"
