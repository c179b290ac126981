//! The Merkle tree against the RFC 6962 known answers: the roots of the
//! certificate-transparency reference tests for its 8 test leaves, and the
//! inclusion and consistency proofs of transparency-dev/merkle's reference
//! tests (the same vectors). Then our streaming root against `ct-merkle`'s
//! tree at every size, and proofs that must fail.

use ledger_audit::merkle::{
    root_of, verify_consistency, verify_inclusion, Accumulator, ConsistencyProofJson,
    InclusionProofJson, ProofError, ProofTree,
};

const LEAVES: &[&str] = &[
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

/// MTH(D[n]) for n = 0..=8.
const ROOTS: &[&str] = &[
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// (tree size, leaf index, audit path).
const INCLUSION: &[(u64, u64, &[&str])] = &[
    (1, 0, &[]),
    (
        2,
        0,
        &["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"],
    ),
    (
        2,
        1,
        &["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"],
    ),
    (
        3,
        2,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        5,
        1,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        8,
        0,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        8,
        5,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

/// (old size, new size, proof).
const CONSISTENCY: &[(u64, u64, &[&str])] = &[
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

fn leaves(n: usize) -> Vec<Vec<u8>> {
    LEAVES[..n]
        .iter()
        .map(|l| hex::decode(l).unwrap())
        .collect()
}

fn strings(hashes: &[&str]) -> Vec<String> {
    hashes.iter().map(|h| h.to_string()).collect()
}

fn root(n: usize) -> [u8; 32] {
    hex::decode(ROOTS[n]).unwrap().try_into().unwrap()
}

#[test]
fn roots_match_the_rfc6962_known_answers() {
    for (n, expected) in ROOTS.iter().enumerate() {
        assert_eq!(hex::encode(root_of(&leaves(n))), *expected, "size {n}");
        if n > 0 {
            assert_eq!(
                hex::encode(ProofTree::new(leaves(n)).root()),
                *expected,
                "ct-merkle, size {n}"
            );
        }
    }
}

#[test]
fn inclusion_proofs_match_the_known_answers_and_verify() {
    for (size, index, path) in INCLUSION {
        let tree = ProofTree::new(leaves(*size as usize));
        let proof = tree.prove_inclusion(*index);
        assert_eq!(proof.hashes, strings(path), "size {size}, leaf {index}");
        let leaf = leaves(8)[*index as usize].clone();
        verify_inclusion(&leaf, &proof, &root(*size as usize)).unwrap();
        // Another leaf, another index or another root does not verify.
        assert!(verify_inclusion(b"not the leaf", &proof, &root(*size as usize)).is_err());
        if *size > 1 {
            let moved = InclusionProofJson {
                leaf_index: (index + 1) % size,
                ..proof.clone()
            };
            assert!(verify_inclusion(&leaf, &moved, &root(*size as usize)).is_err());
            assert_eq!(
                verify_inclusion(&leaf, &proof, &root(*size as usize - 1)),
                Err(ProofError::Mismatch)
            );
        }
    }
}

#[test]
fn consistency_proofs_match_the_known_answers_and_verify() {
    for (old, new, path) in CONSISTENCY {
        let tree = ProofTree::new(leaves(*new as usize));
        let proof = tree.prove_consistency(*old);
        assert_eq!(proof.hashes, strings(path), "{old} -> {new}");
        verify_consistency(&proof, &root(*old as usize), &root(*new as usize)).unwrap();
        if old != new {
            // A different old tree (one leaf changed) is not a prefix.
            let mut altered = leaves(*old as usize);
            altered[0] = b"x".to_vec();
            assert!(verify_consistency(&proof, &root_of(&altered), &root(*new as usize)).is_err());
        }
    }
    let bad = ConsistencyProofJson {
        old_size: 2,
        new_size: 5,
        hashes: vec!["zz".into()],
    };
    assert!(matches!(
        verify_consistency(&bad, &root(2), &root(5)),
        Err(ProofError::Malformed(_))
    ));
}

/// Sizes and indices no log has (a forged proof or checkpoint) are refused
/// as malformed, never passed to ct-merkle, which panics on them.
#[test]
fn proofs_about_impossible_trees_are_malformed_not_a_panic() {
    let leaf = leaves(1)[0].clone();
    for (leaf_index, tree_size) in [
        (1u64 << 63, u64::MAX),
        (u64::MAX, u64::MAX),
        (0, (1u64 << 62) + 1),
        (5, 5),
        (0, 0),
    ] {
        let proof = InclusionProofJson {
            leaf_index,
            tree_size,
            hashes: Vec::new(),
        };
        assert!(
            matches!(
                verify_inclusion(&leaf, &proof, &root(1)),
                Err(ProofError::Malformed(_))
            ),
            "{leaf_index} of {tree_size}"
        );
    }
    for (old_size, new_size) in [
        (1u64, u64::MAX),
        (u64::MAX, u64::MAX),
        (1 << 62, (1 << 62) + 1),
    ] {
        let proof = ConsistencyProofJson {
            old_size,
            new_size,
            hashes: Vec::new(),
        };
        assert!(
            matches!(
                verify_consistency(&proof, &root(1), &root(2)),
                Err(ProofError::Malformed(_))
            ),
            "{old_size} -> {new_size}"
        );
    }
}

#[test]
fn the_streaming_root_equals_ct_merkle_at_every_size() {
    let all: Vec<[u8; 32]> = (0u32..300)
        .map(|i| ledger_audit::merkle::leaf_hash(&i.to_be_bytes()))
        .collect();
    let mut acc = Accumulator::new();
    assert_eq!(hex::encode(acc.root()), ROOTS[0]);
    for n in 1..=all.len() {
        acc.push(&all[n - 1]);
        let tree = ProofTree::new(all[..n].iter().copied());
        assert_eq!(acc.root(), tree.root(), "size {n}");
        assert_eq!(acc.size(), n as u64);
    }
    // Every inclusion and consistency proof of one tree holds.
    let tree = ProofTree::new(all[..77].iter().copied());
    for i in 0..77 {
        verify_inclusion(&all[i as usize], &tree.prove_inclusion(i), &tree.root()).unwrap();
    }
    for old in 1..=77 {
        let old_root = root_of(&all[..old as usize]);
        verify_consistency(&tree.prove_consistency(old), &old_root, &tree.root()).unwrap();
    }
}

#[test]
fn trees_past_the_proof_limit_are_refused_before_any_hash_is_read() {
    use ledger_audit::merkle::{check_proof_tree_size, PROOF_TREE_LEAVES_MAX};
    assert!(check_proof_tree_size(PROOF_TREE_LEAVES_MAX).is_ok());
    let err = check_proof_tree_size(PROOF_TREE_LEAVES_MAX + 1).unwrap_err();
    assert_eq!(err.code(), "invalid_input");
}

#[test]
fn the_empty_tree_is_a_prefix_of_every_tree() {
    use ledger_audit::merkle::{verify_consistency, ProofError};
    let tree = ProofTree::new(leaves(5));
    let proof = tree.prove_consistency(0);
    assert!(proof.hashes.is_empty());
    let empty = ledger_audit::merkle::Accumulator::new().root();
    verify_consistency(&proof, &empty, &tree.root()).unwrap();
    assert!(matches!(
        verify_consistency(&proof, &tree.root(), &tree.root()),
        Err(ProofError::Mismatch)
    ));
}
