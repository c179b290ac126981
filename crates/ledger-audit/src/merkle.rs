//! The RFC 6962 / RFC 9162 Merkle tree over the log's event hashes.
//!
//! Leaf `i` (0-based) is the raw 32-byte `hash` of the event at position
//! `i + 1`; its leaf hash is `SHA-256(0x00 || hash)` and an inner node is
//! `SHA-256(0x01 || left || right)`. The tree of size `n` is the tree of the
//! first `n` events, so a checkpoint of size `n` vouches for positions `1..=n`.
//!
//! Proofs (inclusion and consistency) are built and checked by the `ct-merkle`
//! crate. The one piece computed here is the root itself, with
//! [`Accumulator`]: a verifier that streams a million events cannot afford
//! `ct-merkle`'s in-memory tree, which rehashes the whole path to the root on
//! every append (about 20 inner hashes per event at that size, more than the
//! rest of verification costs). The accumulator keeps one root per perfect
//! subtree (the "compact range" of RFC 9162 §2.1.2's left-balanced tree) and
//! spends about one inner hash per leaf. Tests check it against `ct-merkle`
//! and the RFC 6962 known answers at every size.

use crate::Hash;
use ct_merkle::mem_backed_tree::MemoryBackedTree;
use ct_merkle::{ConsistencyProof, InclusionProof, RootHash};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Prefix of a leaf hash (RFC 6962 §2.1).
const LEAF_PREFIX: u8 = 0x00;
/// Prefix of an inner node hash.
const NODE_PREFIX: u8 = 0x01;
/// Leaves a proof can be built over in memory, at most (about 3 GiB of tree).
pub const PROOF_TREE_LEAVES_MAX: u64 = 32 << 20;

/// `SHA-256(0x00 || leaf)`.
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([LEAF_PREFIX]);
    h.update(leaf);
    h.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([NODE_PREFIX]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The Merkle tree hash of everything appended so far, in `O(log n)` memory.
///
/// `stack` holds the roots of the perfect subtrees the leaves split into,
/// largest (leftmost) first: one per set bit of `size`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Accumulator {
    size: u64,
    stack: Vec<Hash>,
}

impl Accumulator {
    /// An empty tree.
    pub fn new() -> Accumulator {
        Accumulator::default()
    }

    /// Number of leaves appended.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf given its bytes (hashed with the leaf prefix).
    pub fn push(&mut self, leaf: &[u8]) {
        self.push_leaf_hash(leaf_hash(leaf));
    }

    /// Appends a leaf given its leaf hash.
    pub fn push_leaf_hash(&mut self, leaf: Hash) {
        let mut node = leaf;
        let mut size = self.size;
        // Every trailing one bit of the old size is a perfect subtree of the
        // same height as `node`, waiting for its right sibling.
        while size & 1 == 1 {
            let left = self.stack.pop().expect("one subtree per set bit");
            node = node_hash(&left, &node);
            size >>= 1;
        }
        self.stack.push(node);
        self.size += 1;
        debug_assert_eq!(self.stack.len() as u32, self.size.count_ones());
    }

    /// The root: `SHA-256("")` for the empty tree, else the perfect subtrees
    /// folded right to left (RFC 6962 splits at the largest power of two).
    pub fn root(&self) -> Hash {
        let mut nodes = self.stack.iter().rev();
        let Some(last) = nodes.next() else {
            return Sha256::digest(b"").into();
        };
        nodes.fold(*last, |right, left| node_hash(left, &right))
    }
}

/// The root of the tree over `leaves` (each leaf's bytes), through [`Accumulator`].
pub fn root_of<L: AsRef<[u8]>>(leaves: &[L]) -> Hash {
    let mut acc = Accumulator::new();
    for leaf in leaves {
        acc.push(leaf.as_ref());
    }
    acc.root()
}

/// Why a proof does not hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// The proof's hashes do not lead to the root.
    #[error("the proof does not lead to the checkpoint's root hash")]
    Mismatch,
    /// The proof has the wrong number of hashes, or an index out of range.
    #[error("malformed proof: {0}")]
    Malformed(String),
}

/// An inclusion proof: leaf `leaf_index` is in the tree of `tree_size` leaves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InclusionProofJson {
    /// 0-based leaf index (the event's position minus one).
    pub leaf_index: u64,
    /// Leaves in the tree (the checkpoint's size).
    pub tree_size: u64,
    /// The audit path, bottom up, lowercase hex.
    pub hashes: Vec<String>,
}

/// A consistency proof: the tree of `old_size` leaves is a prefix of the tree of `new_size`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsistencyProofJson {
    /// Leaves in the older tree.
    pub old_size: u64,
    /// Leaves in the newer tree.
    pub new_size: u64,
    /// The proof's hashes, in RFC 9162 §2.1.4 order, lowercase hex.
    pub hashes: Vec<String>,
}

/// A whole tree in memory, for building proofs (`ct-merkle`'s tree).
///
/// Leaves are event hashes in the ledger; any byte strings in tests.
pub struct ProofTree<L: AsRef<[u8]> = Hash> {
    tree: MemoryBackedTree<Sha256, L>,
}

impl<L: AsRef<[u8]>> std::fmt::Debug for ProofTree<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProofTree")
            .field("size", &self.tree.len())
            .finish()
    }
}

/// Refuses a tree too large for [`ProofTree`], before its hashes are read.
pub fn check_proof_tree_size(size: u64) -> Result<(), crate::AuditError> {
    if size > PROOF_TREE_LEAVES_MAX {
        return Err(crate::AuditError::Invalid(format!(
            "proofs over a tree of {size} events are not supported: this build proves trees \
             of at most {PROOF_TREE_LEAVES_MAX} events"
        )));
    }
    Ok(())
}

impl<L: AsRef<[u8]>> ProofTree<L> {
    /// The tree over these leaves (event hashes, in position order).
    ///
    /// # Panics
    /// When there are more than [`PROOF_TREE_LEAVES_MAX`] leaves.
    pub fn new(leaves: impl IntoIterator<Item = L>) -> ProofTree<L> {
        let mut tree = MemoryBackedTree::new();
        for leaf in leaves {
            assert!(
                tree.len() < PROOF_TREE_LEAVES_MAX,
                // Callers check first with `check_proof_tree_size`.
                "proof trees are limited to {PROOF_TREE_LEAVES_MAX} leaves"
            );
            tree.push(leaf);
        }
        ProofTree { tree }
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.tree.len()
    }

    /// The root hash.
    pub fn root(&self) -> Hash {
        (*self.tree.root().as_bytes()).into()
    }

    /// The inclusion proof of leaf `index`.
    ///
    /// # Panics
    /// When `index` is not below [`ProofTree::size`].
    pub fn prove_inclusion(&self, index: u64) -> InclusionProofJson {
        assert!(index < self.size(), "leaf {index} is not in the tree");
        let proof = self.tree.prove_inclusion(index as usize);
        InclusionProofJson {
            leaf_index: index,
            tree_size: self.size(),
            hashes: split_hex(proof.as_bytes()),
        }
    }

    /// The consistency proof from the tree of its first `old_size` leaves to the whole tree.
    ///
    /// # Panics
    /// When `old_size` is 0 or larger than the tree.
    pub fn prove_consistency(&self, old_size: u64) -> ConsistencyProofJson {
        assert!(
            old_size <= self.size(),
            "old size {old_size} is not in 0..={}",
            self.size()
        );
        if old_size == 0 {
            // Every tree extends the empty one: nothing to show.
            return ConsistencyProofJson {
                old_size,
                new_size: self.size(),
                hashes: Vec::new(),
            };
        }
        let proof = self
            .tree
            .prove_consistency((self.size() - old_size) as usize);
        ConsistencyProofJson {
            old_size,
            new_size: self.size(),
            hashes: split_hex(proof.as_bytes()),
        }
    }
}

fn split_hex(bytes: &[u8]) -> Vec<String> {
    bytes.chunks(32).map(hex::encode).collect()
}

fn join_hex(hashes: &[String]) -> Result<Vec<u8>, ProofError> {
    let mut out = Vec::with_capacity(hashes.len() * 32);
    for h in hashes {
        out.extend_from_slice(&parse_hash(h).map_err(ProofError::Malformed)?);
    }
    Ok(out)
}

/// Parses 64 hex digits (either case) into a hash.
pub fn parse_hash(text: &str) -> Result<Hash, String> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out).map_err(|_| format!("{text:?} is not 64 hex digits"))?;
    Ok(out)
}

fn root_hash(root: &Hash, size: u64) -> RootHash<Sha256> {
    RootHash::new((*root).into(), size)
}

/// The largest tree a proof may be about. ct-merkle panics past 2^63
/// leaves; no log comes near 2^62 events, so a larger size is a forged or
/// garbled proof, refused before it reaches the crate.
pub const TREE_SIZE_MAX: u64 = 1 << 62;

fn check_size(what: &str, size: u64) -> Result<(), ProofError> {
    if size > TREE_SIZE_MAX {
        return Err(ProofError::Malformed(format!(
            "{what} {size} is larger than any log (at most 2^62 events)"
        )));
    }
    Ok(())
}

/// Checks that `leaf` (an event hash) is leaf `proof.leaf_index` of the tree
/// of `proof.tree_size` leaves whose root is `root`.
pub fn verify_inclusion(
    leaf: &[u8],
    proof: &InclusionProofJson,
    root: &Hash,
) -> Result<(), ProofError> {
    check_size("treeSize", proof.tree_size)?;
    if proof.leaf_index >= proof.tree_size {
        return Err(ProofError::Malformed(format!(
            "leafIndex {} is not in a tree of {} events",
            proof.leaf_index, proof.tree_size
        )));
    }
    let bytes = join_hex(&proof.hashes)?;
    let ct_proof = InclusionProof::<Sha256>::try_from_bytes(bytes)
        .map_err(|e| ProofError::Malformed(e.to_string()))?;
    root_hash(root, proof.tree_size)
        .verify_inclusion(&leaf, proof.leaf_index, &ct_proof)
        .map_err(|e| match e {
            ct_merkle::InclusionVerifError::IncorrectHash => ProofError::Mismatch,
            other => ProofError::Malformed(other.to_string()),
        })
}

/// Checks that the tree (`proof.old_size`, `old_root`) is a prefix of the
/// tree (`proof.new_size`, `new_root`).
pub fn verify_consistency(
    proof: &ConsistencyProofJson,
    old_root: &Hash,
    new_root: &Hash,
) -> Result<(), ProofError> {
    check_size("newSize", proof.new_size)?;
    if proof.old_size == 0 {
        // The empty tree is a prefix of every tree, if OLD really is empty.
        if !proof.hashes.is_empty() {
            return Err(ProofError::Malformed(
                "a proof from the empty tree has no hashes".into(),
            ));
        }
        return if *old_root == Accumulator::new().root() {
            Ok(())
        } else {
            Err(ProofError::Mismatch)
        };
    }
    if proof.old_size == proof.new_size {
        // ct-merkle wants at least one addition; a tree is consistent with
        // itself exactly when the roots agree (and the proof is empty).
        if !proof.hashes.is_empty() {
            return Err(ProofError::Malformed(
                "a proof between equal sizes has no hashes".into(),
            ));
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::Mismatch)
        };
    }
    let bytes = join_hex(&proof.hashes)?;
    let ct_proof = ConsistencyProof::<Sha256>::try_from_bytes(bytes)
        .map_err(|e| ProofError::Malformed(e.to_string()))?;
    root_hash(new_root, proof.new_size)
        .verify_consistency(&root_hash(old_root, proof.old_size), &ct_proof)
        .map_err(|e| match e {
            ct_merkle::ConsistencyVerifError::VerificationFailure => ProofError::Mismatch,
            other => ProofError::Malformed(other.to_string()),
        })
}
