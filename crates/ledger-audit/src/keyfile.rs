//! The checkpoint signing key: `DATA_DIR/checkpoint-key.json`, mode 0600.
//!
//! ```json
//! {"version": 1, "alg": "ed25519", "name": "tokenledger/3f9a1c0b5e7d2a64", "seed": "<64 hex>"}
//! ```
//!
//! `name` is both the note key name and the checkpoint origin. It is drawn
//! once, when the key is created, so two ledgers never share an origin. The
//! file is created atomically (temporary file, fsync, hard link) so two
//! processes racing to create it end up with the same key, and it is refused
//! when group or others can read it.

use crate::note::{NoteSigner, VerifierKey};
use crate::AuditError;
use ed25519_dalek::SigningKey;
use ledger_crypto::fsutil;
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use std::path::Path;
use zeroize::Zeroizing;

/// File name of the key in the data dir.
pub const CHECKPOINT_KEY_FILE: &str = "checkpoint-key.json";
const KEY_FILE_BYTES_MAX: u64 = 4096;
const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFileRepr {
    version: u32,
    alg: String,
    name: String,
    seed: String,
}

/// The ledger's checkpoint key.
pub struct CheckpointKey {
    signer: NoteSigner,
}

impl std::fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointKey")
            .field("verifier", self.signer.verifier())
            .finish_non_exhaustive()
    }
}

impl CheckpointKey {
    /// Loads the key of `data_dir`, or `None` when it has none yet.
    pub fn load(data_dir: &Path) -> Result<Option<CheckpointKey>, AuditError> {
        let path = data_dir.join(CHECKPOINT_KEY_FILE);
        let Some(bytes) = read_private(&path)? else {
            return Ok(None);
        };
        let bad = |reason: String| AuditError::KeyFile {
            path: path.clone(),
            reason,
        };
        let repr: KeyFileRepr =
            serde_json::from_slice(&bytes).map_err(|e| bad(format!("not a key file: {e}")))?;
        let seed_hex = Zeroizing::new(repr.seed);
        if repr.version != FORMAT_VERSION || repr.alg != "ed25519" {
            return Err(bad(format!(
                "unsupported key file (version {}, alg {})",
                repr.version, repr.alg
            )));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(seed_hex.as_str(), seed.as_mut())
            .map_err(|_| bad("seed is not 64 hex digits".into()))?;
        let signer = NoteSigner::new(&repr.name, SigningKey::from_bytes(&seed))
            .map_err(|e| bad(e.to_string()))?;
        Ok(Some(CheckpointKey { signer }))
    }

    /// Loads the key of `data_dir`, creating it on first use.
    ///
    /// A missing key is not replaced while checkpoints signed with it are
    /// stored: a new key (and origin) would fail every stored note from then
    /// on and read as a second log.
    pub fn load_or_create(data_dir: &Path) -> Result<CheckpointKey, AuditError> {
        if let Some(key) = CheckpointKey::load(data_dir)? {
            return Ok(key);
        }
        if crate::checkpoints::CheckpointStore::new(data_dir).any()? {
            return Err(AuditError::KeyFile {
                path: data_dir.join(CHECKPOINT_KEY_FILE),
                reason: format!(
                    "missing, but {}/ holds checkpoints signed with it: restore the key file \
                     from a backup, or, to start a new key, move that directory aside first",
                    crate::checkpoints::CHECKPOINT_DIR
                ),
            });
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(seed.as_mut());
        let mut id = [0u8; 8];
        OsRng.fill_bytes(&mut id);
        let repr = KeyFileRepr {
            version: FORMAT_VERSION,
            alg: "ed25519".into(),
            name: format!("tokenledger/{}", hex::encode(id)),
            seed: hex::encode(seed.as_ref()),
        };
        let text = Zeroizing::new(serde_json::to_vec(&repr).expect("key file serializes"));
        let _ = Zeroizing::new(repr.seed);
        create_private(data_dir, CHECKPOINT_KEY_FILE, &text)?;
        // Whoever won a race to create the file, everyone uses what it holds.
        CheckpointKey::load(data_dir)?.ok_or_else(|| AuditError::KeyFile {
            path: data_dir.join(CHECKPOINT_KEY_FILE),
            reason: "vanished right after it was created".into(),
        })
    }

    /// The public key, as a note verifier key.
    pub fn verifier(&self) -> &VerifierKey {
        self.signer.verifier()
    }

    /// The checkpoint origin (= the key name).
    pub fn origin(&self) -> &str {
        self.signer.verifier().name()
    }

    /// The signer.
    pub fn signer(&self) -> &NoteSigner {
        &self.signer
    }
}

/// Maps the shared private-file helpers' errors (ledger-crypto's) to ours.
fn key_file_error(path: &Path, e: ledger_crypto::CryptoError) -> AuditError {
    match e {
        ledger_crypto::CryptoError::Io { op, path, source } => AuditError::io(op, path, source),
        other => AuditError::KeyFile {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    }
}

fn read_private(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, AuditError> {
    fsutil::read_private(path, KEY_FILE_BYTES_MAX).map_err(|e| key_file_error(path, e))
}

/// Creates `dir/name` with `bytes` (mode 0600) unless it exists.
fn create_private(dir: &Path, name: &str, bytes: &[u8]) -> Result<bool, AuditError> {
    fsutil::ensure_dir(dir).map_err(|e| key_file_error(dir, e))?;
    fsutil::create_private(dir, name, bytes).map_err(|e| key_file_error(&dir.join(name), e))
}

/// Writes `dir/name` (mode 0644: checkpoints are public) atomically.
pub(crate) fn replace_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), AuditError> {
    fsutil::replace_file(dir, name, bytes, 0o644).map_err(|e| key_file_error(&dir.join(name), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::SignedCheckpoint;
    use std::fs;

    #[test]
    fn the_key_is_created_once_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let a = CheckpointKey::load_or_create(dir.path()).unwrap();
        let b = CheckpointKey::load_or_create(dir.path()).unwrap();
        assert_eq!(a.verifier(), b.verifier());
        assert!(a.origin().starts_with("tokenledger/"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.path().join(CHECKPOINT_KEY_FILE);
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(
                CheckpointKey::load(dir.path()),
                Err(AuditError::KeyFile { .. })
            ));
        }
    }

    fn stored_note(dir: &Path, key: &CheckpointKey, size: u64) -> SignedCheckpoint {
        let signed = SignedCheckpoint::sign(
            crate::note::Checkpoint {
                origin: key.origin().to_owned(),
                size,
                root: [7u8; 32],
                time: None,
            },
            key.signer(),
        );
        crate::checkpoints::CheckpointStore::new(dir)
            .save(signed)
            .unwrap()
            .1
    }

    #[test]
    fn a_lost_key_is_not_replaced_while_its_checkpoints_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let key = CheckpointKey::load_or_create(dir.path()).unwrap();
        stored_note(dir.path(), &key, 3);
        fs::remove_file(dir.path().join(CHECKPOINT_KEY_FILE)).unwrap();
        let err = CheckpointKey::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, AuditError::KeyFile { .. }), "{err}");
        assert!(err.to_string().contains("restore the key file"), "{err}");
        assert!(!dir.path().join(CHECKPOINT_KEY_FILE).exists());

        // Moved aside on purpose: a new key, a new origin.
        fs::rename(
            dir.path().join(crate::checkpoints::CHECKPOINT_DIR),
            dir.path().join("old-checkpoints"),
        )
        .unwrap();
        let new = CheckpointKey::load_or_create(dir.path()).unwrap();
        assert_ne!(new.origin(), key.origin());
    }

    #[test]
    fn only_the_stores_own_names_count_and_a_name_must_say_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let key = CheckpointKey::load_or_create(dir.path()).unwrap();
        let store = crate::checkpoints::CheckpointStore::new(dir.path());
        let three = stored_note(dir.path(), &key, 3);
        stored_note(dir.path(), &key, 9);
        // An auditor's copy of the older note sorts after every size.
        let cps = dir.path().join(crate::checkpoints::CHECKPOINT_DIR);
        fs::write(cps.join("audit-jan.note"), &three.note).unwrap();
        let (_, latest) = store.latest().unwrap().unwrap();
        assert_eq!(latest.checkpoint.size, 9);
        assert_eq!(store.list().unwrap().len(), 2);

        // A note of size 3 under the name of size 12.
        fs::write(store.path(12), &three.note).unwrap();
        let err = store.latest().unwrap_err();
        assert!(
            err.to_string().contains("not the size its name says"),
            "{err}"
        );
    }

    #[test]
    fn a_key_vouches_only_for_its_own_origin() {
        let dir = tempfile::tempdir().unwrap();
        let key = CheckpointKey::load_or_create(dir.path()).unwrap();
        let other_log = SignedCheckpoint::sign(
            crate::note::Checkpoint {
                origin: "example.com/other-log".into(),
                size: 1,
                root: [1u8; 32],
                time: None,
            },
            key.signer(),
        );
        let err = other_log.verify(key.verifier()).unwrap_err();
        assert!(
            matches!(err, crate::note::NoteError::OtherOrigin { .. }),
            "{err}"
        );
        assert_eq!(AuditError::Note(err).code(), "bad_signature");
    }
}
