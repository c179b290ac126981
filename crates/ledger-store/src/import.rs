//! Rebuilding a lost data dir's log from a copy of its events.
//!
//! The JetStream stream `TOKENS` holds every event of the log at its own
//! position, byte for byte as chained, so a data dir whose disk is gone can
//! be rebuilt from it (`tokenledger recover`, which reads and verifies the
//! stream with ledger-audit first). This module only writes: each event is
//! checked as open checks the log (hash against bytes, position, link) and
//! stored in the `log` tree's own format, in a staging database beside the
//! data dir's; [`LogImport::finish`] moves it into place only once every
//! event is in and flushed. An import that stops before that leaves the
//! data dir as it was (the staging dir is removed, now or at the next try).

use crate::read::StoredEvent;
use crate::{db_path, holds_ledger, keys, open_db, StoreError};
use ledger_core::event::GENESIS_HASH;
use ledger_core::Envelope;
use std::path::{Path, PathBuf};

/// The staging data dir inside the target data dir.
const STAGING: &str = ".recover.tmp";
/// Records per `apply_batch`.
const BATCH: usize = 4096;

/// A log being written from a copy of its events, position by position.
pub struct LogImport {
    dir: PathBuf,
    staging: PathBuf,
    db: Option<sled::Db>,
    log: sled::Tree,
    batch: sled::Batch,
    in_batch: usize,
    next: u64,
    prev_hash: String,
}

impl LogImport {
    /// Starts an import into `dir`, which must not hold a ledger.
    pub fn create(dir: &Path) -> Result<LogImport, StoreError> {
        if holds_ledger(dir) {
            return Err(StoreError::Exists(dir.display().to_string()));
        }
        crate::create_private_dir(dir, true)?;
        let staging = dir.join(STAGING);
        // Left by an import that was interrupted: never moved into place.
        // One still running holds its database's lock: refused, not removed.
        if staging.exists() {
            if db_path(&staging).exists() {
                drop(open_db(&staging)?);
            }
            std::fs::remove_dir_all(&staging)?;
        }
        crate::create_private_dir(&staging, false)?;
        let db = open_db(&staging)?;
        let log = db.open_tree("log")?;
        Ok(LogImport {
            dir: dir.to_path_buf(),
            staging,
            db: Some(db),
            log,
            batch: sled::Batch::default(),
            in_batch: 0,
            next: 1,
            prev_hash: GENESIS_HASH.to_owned(),
        })
    }

    /// Appends the next event: `env` (its `hash` filled in) and the
    /// canonical bytes it was hashed from. Refused, naming the position,
    /// unless it is the next position, its bytes hash to its `hash`, decode
    /// to its position, and its `prevHash` is the previous event's hash.
    pub fn append(&mut self, env: &Envelope, canonical: &[u8]) -> Result<(), StoreError> {
        if env.position != self.next {
            return Err(StoreError::Corrupt {
                position: env.position,
                reason: format!("expected position {} next", self.next),
            });
        }
        let stored = StoredEvent {
            position: env.position,
            hash: env.hash.clone(),
            bytes: canonical.to_vec(),
        };
        stored.check(env.position, &self.prev_hash)?;
        self.batch.insert(
            &keys::event(env.position)[..],
            StoredEvent::record(&stored.hash, &stored.bytes),
        );
        self.in_batch += 1;
        self.next += 1;
        self.prev_hash = stored.hash;
        if self.in_batch >= BATCH {
            self.log.apply_batch(std::mem::take(&mut self.batch))?;
            self.in_batch = 0;
        }
        Ok(())
    }

    /// The last position appended (0 before the first).
    pub fn head(&self) -> u64 {
        self.next - 1
    }

    /// Writes what is left, flushes, and moves the log into the data dir;
    /// the head position. Until this returns, the data dir holds no ledger.
    pub fn finish(mut self) -> Result<u64, StoreError> {
        self.log.apply_batch(std::mem::take(&mut self.batch))?;
        let db = self.db.take().expect("finish runs once");
        db.flush()?;
        drop(db);
        std::fs::rename(db_path(&self.staging), db_path(&self.dir))?;
        // The rename is durable before anyone is told the ledger is there.
        std::fs::File::open(&self.dir)?.sync_all()?;
        std::fs::remove_dir_all(&self.staging)?;
        Ok(self.head())
    }
}

impl Drop for LogImport {
    fn drop(&mut self) {
        if self.db.take().is_some() {
            // Not finished: nothing may look like a ledger.
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Store, StoreConfig};

    fn events(n: u64) -> Vec<(Envelope, Vec<u8>)> {
        ledger_testkit::renamed_chain(n, "svc")
            .into_iter()
            .map(|env| {
                let bytes = env.canonical_bytes();
                (env, bytes)
            })
            .collect()
    }

    #[test]
    fn an_imported_log_opens_as_the_ledger_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let chain = events(5);
        let mut import = LogImport::create(dir.path()).unwrap();
        for (env, bytes) in &chain {
            import.append(env, bytes).unwrap();
        }
        assert!(!holds_ledger(dir.path()), "nothing in place before finish");
        assert_eq!(import.finish().unwrap(), 5);
        assert!(!dir.path().join(STAGING).exists());
        // Keys from a backup, as `recover` asks for: none here, so new ones.
        assert!(matches!(
            Store::open(dir.path(), StoreConfig::default()),
            Err(crate::StoreError::Keys { .. })
        ));
        let config = StoreConfig {
            new_keys_for_existing_data: true,
            ..StoreConfig::default()
        };
        let store = Store::open(dir.path(), config).unwrap();
        assert_eq!(store.head_position(), 5);
        let last = store.event(5).unwrap().unwrap();
        assert_eq!(last.hash, chain[4].0.hash);
        assert_eq!(last.bytes, chain[4].1);
        store.shutdown().unwrap();
    }

    #[test]
    fn a_bad_event_is_refused_and_an_unfinished_import_leaves_no_ledger() {
        let dir = tempfile::tempdir().unwrap();
        let chain = events(3);
        let mut import = LogImport::create(dir.path()).unwrap();
        import.append(&chain[0].0, &chain[0].1).unwrap();
        // Out of order, a changed byte, a broken link: each names its position.
        let skipped = import.append(&chain[2].0, &chain[2].1).unwrap_err();
        assert!(
            matches!(skipped, StoreError::Corrupt { position: 3, .. }),
            "{skipped}"
        );
        let mut altered = chain[1].1.clone();
        let at = altered.iter().position(|b| *b == b's').unwrap();
        altered[at] = b'S';
        let changed = import.append(&chain[1].0, &altered).unwrap_err();
        assert!(
            matches!(changed, StoreError::Corrupt { position: 2, .. }),
            "{changed}"
        );
        let mut unlinked = chain[1].0.clone();
        unlinked.prev_hash = "0".repeat(64);
        let bytes = unlinked.canonical_bytes();
        unlinked.hash = ledger_core::event::hash_hex(&bytes);
        let broken = import.append(&unlinked, &bytes).unwrap_err();
        assert!(
            matches!(broken, StoreError::Corrupt { position: 2, .. }),
            "{broken}"
        );
        assert_eq!(import.head(), 1);
        drop(import);
        assert!(!holds_ledger(dir.path()));
        assert!(!dir.path().join(STAGING).exists());
    }

    #[test]
    fn a_running_import_is_not_disturbed_and_a_dead_one_is_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let chain = events(1);
        let mut running = LogImport::create(dir.path()).unwrap();
        running.append(&chain[0].0, &chain[0].1).unwrap();
        let e = LogImport::create(dir.path()).err().expect("refused");
        assert_eq!(e.code(), "locked", "{e}");
        assert_eq!(running.finish().unwrap(), 1, "the running one is intact");

        // What a killed import leaves: a staging database nobody holds.
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().join(STAGING);
        std::fs::create_dir(&staging).unwrap();
        drop(open_db(&staging).unwrap());
        std::fs::write(staging.join("leftover"), b"x").unwrap();
        let import = LogImport::create(dir.path()).unwrap();
        assert!(!staging.join("leftover").exists(), "cleared");
        drop(import);
        assert!(!staging.exists());
    }

    #[test]
    fn a_data_dir_that_holds_a_ledger_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        Store::open(dir.path(), StoreConfig::default())
            .unwrap()
            .shutdown()
            .unwrap();
        let e = LogImport::create(dir.path()).err().expect("refused");
        assert_eq!(e.code(), "exists", "{e}");
    }
}
