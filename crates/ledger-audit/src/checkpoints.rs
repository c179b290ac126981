//! Making, signing and storing checkpoints.
//!
//! Checkpoints live as files in `DATA_DIR/checkpoints/`, one per tree size,
//! named `<size, 20 digits>.note` so that name order is size order, each the
//! signed note exactly as published. Files rather than a sled tree: an
//! auditor copies one out and later hands it to `audit verify --checkpoint
//! FILE`, and reading them needs no lock on the database. Each is written
//! atomically (temporary file, fsync, rename) and never rewritten: a second
//! checkpoint at a size already signed returns the stored one.

use crate::keyfile::{replace_file, CheckpointKey};
use crate::merkle::leaf_hash;
use crate::merkle::Accumulator;
use crate::note::{Checkpoint, SignedCheckpoint};
use crate::source::LogReader;
use crate::AuditError;
use ledger_core::Timestamp;
use ledger_store::Store;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The directory of stored checkpoints, in the data dir.
pub const CHECKPOINT_DIR: &str = "checkpoints";
/// A checkpoint file's suffix.
const SUFFIX: &str = ".note";
/// Stored checkpoints read, at most (the newest are kept).
pub const STORED_CHECKPOINTS_MAX: usize = 100_000;

/// The checkpoints of one data dir.
#[derive(Clone, Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
}

impl CheckpointStore {
    /// The store of `data_dir` (nothing is created until one is saved).
    pub fn new(data_dir: &Path) -> CheckpointStore {
        CheckpointStore {
            dir: data_dir.join(CHECKPOINT_DIR),
        }
    }

    /// The file a checkpoint of `size` is stored in.
    pub fn path(&self, size: u64) -> PathBuf {
        self.dir.join(format!("{size:020}{SUFFIX}"))
    }

    /// The names of the stored checkpoint files, smallest size first.
    fn names(&self) -> Result<Vec<String>, AuditError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(AuditError::io("list", &self.dir, e)),
        };
        let mut names: Vec<String> = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| AuditError::io("list", &self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // Only the names this store writes: a copy such as
            // `audit-jan.note` would otherwise sort after every size.
            if size_of_name(&name).is_some() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Every stored checkpoint with its file, smallest size first.
    pub fn list(&self) -> Result<Vec<(PathBuf, SignedCheckpoint)>, AuditError> {
        let names = self.names()?;
        let skip = names.len().saturating_sub(STORED_CHECKPOINTS_MAX);
        names
            .into_iter()
            .skip(skip)
            .map(|name| self.read(&name))
            .collect()
    }

    /// The newest (largest) stored checkpoint (reads that file only).
    pub fn latest(&self) -> Result<Option<(PathBuf, SignedCheckpoint)>, AuditError> {
        self.names()?.pop().map(|name| self.read(&name)).transpose()
    }

    /// True when any checkpoint is stored.
    pub fn any(&self) -> Result<bool, AuditError> {
        Ok(!self.names()?.is_empty())
    }

    /// Reads a stored checkpoint; its size must be the one its name says.
    fn read(&self, name: &str) -> Result<(PathBuf, SignedCheckpoint), AuditError> {
        let path = self.dir.join(name);
        let signed = read_checkpoint(&path)?;
        if size_of_name(name) != Some(signed.checkpoint.size) {
            return Err(AuditError::Invalid(format!(
                "{} holds a checkpoint of size {}, not the size its name says",
                path.display(),
                signed.checkpoint.size
            )));
        }
        Ok((path, signed))
    }

    /// Stores `signed` unless a checkpoint of its size is stored; returns what is stored.
    pub fn save(
        &self,
        signed: SignedCheckpoint,
    ) -> Result<(PathBuf, SignedCheckpoint), AuditError> {
        let path = self.path(signed.checkpoint.size);
        if path.exists() {
            let stored = read_checkpoint(&path)?;
            return Ok((path, stored));
        }
        fs::create_dir_all(&self.dir)
            .map_err(|e| AuditError::io("create directory", &self.dir, e))?;
        let name = path
            .file_name()
            .expect("a checkpoint path has a file name")
            .to_string_lossy()
            .into_owned();
        replace_file(&self.dir, &name, signed.note.as_bytes())?;
        Ok((path, signed))
    }
}

/// The size a stored checkpoint's file name says (`<20 digits>.note`).
fn size_of_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Reads and parses a checkpoint file (signatures are not checked here).
pub fn read_checkpoint(path: &Path) -> Result<SignedCheckpoint, AuditError> {
    let bytes = read_limited(path, crate::note::NOTE_BYTES_MAX as u64)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| AuditError::Invalid(format!("{} is not UTF-8", path.display())))?;
    SignedCheckpoint::parse(&text)
        .map_err(|e| AuditError::Invalid(format!("{}: {e}", path.display())))
}

/// Reads a file of at most `max_bytes`.
pub(crate) fn read_limited(path: &Path, max_bytes: u64) -> Result<Vec<u8>, AuditError> {
    use std::io::Read;
    let file = fs::File::open(path).map_err(|e| AuditError::io("open", path, e))?;
    let mut bytes = Vec::new();
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| AuditError::io("read", path, e))?;
    if bytes.len() as u64 > max_bytes {
        return Err(AuditError::Invalid(format!(
            "{} is larger than {max_bytes} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

/// Keeps the Merkle tree of a growing log, to checkpoint it again and again
/// without rereading it: the server holds one and calls
/// [`Checkpointer::checkpoint`] every N events, every T seconds and at shutdown.
pub struct Checkpointer {
    key: CheckpointKey,
    store: CheckpointStore,
    reader: LogReader,
    acc: Accumulator,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("size", &self.acc.size())
            .finish_non_exhaustive()
    }
}

impl Checkpointer {
    /// Loads (or creates) the data dir's checkpoint key and reads the
    /// durable log's hashes once.
    pub fn open(store: &Store) -> Result<Checkpointer, AuditError> {
        Checkpointer::open_on(store.dir(), LogReader::from_db(store.db())?)
    }

    /// The same over a reader, for callers without a `Store`.
    pub fn open_on(data_dir: &Path, reader: LogReader) -> Result<Checkpointer, AuditError> {
        Ok(Checkpointer {
            key: CheckpointKey::load_or_create(data_dir)?,
            store: CheckpointStore::new(data_dir),
            reader,
            acc: Accumulator::new(),
        })
    }

    /// Events covered so far.
    pub fn size(&self) -> u64 {
        self.acc.size()
    }

    /// Signs and stores a checkpoint of the store's durable log (up to
    /// `Store::head_position`, which the writer announces after its flush).
    pub fn checkpoint(
        &mut self,
        store: &Store,
        now: Timestamp,
    ) -> Result<SignedCheckpoint, AuditError> {
        self.checkpoint_at(store.head_position(), now)
    }

    /// Signs and stores a checkpoint of positions `1..=head`.
    pub fn checkpoint_at(
        &mut self,
        head: u64,
        now: Timestamp,
    ) -> Result<SignedCheckpoint, AuditError> {
        if head < self.acc.size() {
            return Err(AuditError::Invalid(format!(
                "the log's head {head} is behind the last checkpointed size {}",
                self.acc.size()
            )));
        }
        for hash in self.reader.hashes(self.acc.size() + 1, head)? {
            self.acc.push_leaf_hash(leaf_hash(&hash));
        }
        assert_eq!(
            self.acc.size(),
            head,
            "every position up to the head was added"
        );
        let checkpoint = Checkpoint {
            origin: self.key.origin().to_owned(),
            size: head,
            root: self.acc.root(),
            time: Some(now),
        };
        let signed = SignedCheckpoint::sign(checkpoint, self.key.signer());
        let (_, stored) = self.store.save(signed)?;
        Ok(stored)
    }

    /// The key's public half.
    pub fn verifier(&self) -> &crate::note::VerifierKey {
        self.key.verifier()
    }
}

/// Makes, signs and stores a checkpoint of `store`'s durable log now.
///
/// Reads every event hash; a server checkpointing periodically keeps a
/// [`Checkpointer`] instead, which reads only what was appended since.
pub fn make_checkpoint(store: &Store, now: Timestamp) -> Result<SignedCheckpoint, AuditError> {
    Checkpointer::open(store)?.checkpoint(store, now)
}
