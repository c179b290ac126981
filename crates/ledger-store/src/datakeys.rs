//! The key file: each access token's data key, wrapped by the master key, in
//! a fixed-size slot of `DATA_DIR/datakeys.bin`.
//!
//! Why not a sled record: sled keeps a removed value in its segment file until
//! it reclaims the segment, so a purged token's key would outlive the purge on
//! disk. Here a purge overwrites the slot with zeros in place and fsyncs
//! before the purge is acknowledged: crypto-shredding that holds on disk.
//!
//! Order against the log, so that no crash can lose a key or keep one:
//! new keys are appended and fsynced *before* the group's log flush (a crash
//! in between leaves a slot for a token that never existed, which the next
//! open zeroes); purged keys are zeroed *after* the log flush (a crash in
//! between leaves a live slot for a purged token, which the next open zeroes).
//!
//! Slot layout, 128 bytes: token id (16), length (1), wrapped key (up to 111),
//! zero padding. An all-zero slot is free.

use ledger_core::sharded::ShardedMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use uuid::Uuid;

/// Bytes per slot.
pub const SLOT_BYTES: usize = 128;
const WRAPPED_MAX: usize = SLOT_BYTES - 17;

/// The open key file with an index of live slots.
pub(crate) struct DataKeys {
    file: File,
    slots: ShardedMap<Uuid, u64>,
    free: Vec<u64>,
    len: u64,
}

impl DataKeys {
    /// Opens (or creates, mode 0600) the key file and indexes its slots.
    pub(crate) fn open(path: &Path) -> io::Result<DataKeys> {
        use std::os::unix::fs::OpenOptionsExt;
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        // A file that existed keeps the mode it had: make it 0600 too.
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        if !existed {
            // The file's name must survive a power loss along with the keys
            // an acknowledged register puts in it (`add` syncs the data only).
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        let bytes = std::fs::read(path)?;
        // A torn append at the end is a slot that was never acknowledged.
        let whole = bytes.len() - bytes.len() % SLOT_BYTES;
        let mut keys = DataKeys {
            file,
            slots: ShardedMap::new(),
            free: Vec::new(),
            len: whole as u64 / SLOT_BYTES as u64,
        };
        for (i, slot) in bytes[..whole].chunks(SLOT_BYTES).enumerate() {
            if slot.iter().all(|b| *b == 0) {
                keys.free.push(i as u64);
            } else {
                // A slot this file never held (a flipped length byte, say)
                // is refused here, by number, not found by a panic later.
                if usize::from(slot[16]) > WRAPPED_MAX {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: slot {i} is malformed (key length {} over {WRAPPED_MAX})",
                            path.display(),
                            slot[16]
                        ),
                    ));
                }
                let id = Uuid::from_slice(&slot[..16]).expect("16 bytes");
                keys.slots.insert(id, i as u64);
            }
        }
        Ok(keys)
    }

    /// Tokens that have a live slot.
    pub(crate) fn tokens(&self) -> impl Iterator<Item = &Uuid> {
        self.slots.keys()
    }

    /// The tokens of the first and the last live slot in the file (the
    /// oldest and the newest key), whatever order the index iterates in.
    pub(crate) fn first_and_last(&self) -> Vec<Uuid> {
        let first = self.slots.iter().min_by_key(|(_, slot)| **slot);
        let last = self.slots.iter().max_by_key(|(_, slot)| **slot);
        let mut tokens: Vec<Uuid> = first.into_iter().chain(last).map(|(t, _)| *t).collect();
        tokens.dedup();
        tokens
    }

    /// The wrapped key of a token, if it has one.
    pub(crate) fn get(&self, token: &Uuid) -> io::Result<Option<Vec<u8>>> {
        let Some(slot) = self.slots.get(token) else {
            return Ok(None);
        };
        let mut buf = [0u8; SLOT_BYTES];
        self.file
            .read_exact_at(&mut buf, slot * SLOT_BYTES as u64)?;
        let len = usize::from(buf[16]);
        if len > WRAPPED_MAX {
            // Checked at open; the file changed under us since.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("data key slot {slot} is malformed (key length {len})"),
            ));
        }
        Ok(Some(buf[17..17 + len].to_vec()))
    }

    /// Writes new keys and fsyncs; done before the log flush that commits them.
    pub(crate) fn add(&mut self, keys: &[(Uuid, Vec<u8>)]) -> io::Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        for (token, wrapped) in keys {
            assert!(wrapped.len() <= WRAPPED_MAX, "wrapped key too long");
            let slot = self.free.pop().unwrap_or_else(|| {
                self.len += 1;
                self.len - 1
            });
            let mut buf = [0u8; SLOT_BYTES];
            buf[..16].copy_from_slice(token.as_bytes());
            buf[16] = wrapped.len() as u8;
            buf[17..17 + wrapped.len()].copy_from_slice(wrapped);
            self.file.write_all_at(&buf, slot * SLOT_BYTES as u64)?;
            self.slots.insert(*token, slot);
        }
        self.file.sync_data()
    }

    /// Overwrites the keys' slots with zeros and fsyncs: the secrets sealed
    /// with them can never be opened again.
    pub(crate) fn shred(&mut self, tokens: &[Uuid]) -> io::Result<()> {
        let mut any = false;
        for token in tokens {
            if let Some(slot) = self.slots.remove(token) {
                self.file
                    .write_all_at(&[0u8; SLOT_BYTES], slot * SLOT_BYTES as u64)?;
                self.free.push(slot);
                any = true;
            }
        }
        if any {
            self.file.sync_data()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_with_an_impossible_length_is_refused_at_open_by_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("datakeys.bin");
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        DataKeys::open(&path)
            .unwrap()
            .add(&[(a, vec![1; 72]), (b, vec![2; 72])])
            .unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[SLOT_BYTES + 16] = 0xFF;
        std::fs::write(&path, &bytes).unwrap();
        let err = DataKeys::open(&path).err().expect("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("slot 1"), "{err}");
    }

    #[test]
    fn add_get_shred_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("datakeys.bin");
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        {
            let mut keys = DataKeys::open(&path).unwrap();
            keys.add(&[(a, vec![1; 72]), (b, vec![2; 72])]).unwrap();
            assert_eq!(keys.get(&a).unwrap(), Some(vec![1; 72]));
            keys.shred(&[a]).unwrap();
            assert_eq!(keys.get(&a).unwrap(), None);
        }
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes.windows(72).any(|w| w.iter().all(|x| *x == 1)),
            "the shredded key is gone from the file"
        );
        let mut keys = DataKeys::open(&path).unwrap();
        assert_eq!(keys.get(&a).unwrap(), None);
        assert_eq!(keys.get(&b).unwrap(), Some(vec![2; 72]));
        // A freed slot is reused rather than growing the file.
        keys.add(&[(Uuid::new_v4(), vec![3; 72])]).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            2 * SLOT_BYTES as u64
        );
    }

    #[test]
    fn a_group_of_keys_lands_in_freed_and_new_slots_alike() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("datakeys.bin");
        let first: Vec<(Uuid, Vec<u8>)> = (0..5u8)
            .map(|i| (Uuid::new_v4(), vec![i + 1; 40]))
            .collect();
        let mut keys = DataKeys::open(&path).unwrap();
        keys.add(&first).unwrap();
        // Slots 1 and 3 free: the next group fills them and appends the rest.
        keys.shred(&[first[1].0, first[3].0]).unwrap();
        let second: Vec<(Uuid, Vec<u8>)> = (0..4u8)
            .map(|i| (Uuid::new_v4(), vec![i + 10; 60]))
            .collect();
        keys.add(&second).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            7 * SLOT_BYTES as u64
        );
        let reopened = DataKeys::open(&path).unwrap();
        for keys in [&keys, &reopened] {
            for (token, wrapped) in first.iter().chain(&second) {
                let shredded = *token == first[1].0 || *token == first[3].0;
                let expected = (!shredded).then(|| wrapped.clone());
                assert_eq!(keys.get(token).unwrap(), expected, "{token}");
            }
        }
    }

    #[test]
    fn a_torn_append_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("datakeys.bin");
        let a = Uuid::new_v4();
        {
            let mut keys = DataKeys::open(&path).unwrap();
            keys.add(&[(a, vec![9; 72])]).unwrap();
        }
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut f, &[7u8; 40]).unwrap();
        let keys = DataKeys::open(&path).unwrap();
        assert_eq!(keys.get(&a).unwrap(), Some(vec![9; 72]));
        assert_eq!(keys.tokens().count(), 1);
    }
}
