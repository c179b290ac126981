//! Signed checkpoints in the C2SP formats `tlog-checkpoint` and `signed-note`.
//!
//! A checkpoint is the note text
//!
//! ```text
//! <origin>
//! <tree size, decimal>
//! <root hash, standard base64>
//! time <RFC 3339 UTC, milliseconds>
//! ```
//!
//! (the fourth line is an extension line: when the ledger signed it), then a
//! blank line and one signature line per signer:
//! `— <key name> <base64(key hash(4) || Ed25519 signature(64))>`. The
//! signature covers the note text, final newline included. The key hash is
//! the first 4 bytes of `SHA-256(key name || "\n" || 0x01 || public key)`, and
//! a verifier key is written `<name>+<hex key hash>+<base64(0x01 || public key)>`,
//! as Go's `golang.org/x/mod/sumdb/note` and every C2SP tool read them.

use crate::Hash;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use ledger_core::Timestamp;
use sha2::{Digest, Sha256};
use std::fmt;

/// Signature algorithm byte of Ed25519 in signed notes.
const ALG_ED25519: u8 = 0x01;
/// The em dash that starts a signature line.
const SIG_PREFIX: &str = "\u{2014} ";
/// A note's size, at most (a checkpoint is about 200 bytes).
pub const NOTE_BYTES_MAX: usize = 64 * 1024;
/// Signature lines a note may carry, at most.
pub const SIGNATURES_MAX: usize = 100;

/// Why a note or key is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NoteError {
    /// Not a well-formed signed note or checkpoint.
    #[error("malformed checkpoint: {0}")]
    Malformed(String),
    /// Not a well-formed verifier key.
    #[error("malformed verifier key: {0}")]
    MalformedKey(String),
    /// No signature by the given key.
    #[error("the checkpoint carries no signature by key {0}")]
    Unsigned(String),
    /// A signature by the given key that does not verify.
    #[error("the signature by key {0} does not verify")]
    BadSignature(String),
    /// A checkpoint of another log than the key's.
    #[error("the checkpoint's origin {origin} is not the log of key {key}")]
    OtherOrigin {
        /// The checkpoint's origin line.
        origin: String,
        /// The verifier key.
        key: String,
    },
}

/// The public half of a checkpoint key, as a note verifier key.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    name: String,
    key_hash: [u8; 4],
    key: VerifyingKey,
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifierKey({self})")
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = vec![ALG_ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        write!(
            f,
            "{}+{}+{}",
            self.name,
            hex::encode(self.key_hash),
            STANDARD.encode(raw)
        )
    }
}

fn key_hash(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ALG_ED25519]);
    h.update(key.as_bytes());
    let digest = h.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// A key name: non-empty, printable, no spaces and no `+` (signed-note rules).
pub fn check_key_name(name: &str) -> Result<(), NoteError> {
    let ok = !name.is_empty()
        && name.len() <= 256
        && name
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '+');
    if ok {
        Ok(())
    } else {
        Err(NoteError::MalformedKey(format!(
            "key name {name:?} must be 1-256 printable characters without spaces or '+'"
        )))
    }
}

impl VerifierKey {
    /// The verifier key of `name` and an Ed25519 public key.
    pub fn new(name: &str, key: VerifyingKey) -> Result<VerifierKey, NoteError> {
        check_key_name(name)?;
        Ok(VerifierKey {
            name: name.to_owned(),
            key_hash: key_hash(name, &key),
            key,
        })
    }

    /// Parses `<name>+<hex key hash>+<base64(0x01 || public key)>`.
    pub fn parse(text: &str) -> Result<VerifierKey, NoteError> {
        let bad = |why: &str| NoteError::MalformedKey(why.to_owned());
        let text = text.trim();
        let mut parts = text.splitn(3, '+');
        let (Some(name), Some(hash_hex), Some(b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected <name>+<hex key hash>+<base64 key>"));
        };
        check_key_name(name)?;
        let mut declared = [0u8; 4];
        hex::decode_to_slice(hash_hex, &mut declared)
            .map_err(|_| bad("the key hash is not 8 hex digits"))?;
        let raw = STANDARD
            .decode(b64)
            .map_err(|_| bad("the key is not base64"))?;
        if raw.len() != 33 || raw[0] != ALG_ED25519 {
            return Err(bad(
                "only Ed25519 keys (0x01 followed by 32 bytes) are supported",
            ));
        }
        let bytes: [u8; 32] = raw[1..].try_into().expect("33 - 1 bytes");
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| bad("not an Ed25519 key"))?;
        let vk = VerifierKey::new(name, key)?;
        if vk.key_hash != declared {
            return Err(bad("the key hash does not match the name and key"));
        }
        Ok(vk)
    }

    /// The key's name (the checkpoint's origin, for ledger keys).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 4-byte key hash, hex.
    pub fn key_hash_hex(&self) -> String {
        hex::encode(self.key_hash)
    }
}

/// A signer: a key name and an Ed25519 signing key.
pub struct NoteSigner {
    verifier: VerifierKey,
    key: SigningKey,
}

impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoteSigner")
            .field("verifier", &self.verifier)
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// A signer named `name`.
    pub fn new(name: &str, key: SigningKey) -> Result<NoteSigner, NoteError> {
        Ok(NoteSigner {
            verifier: VerifierKey::new(name, key.verifying_key())?,
            key,
        })
    }

    /// Its verifier key.
    pub fn verifier(&self) -> &VerifierKey {
        &self.verifier
    }

    /// The signature line for `text` (which ends with a newline).
    fn signature_line(&self, text: &str) -> String {
        let sig = self.key.sign(text.as_bytes());
        let mut raw = self.verifier.key_hash.to_vec();
        raw.extend_from_slice(&sig.to_bytes());
        format!(
            "{SIG_PREFIX}{} {}\n",
            self.verifier.name,
            STANDARD.encode(raw)
        )
    }
}

/// What a checkpoint says: the log `origin` had `size` events whose tree root
/// was `root`, at `time`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity (first line).
    pub origin: String,
    /// Number of events covered: positions `1..=size`.
    pub size: u64,
    /// The Merkle root of their hashes.
    pub root: Hash,
    /// When it was signed (the `time` extension line), if given.
    pub time: Option<Timestamp>,
}

impl Checkpoint {
    /// The note text: the body that is signed.
    pub fn text(&self) -> String {
        let mut text = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root)
        );
        if let Some(t) = self.time {
            text.push_str(&format!("time {t}\n"));
        }
        text
    }

    /// The root as lowercase hex.
    pub fn root_hex(&self) -> String {
        hex::encode(self.root)
    }

    fn parse_text(text: &str) -> Result<Checkpoint, NoteError> {
        let bad = |why: String| NoteError::Malformed(why);
        let mut lines = text
            .strip_suffix('\n')
            .ok_or_else(|| bad("the note text must end with a newline".into()))?
            .split('\n');
        let origin = lines.next().unwrap_or_default();
        if origin.is_empty() {
            return Err(bad("the origin line is empty".into()));
        }
        let size_line = lines
            .next()
            .ok_or_else(|| bad("no tree size line".into()))?;
        // Decimal without sign or leading zeros, as the format requires.
        if size_line.is_empty()
            || !size_line.bytes().all(|b| b.is_ascii_digit())
            || (size_line.len() > 1 && size_line.starts_with('0'))
        {
            return Err(bad(format!(
                "tree size {size_line:?} is not a decimal number"
            )));
        }
        let size: u64 = size_line
            .parse()
            .map_err(|_| bad(format!("tree size {size_line:?} is out of range")))?;
        let root_line = lines
            .next()
            .ok_or_else(|| bad("no root hash line".into()))?;
        let root_raw = STANDARD
            .decode(root_line)
            .map_err(|_| bad("the root hash is not base64".into()))?;
        let root: Hash = root_raw
            .try_into()
            .map_err(|_| bad("the root hash is not 32 bytes".into()))?;
        let mut time = None;
        for ext in lines {
            if ext.is_empty() {
                return Err(bad("empty extension line".into()));
            }
            if let Some(t) = ext.strip_prefix("time ") {
                time = Some(
                    Timestamp::parse(t)
                        .ok_or_else(|| bad(format!("time {t:?} is not RFC 3339")))?,
                );
            }
            // Other extension lines are allowed and ignored (tlog-checkpoint).
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            time,
        })
    }
}

/// One signature line of a note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSignature {
    /// The signer's key name.
    pub name: String,
    /// The 4-byte key hash.
    pub key_hash: [u8; 4],
    /// The signature bytes (64 for Ed25519).
    pub signature: Vec<u8>,
}

/// A checkpoint with its signatures, and the exact note they were read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// What it says.
    pub checkpoint: Checkpoint,
    /// The whole note: text, blank line, signature lines.
    pub note: String,
    /// Where the signed text ends in `note` (its final newline included).
    text_len: usize,
    /// The signature lines.
    pub signatures: Vec<NoteSignature>,
}

impl SignedCheckpoint {
    /// Signs a checkpoint.
    pub fn sign(checkpoint: Checkpoint, signer: &NoteSigner) -> SignedCheckpoint {
        let text = checkpoint.text();
        let line = signer.signature_line(&text);
        let note = format!("{text}\n{line}");
        SignedCheckpoint::parse(&note).expect("a note we sign parses")
    }

    /// Parses a signed note holding a checkpoint; signatures are not checked here.
    pub fn parse(note: &str) -> Result<SignedCheckpoint, NoteError> {
        let bad = |why: &str| NoteError::Malformed(why.to_owned());
        if note.len() > NOTE_BYTES_MAX {
            return Err(bad("the note is too large"));
        }
        if note.chars().any(|c| c.is_control() && c != '\n') {
            return Err(bad("the note contains control characters"));
        }
        // The signature block follows the LAST blank line.
        let split = note
            .rfind("\n\n")
            .ok_or_else(|| bad("no blank line before the signatures"))?;
        let text_len = split + 1;
        let text = &note[..text_len];
        let sigs = &note[split + 2..];
        let checkpoint = Checkpoint::parse_text(text)?;
        let body = sigs
            .strip_suffix('\n')
            .ok_or_else(|| bad("the signature block must end with a newline"))?;
        let mut signatures = Vec::new();
        for line in body.split('\n') {
            let rest = line
                .strip_prefix(SIG_PREFIX)
                .ok_or_else(|| bad("a signature line must start with an em dash and a space"))?;
            let (name, b64) = rest
                .split_once(' ')
                .ok_or_else(|| bad("a signature line is `— <name> <base64>`"))?;
            check_key_name(name).map_err(|_| bad("bad key name in a signature line"))?;
            let raw = STANDARD
                .decode(b64)
                .map_err(|_| bad("a signature is not base64"))?;
            if raw.len() < 5 {
                return Err(bad("a signature is too short"));
            }
            signatures.push(NoteSignature {
                name: name.to_owned(),
                key_hash: raw[..4].try_into().expect("4 bytes"),
                signature: raw[4..].to_vec(),
            });
            if signatures.len() > SIGNATURES_MAX {
                return Err(bad("too many signatures"));
            }
        }
        if signatures.is_empty() {
            return Err(bad("no signature lines"));
        }
        Ok(SignedCheckpoint {
            checkpoint,
            note: note.to_owned(),
            text_len,
            signatures,
        })
    }

    /// The signed text.
    pub fn text(&self) -> &str {
        &self.note[..self.text_len]
    }

    /// Checks the signature of `key`: it must be present and valid, and the
    /// checkpoint's origin must be the key's name (C2SP tlog-checkpoint: a
    /// log's key is named by its origin, so a key vouches for its log only).
    ///
    /// Signatures by other keys are ignored, as signed-note verifiers do.
    pub fn verify(&self, key: &VerifierKey) -> Result<(), NoteError> {
        if self.checkpoint.origin != key.name {
            return Err(NoteError::OtherOrigin {
                origin: self.checkpoint.origin.clone(),
                key: key.to_string(),
            });
        }
        let mut found = false;
        for sig in &self.signatures {
            if sig.name != key.name || sig.key_hash != key.key_hash {
                continue;
            }
            found = true;
            let Ok(bytes) = <[u8; 64]>::try_from(sig.signature.as_slice()) else {
                return Err(NoteError::BadSignature(key.to_string()));
            };
            key.key
                .verify(self.text().as_bytes(), &Signature::from_bytes(&bytes))
                .map_err(|_| NoteError::BadSignature(key.to_string()))?;
        }
        if found {
            Ok(())
        } else {
            Err(NoteError::Unsigned(key.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> NoteSigner {
        NoteSigner::new("example.com/log", SigningKey::from_bytes(&[7u8; 32])).unwrap()
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "example.com/log".into(),
            size: 42,
            root: [9u8; 32],
            time: Timestamp::parse("2026-01-15T09:00:00.000Z"),
        }
    }

    #[test]
    fn a_signed_checkpoint_round_trips_and_verifies() {
        let s = signer();
        let signed = SignedCheckpoint::sign(checkpoint(), &s);
        assert_eq!(
            signed.text(),
            "example.com/log\n42\nCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=\ntime 2026-01-15T09:00:00.000Z\n"
        );
        assert!(signed.note.contains("\n\n\u{2014} example.com/log "));
        let parsed = SignedCheckpoint::parse(&signed.note).unwrap();
        assert_eq!(parsed.checkpoint, checkpoint());
        parsed.verify(s.verifier()).unwrap();
        let vk = VerifierKey::parse(&s.verifier().to_string()).unwrap();
        assert_eq!(&vk, s.verifier());
    }

    #[test]
    fn a_changed_note_or_another_key_fails() {
        let s = signer();
        let signed = SignedCheckpoint::sign(checkpoint(), &s);
        let forged = signed.note.replace("\n42\n", "\n43\n");
        let parsed = SignedCheckpoint::parse(&forged).unwrap();
        assert!(matches!(
            parsed.verify(s.verifier()),
            Err(NoteError::BadSignature(_))
        ));
        let other = NoteSigner::new("example.com/log", SigningKey::from_bytes(&[8u8; 32])).unwrap();
        assert!(matches!(
            signed.verify(other.verifier()),
            Err(NoteError::Unsigned(_))
        ));
    }

    #[test]
    fn verifier_keys_are_checked() {
        let s = signer();
        let text = s.verifier().to_string();
        let (name, rest) = text.split_once('+').unwrap();
        assert_eq!(name, "example.com/log");
        assert_eq!(rest.len(), 8 + 1 + 44);
        let wrong_hash = format!("{name}+00000000+{}", &rest[9..]);
        assert!(VerifierKey::parse(&wrong_hash).is_err());
        assert!(VerifierKey::parse("no-plus-signs").is_err());
    }

    /// Our signer reproduces the Go package's signature byte for byte from
    /// its test signing key (Ed25519 signatures are deterministic).
    #[test]
    fn signs_exactly_like_the_go_note_package() {
        let skey = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
        let raw = STANDARD.decode(skey).unwrap();
        let seed: [u8; 32] = raw[1..].try_into().unwrap();
        let signer = NoteSigner::new("PeterNeumann", SigningKey::from_bytes(&seed)).unwrap();
        assert_eq!(
            signer.verifier().to_string(),
            "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
        );
        let text = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n";
        assert_eq!(
            signer.signature_line(text),
            "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
        );
    }

    /// A note signed by Go's `golang.org/x/mod/sumdb/note` package (its own
    /// test vector), so our parser and verifier read what the ecosystem writes.
    #[test]
    fn reads_the_go_note_package_test_vector() {
        let vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
        let note = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n\
                    \n\
                    \u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
        let key = VerifierKey::parse(vkey).unwrap();
        // The text is not a checkpoint, so check the signature directly.
        let split = note.rfind("\n\n").unwrap();
        let text = &note[..split + 1];
        let b64 = note[split + 2..].trim_end().rsplit(' ').next().unwrap();
        let raw = STANDARD.decode(b64).unwrap();
        assert_eq!(raw[..4], key.key_hash);
        let sig = Signature::from_bytes(&raw[4..].try_into().unwrap());
        key.key.verify(text.as_bytes(), &sig).unwrap();
    }
}
