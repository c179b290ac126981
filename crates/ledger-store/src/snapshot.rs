//! The writer's state, saved at a clean shutdown so that the next open
//! replays only the events after it instead of the whole log.
//!
//! A snapshot is derived data, like the projector's views: the log stays the
//! one source of truth. Open uses a snapshot only when its MAC holds and
//! the log still has the snapshot's last event with the same hash, which
//! makes the snapshot the fold of a prefix of *this* log (the hash chain
//! covers every event before it). Anything else (no file, a torn or edited
//! file, another data dir's snapshot, a log shorter than the snapshot) is
//! ignored with a warning, and the whole log is replayed as without one. A
//! crash leaves the previous snapshot in place, which is still a prefix:
//! open replays a longer tail.
//!
//! The file (`DIR/state.snapshot`, JSON Lines): a header line, one line per
//! token (`[state, [positions of its events]]`), one per command that
//! appended events (`[commandId, record]`), then a trailer with the
//! HMAC-SHA256 of every byte before it, keyed by a subkey of the master key:
//! open acts on the states without re-deciding them, and with an unkeyed
//! checksum an edited state (a token un-revoked) was believed. Defence in
//! depth only: whoever writes the data dir can also cut the log's tail,
//! which a signed checkpoint reveals, not open. Commands that appended
//! nothing are not in it: their records are in the log tree, and open reads
//! them either way. It is written to a temporary file, synced, and renamed
//! over the old one, so a crash while writing leaves the old snapshot.

use crate::writer::Idempotency;
use crate::{keys, StoreError, StoredEvent};
use ledger_core::event::GENESIS_HASH;
use ledger_core::sharded::ShardedMap;
use ledger_core::{LedgerState, TokenState};
use ledger_crypto::{MasterKey, StateSeal};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// The snapshot's file name in the data dir.
pub const FILE: &str = "state.snapshot";
/// Format tag of the header: a change of layout gets a new tag, and open
/// ignores a snapshot whose tag it does not know (a replay is always right).
const FORMAT: &str = "tokenledger-state/3";

/// The first line.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Header {
    format: String,
    /// Position of the last event folded in.
    position: u64,
    /// Hash of that event (the genesis hash for position 0).
    hash: String,
    tokens: u64,
    commands: u64,
}

/// The last line.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Trailer {
    /// HMAC-SHA256 of every byte before this line, lowercase hex.
    #[serde(rename = "hmacSha256")]
    mac: String,
}

/// What a usable snapshot gives the replay to start from.
pub(crate) struct Start {
    pub state: LedgerState,
    pub hash: String,
    pub idempotency: ShardedMap<Uuid, Idempotency>,
    pub streams: ShardedMap<Uuid, Vec<u64>>,
}

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// The position a data dir's snapshot covers, from its header alone (`None`
/// when there is no readable one); whether open can use it is for open to say.
pub fn position(dir: &Path) -> Option<u64> {
    let file = File::open(path(dir)).ok()?;
    let mut line = Vec::new();
    BufReader::new(file).read_until(b'\n', &mut line).ok()?;
    serde_json::from_slice::<Header>(&line)
        .ok()
        .map(|h| h.position)
}

/// A writer that seals what goes through it.
struct Sealing<W> {
    inner: W,
    seal: StateSeal,
}

impl<W: Write> Write for Sealing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.seal.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn line<T: Serialize>(out: &mut impl Write, value: &T) -> Result<(), StoreError> {
    serde_json::to_writer(&mut *out, value).map_err(std::io::Error::from)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Writes the snapshot of a writer whose every group is durable.
pub(crate) fn write(
    dir: &Path,
    master: &MasterKey,
    state: &LedgerState,
    hash: &str,
    idempotency: &ShardedMap<Uuid, Idempotency>,
    streams: &ShardedMap<Uuid, Vec<u64>>,
) -> Result<(), StoreError> {
    let tmp = dir.join(format!("{FILE}.tmp"));
    // 0600 like the key files: it holds no plaintext secret (the states keep
    // them sealed, as the log does), but nobody else needs to read it.
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(&tmp)?;
    // A leftover temporary file keeps its mode; the rename would carry it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    let mut out = Sealing {
        inner: BufWriter::with_capacity(1 << 20, file),
        seal: master.state_seal(),
    };
    let commands: Vec<(&Uuid, &Idempotency)> = idempotency
        .iter()
        .filter(|(_, first)| first.appended())
        .collect();
    line(
        &mut out,
        &Header {
            format: FORMAT.into(),
            position: state.position,
            hash: hash.to_owned(),
            tokens: state.token_count() as u64,
            commands: commands.len() as u64,
        },
    )?;
    for token in state.tokens() {
        let stream = streams.get(&token.id).map_or(&[][..], Vec::as_slice);
        line(&mut out, &(token, stream))?;
    }
    for command in commands {
        line(&mut out, &command)?;
    }
    let mac = out.seal.clone().finalize_hex();
    let mut file = out.inner;
    line(&mut file, &Trailer { mac })?;
    let file = file.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path(dir))?;
    // The rename itself is durable only once the directory is synced.
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// Reads lines and seals them, for [`load`].
struct Lines<R> {
    reader: R,
    seal: StateSeal,
    buf: Vec<u8>,
    number: u64,
}

impl<R: BufRead> Lines<R> {
    /// Appends the next whole line to `out`, unsealed; returns where it starts.
    fn read(&mut self, out: &mut Vec<u8>, what: &str) -> Result<usize, String> {
        self.number += 1;
        let start = out.len();
        let n = self
            .reader
            .read_until(b'\n', out)
            .map_err(|e| format!("line {}: {e}", self.number))?;
        if n == 0 || out.last() != Some(&b'\n') {
            return Err(format!(
                "line {}: the file ends before its {what}",
                self.number
            ));
        }
        Ok(start)
    }

    /// Appends the next line, sealed, to `out`.
    fn append(&mut self, out: &mut Vec<u8>, what: &str) -> Result<(), String> {
        let start = self.read(out, what)?;
        self.seal.update(&out[start..]);
        Ok(())
    }

    /// The next line parsed as `T`, sealed unless it is the trailer.
    fn next<T: for<'de> Deserialize<'de>>(&mut self, what: &str, hash: bool) -> Result<T, String> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let read = if hash {
            self.append(&mut buf, what)
        } else {
            self.read(&mut buf, what).map(|_| ())
        };
        let parsed = read.and_then(|()| {
            serde_json::from_slice(&buf).map_err(|e| format!("line {} ({what}): {e}", self.number))
        });
        self.buf = buf;
        parsed
    }
}

/// Lines per batch a parser thread takes.
const BATCH_LINES: u64 = 1024;
/// Parser threads, at most.
const PARSERS_MAX: usize = 4;
/// Entries allocated ahead from the header's counts, at most.
const PREALLOCATE_MAX: u64 = 1 << 20;

/// A run of whole lines of one section, with the number of its first line.
struct Batch {
    tokens: bool,
    first_line: u64,
    bytes: Vec<u8>,
}

/// A batch parsed.
enum Parsed {
    Tokens(Vec<(TokenState, Vec<u64>)>),
    Commands(Vec<(Uuid, Idempotency)>),
}

fn parse_batch(batch: &Batch) -> Result<Parsed, String> {
    let lines = batch.bytes.split_inclusive(|&b| b == b'\n');
    let at = |i: usize, e: serde_json::Error| {
        let what = if batch.tokens { "tokens" } else { "commands" };
        format!("line {} ({what}): {e}", batch.first_line + i as u64)
    };
    if batch.tokens {
        let parsed = lines
            .enumerate()
            .map(|(i, line)| serde_json::from_slice(line).map_err(|e| at(i, e)))
            .collect::<Result<_, _>>()?;
        Ok(Parsed::Tokens(parsed))
    } else {
        let parsed = lines
            .enumerate()
            .map(|(i, line)| serde_json::from_slice(line).map_err(|e| at(i, e)))
            .collect::<Result<_, _>>()?;
        Ok(Parsed::Commands(parsed))
    }
}

type Sections = (
    Vec<TokenState>,
    ShardedMap<Uuid, Vec<u64>>,
    ShardedMap<Uuid, Idempotency>,
);

/// Reads and hashes the token and command lines on this thread while
/// parser threads parse them batch by batch: parsing the JSON is most of a
/// load, and open has the cores to itself.
fn parse_sections<R: BufRead>(lines: &mut Lines<R>, header: &Header) -> Result<Sections, String> {
    let batches = header.tokens.div_ceil(BATCH_LINES) + header.commands.div_ceil(BATCH_LINES);
    let parsers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, PARSERS_MAX)
        .min(usize::try_from(batches).unwrap_or(usize::MAX))
        .max(1);
    // The counts are not trusted until the trailer's hash is checked: a
    // garbled header must end as a refused snapshot, not as an allocation
    // failure, so they only size the first allocation up to a bound.
    let room = |count: u64| usize::try_from(count.min(PREALLOCATE_MAX)).unwrap_or(0);
    let mut tokens = Vec::with_capacity(room(header.tokens));
    let mut streams = ShardedMap::with_capacity(room(header.tokens));
    let mut idempotency = ShardedMap::with_capacity(room(header.commands));
    let mut take = |parsed: Parsed| -> Result<(), String> {
        match parsed {
            Parsed::Tokens(parsed) => {
                for (token, positions) in parsed {
                    if positions.len() as u64 != token.version {
                        return Err(format!(
                            "token {} has a stream of another length than its version",
                            token.id
                        ));
                    }
                    streams.insert(token.id, positions);
                    tokens.push(token);
                }
            }
            Parsed::Commands(parsed) => idempotency.extend(parsed),
        }
        Ok(())
    };
    std::thread::scope(|scope| {
        let mut to_parsers = Vec::with_capacity(parsers);
        let mut from_parsers = Vec::with_capacity(parsers);
        for _ in 0..parsers {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(2);
            let (parsed_tx, parsed_rx) = std::sync::mpsc::channel();
            scope.spawn(move || {
                for batch in rx {
                    if parsed_tx.send(parse_batch(&batch)).is_err() {
                        return;
                    }
                }
            });
            to_parsers.push(tx);
            from_parsers.push(parsed_rx);
        }
        let mut sent = 0usize;
        for (tokens, count) in [(true, header.tokens), (false, header.commands)] {
            let mut left = count;
            while left > 0 {
                let n = left.min(BATCH_LINES);
                let mut batch = Batch {
                    tokens,
                    first_line: lines.number + 1,
                    bytes: Vec::new(),
                };
                for _ in 0..n {
                    lines.append(&mut batch.bytes, if tokens { "tokens" } else { "commands" })?;
                }
                to_parsers[sent % parsers]
                    .send(batch)
                    .map_err(|_| "a snapshot parser stopped".to_owned())?;
                sent += 1;
                left -= n;
            }
        }
        // Closing the batches' channels ends the parsers once they are done.
        drop(to_parsers);
        for parsed in from_parsers.iter().flatten() {
            take(parsed?)?;
        }
        Ok::<(), String>(())
    })?;
    Ok((tokens, streams, idempotency))
}

/// The snapshot in `dir`, if there is one and it is a prefix of `log`.
///
/// `Ok(None)`: there is no snapshot. `Err(reason)`: there is one, unusable
/// for `reason`; the caller replays the whole log.
pub(crate) fn load(
    dir: &Path,
    master: &MasterKey,
    log: &sled::Tree,
) -> Result<Option<Start>, String> {
    let file = match File::open(path(dir)) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let mut lines = Lines {
        reader: BufReader::with_capacity(1 << 20, file),
        seal: master.state_seal(),
        buf: Vec::new(),
        number: 0,
    };
    let header: Header = lines.next("header", true)?;
    if header.format != FORMAT {
        return Err(format!("unknown format {:?}", header.format));
    }
    // Cheap checks first: a snapshot of another log is refused before its
    // tokens are read.
    let logged = if header.position == 0 {
        Some(GENESIS_HASH.to_owned())
    } else {
        log.get(keys::event(header.position))
            .map_err(|e| e.to_string())?
            .map(|value| StoredEvent::from_record(header.position, &value))
            .transpose()
            .map_err(|e| e.to_string())?
            .map(|stored| stored.hash)
    };
    match logged {
        None => {
            return Err(format!(
                "it covers up to position {}, past the log's end",
                header.position
            ))
        }
        Some(logged) if logged != header.hash => {
            return Err(format!(
                "the log's event at position {} has another hash: the snapshot is of another log",
                header.position
            ))
        }
        Some(_) => {}
    }
    let (tokens, streams, idempotency) = parse_sections(&mut lines, &header)?;
    let seal = lines.seal.clone();
    let trailer: Trailer = lines.next("trailer", false)?;
    if !seal.verify_hex(&trailer.mac) {
        return Err(
            "its seal does not match its contents (edited, or written under another master key)"
                .into(),
        );
    }
    if lines
        .reader
        .fill_buf()
        .map_err(|e| e.to_string())?
        .is_empty()
    {
        let state = LedgerState::from_tokens(header.position, tokens).map_err(|e| e.to_string())?;
        return Ok(Some(Start {
            state,
            hash: header.hash,
            idempotency,
            streams,
        }));
    }
    Err("bytes follow its trailer".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::{recover, Recovered};
    use crate::{open_db, Store, StoreConfig};
    use ledger_core::command::{parse_value, ParsedCommand};
    use ledger_core::{CommandName, ErrorCode};
    use ledger_crypto::MasterKey;
    use serde_json::{json, Value};

    /// How long a test waits for the background check.
    const MINUTE: std::time::Duration = std::time::Duration::from_secs(60);

    fn cmd(name: CommandName, mut body: Value) -> ParsedCommand {
        let obj = body.as_object_mut().unwrap();
        obj.entry("commandId")
            .or_insert_with(|| json!(Uuid::new_v4().to_string()));
        obj.insert("workspaceId".into(), json!("acme"));
        obj.insert(
            "actor".into(),
            json!({"agentId": "alice", "agentType": "user"}),
        );
        parse_value(name, body).expect("valid command")
    }

    fn open(dir: &Path, master: &MasterKey) -> Store {
        Store::open(
            dir,
            StoreConfig {
                master_key: Some(master.clone()),
                snapshot_min_events: Some(0),
                ..StoreConfig::default()
            },
        )
        .expect("open")
    }

    /// Runs every kind of command on `store`, `round` keeping names apart;
    /// returns one command to retry later and the token it issued.
    fn workload(store: &Store, round: usize) -> (ParsedCommand, Uuid) {
        let run = |c: ParsedCommand| store.execute_blocking(c).expect("accepted");
        let issue = cmd(
            CommandName::IssueClientToken,
            json!({"name": format!("Bot-{round}"), "providedResourceId": format!("p-{round}")}),
        );
        let bot = run(issue.clone()).token_id;
        // A reuse by provided id that changes nothing appends nothing.
        let reuse = run(cmd(
            CommandName::IssueClientToken,
            json!({"providedResourceId": format!("p-{round}")}),
        ));
        assert!(reuse.positions.is_empty());
        let id = |t: Uuid| json!(t.to_string());
        run(cmd(
            CommandName::UpdateClientToken,
            json!({"tokenId": id(bot), "name": format!("Straße-{round}")}),
        ));
        run(cmd(
            CommandName::AssignPermissionGroups,
            json!({"tokenId": id(bot), "permissionGroups": [{"permissionGroupId": "g1"}]}),
        ));
        run(cmd(
            CommandName::RotateClientToken,
            json!({"tokenId": id(bot)}),
        ));
        let doomed = run(cmd(
            CommandName::IssueClientToken,
            json!({"name": format!("doomed-{round}")}),
        ))
        .token_id;
        run(cmd(CommandName::TrashToken, json!({"tokenId": id(doomed)})));
        run(cmd(CommandName::PurgeToken, json!({"tokenId": id(doomed)})));
        let kept = run(cmd(
            CommandName::IssueClientToken,
            json!({"name": format!("kept-{round}")}),
        ))
        .token_id;
        run(cmd(CommandName::TrashToken, json!({"tokenId": id(kept)})));
        run(cmd(CommandName::RestoreToken, json!({"tokenId": id(kept)})));
        run(cmd(CommandName::RevokeToken, json!({"tokenId": id(kept)})));
        let access = run(cmd(
            CommandName::RegisterAccessToken,
            json!({
                "user": {"id": "71c84cd2-91ac-4e6b-a74e-393c87d5f97d"},
                "provider": "google",
                "accountName": format!("me-{round}@example.com"),
                "accessToken": "secret",
            }),
        ))
        .token_id;
        run(cmd(
            CommandName::RefreshAccessToken,
            json!({"tokenId": id(access), "accessToken": "newer"}),
        ));
        (issue, bot)
    }

    /// A data dir whose store ran round 0 of the workload and stopped
    /// cleanly, leaving a snapshot: with its master key, its head and the
    /// token the round issued first.
    fn stopped_after_workload() -> (tempfile::TempDir, MasterKey, u64, Uuid) {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate();
        let store = open(dir.path(), &master);
        let (_, bot) = workload(&store, 0);
        let head = store.head_position();
        store.shutdown().unwrap();
        (dir, master, head, bot)
    }

    /// What open rebuilds from the snapshot, and what a whole replay does.
    fn both(dir: &Path, master: &MasterKey) -> (Recovered, Recovered) {
        let db = open_db(dir).unwrap();
        let log = db.open_tree("log").unwrap();
        let start = load(dir, master, &log).expect("usable").expect("present");
        let from_snapshot = recover(&log, Some(start)).unwrap();
        let whole = recover(&log, None).unwrap();
        (from_snapshot, whole)
    }

    fn assert_same(a: &Recovered, b: &Recovered) {
        assert_eq!(a.state, b.state, "token states and uniqueness keys");
        assert_eq!(a.head, b.head);
        assert_eq!(a.idempotency, b.idempotency);
        assert_eq!(a.streams, b.streams);
    }

    #[test]
    fn a_snapshot_gives_what_a_whole_replay_gives() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate();
        let store = open(dir.path(), &master);
        let (retried, _) = workload(&store, 0);
        let first = store.execute_blocking(retried.clone()).unwrap();
        let head = store.head_position();
        store.shutdown().unwrap();
        drop(store);

        let (from_snapshot, whole) = both(dir.path(), &master);
        assert_eq!(from_snapshot.snapshot, head);
        assert_eq!(from_snapshot.head.position, head);
        assert_same(&from_snapshot, &whole);

        // And the store opened from it decides as before.
        let store = open(dir.path(), &master);
        assert_eq!(
            store.opened(),
            crate::Opened {
                snapshot: head,
                replayed: 0
            }
        );
        let again = store.execute_blocking(retried).unwrap();
        assert!(again.replayed);
        assert_eq!(again.positions, first.positions);
        let taken = store
            .execute_blocking(cmd(
                CommandName::IssueClientToken,
                json!({"name": "STRASSE-0"}),
            ))
            .unwrap_err();
        assert_eq!(taken.code, ErrorCode::NameTaken);
        assert_eq!(store.head_position(), head);
    }

    #[test]
    fn an_old_snapshot_is_a_prefix_and_open_replays_what_follows_it() {
        let (dir, master, at, _) = stopped_after_workload();
        let old = std::fs::read(path(dir.path())).unwrap();

        let store = open(dir.path(), &master);
        workload(&store, 1);
        let head = store.head_position();
        store.shutdown().unwrap();
        drop(store);
        // As if the process had crashed after the second round.
        std::fs::write(path(dir.path()), &old).unwrap();

        let (from_snapshot, whole) = both(dir.path(), &master);
        assert_eq!(from_snapshot.snapshot, at);
        assert_same(&from_snapshot, &whole);
        let store = open(dir.path(), &master);
        assert_eq!(
            store.opened(),
            crate::Opened {
                snapshot: at,
                replayed: head - at
            }
        );
    }

    #[test]
    fn an_unusable_snapshot_is_ignored_and_the_whole_log_replayed() {
        let master = MasterKey::generate();
        // Two ledgers: `short` with one round, `long` with two.
        let short = tempfile::tempdir().unwrap();
        let long = tempfile::tempdir().unwrap();
        for (dir, rounds) in [(&short, 1), (&long, 2)] {
            let store = open(dir.path(), &master);
            for round in 0..rounds {
                workload(&store, round);
            }
            store.shutdown().unwrap();
        }
        let good = std::fs::read(path(short.path())).unwrap();
        // The first token line starts `[{"id":"<uuid>`: its first digit.
        let digit = good.iter().position(|&b| b == b'\n').unwrap() + 9;
        let flipped = {
            let mut bytes = good.clone();
            // Still a valid id, only another one: the MAC tells.
            bytes[digit] = if bytes[digit] == b'0' { b'1' } else { b'0' };
            bytes
        };
        let garbled = {
            let mut bytes = good.clone();
            bytes[digit] = b'g';
            bytes
        };
        let cases: [(&str, Vec<u8>, &str); 7] = [
            ("flipped", flipped, "seal does not match"),
            ("garbled", garbled, "line 2 (tokens)"),
            ("truncated", good[..good.len() / 2].to_vec(), "ends before"),
            (
                "trailing",
                [&good[..], b"{}\n"].concat(),
                "follow its trailer",
            ),
            (
                "ahead",
                std::fs::read(path(long.path())).unwrap(),
                "past the log's end",
            ),
            ("not json", b"garbage\n".to_vec(), "header"),
            (
                "counts garbled",
                {
                    let text = String::from_utf8(good.clone()).unwrap();
                    let (header, rest) = text.split_once('\n').unwrap();
                    let mut h: Value = serde_json::from_str(header).unwrap();
                    h["tokens"] = json!(u64::MAX);
                    format!("{h}\n{rest}").into_bytes()
                },
                "ends before",
            ),
        ];
        let db = open_db(short.path()).unwrap();
        let log = db.open_tree("log").unwrap();
        for (case, bytes, reason) in &cases {
            std::fs::write(path(short.path()), bytes).unwrap();
            let err = load(short.path(), &master, &log).err();
            assert!(
                err.as_deref().is_some_and(|e| e.contains(reason)),
                "{case}: {err:?}"
            );
        }
        drop(log);
        drop(db);
        // Another ledger's snapshot at a position this log has: refused by hash.
        let other = tempfile::tempdir().unwrap();
        {
            let store = open(other.path(), &master);
            workload(&store, 7);
            store.shutdown().unwrap();
        }
        std::fs::copy(path(other.path()), path(short.path())).unwrap();
        {
            let db = open_db(short.path()).unwrap();
            let log = db.open_tree("log").unwrap();
            let err = load(short.path(), &master, &log).err();
            assert!(
                err.as_deref().is_some_and(|e| e.contains("another log")),
                "{err:?}"
            );
        }
        // Open still works, from the log alone, and decides as before.
        let store = open(short.path(), &master);
        assert_eq!(store.opened().snapshot, 0);
        let taken = store
            .execute_blocking(cmd(
                CommandName::IssueClientToken,
                json!({"name": "kept-0"}),
            ))
            .unwrap_err();
        assert_eq!(taken.code, ErrorCode::NameTaken);
    }

    #[test]
    fn a_snapshot_the_log_after_it_contradicts_is_dropped_for_a_whole_replay() {
        let (dir, master, _, bot) = stopped_after_workload();
        // One more event on a token, with no new snapshot after it.
        let store = Store::open(
            dir.path(),
            StoreConfig {
                master_key: Some(master.clone()),
                snapshot_min_events: None,
                ..StoreConfig::default()
            },
        )
        .unwrap();
        let renamed = store
            .execute_blocking(cmd(
                CommandName::UpdateClientToken,
                json!({"tokenId": bot.to_string(), "name": "again"}),
            ))
            .unwrap();
        store.shutdown().unwrap();
        drop(store);
        // The snapshot edited (MAC recomputed, the stream as long as the
        // version): that token one version on, which its next event denies.
        let text = std::fs::read_to_string(path(dir.path())).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines.pop();
        for line in lines.iter_mut() {
            let mut v: Value = serde_json::from_str(line).unwrap();
            if v[0]["id"] == json!(bot.to_string()) {
                v[0]["version"] = json!(v[0]["version"].as_u64().unwrap() + 1);
                let last = v[1][0].clone();
                v[1].as_array_mut().unwrap().push(last);
                *line = v.to_string();
            }
        }
        let mut body = lines.join("\n");
        body.push('\n');
        let sealed = |master: &MasterKey| {
            let mut seal = master.state_seal();
            seal.update(body.as_bytes());
            format!("{body}{}\n", json!({ "hmacSha256": seal.finalize_hex() }))
        };

        // Sealed by anyone without this ledger's master key: refused as it
        // is, before any state in it is believed.
        std::fs::write(path(dir.path()), sealed(&MasterKey::generate())).unwrap();
        {
            let db = open_db(dir.path()).unwrap();
            let log = db.open_tree("log").unwrap();
            let err = load(dir.path(), &master, &log).err();
            assert!(
                err.as_deref()
                    .is_some_and(|e| e.contains("seal does not match")),
                "{err:?}"
            );
        }

        // Sealed with the master key (a bug, or its holder): the tail still
        // contradicts it.
        std::fs::write(path(dir.path()), sealed(&master)).unwrap();

        let store = open(dir.path(), &master);
        assert_eq!(store.opened().snapshot, 0, "the whole log was replayed");
        assert_eq!(store.head_position(), renamed.positions[0]);
    }

    #[test]
    fn the_log_under_a_snapshot_is_checked_after_open_and_a_bad_event_stops_the_writer() {
        let (dir, master, head, _) = stopped_after_workload();

        // Healthy: the check of positions 1..=head completes after open.
        let store = open(dir.path(), &master);
        assert_eq!(store.opened().snapshot, head);
        assert!(ledger_testkit::wait_for(MINUTE, || store
            .verified_position()
            == head));
        store.shutdown().unwrap();
        drop(store);

        // One byte of event 3 flipped under the snapshot: open itself does
        // not look there, the background check does.
        {
            let db = open_db(dir.path()).unwrap();
            let log = db.open_tree("log").unwrap();
            let mut value = log.get(keys::event(3)).unwrap().unwrap().to_vec();
            let at = value.len() - 3;
            value[at] ^= 0x01;
            log.insert(keys::event(3), value).unwrap();
            db.flush().unwrap();
        }
        let store = open(dir.path(), &master);
        assert_eq!(store.opened().snapshot, head);
        let refused = {
            let mut refused = None;
            let refused_in_time = ledger_testkit::wait_for(MINUTE, || {
                let attempt = store.execute_blocking(cmd(
                    CommandName::IssueClientToken,
                    json!({"name": format!("probe-{}", Uuid::new_v4())}),
                ));
                refused = attempt.err();
                refused.is_some()
            });
            assert!(refused_in_time, "the writer still accepts commands");
            refused.unwrap()
        };
        assert_eq!(refused.code, ErrorCode::Unavailable);
        assert!(
            refused.message.contains("position 3"),
            "{}",
            refused.message
        );
        assert_eq!(store.verified_position(), 0);
        store.shutdown().unwrap();
        drop(store);
        // The snapshot is gone, so the next open replays and names the event.
        assert!(!path(dir.path()).exists());
        match Store::open(
            dir.path(),
            StoreConfig {
                master_key: Some(master),
                ..StoreConfig::default()
            },
        ) {
            Err(StoreError::Corrupt { position, .. }) => assert_eq!(position, 3),
            Err(other) => panic!("expected corruption at 3, got {other}"),
            Ok(_) => panic!("a tampered log must not open"),
        }
    }

    #[test]
    fn a_small_growth_writes_no_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate();
        let store = Store::open(
            dir.path(),
            StoreConfig {
                master_key: Some(master.clone()),
                snapshot_min_events: Some(1_000),
                ..StoreConfig::default()
            },
        )
        .unwrap();
        workload(&store, 0);
        store.shutdown().unwrap();
        assert!(!path(dir.path()).exists());
    }
}
