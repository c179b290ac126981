//! A hash map split into shards that grow one at a time.
//!
//! A `HashMap` doubles all at once. The writer keeps one entry per command
//! and per token, and at a few hundred thousand entries a doubling stopped
//! it for about 50 ms (the rehash, and the page faults of zeroing the new
//! table), so every command in flight waited: at 25k commands/s that is
//! over a thousand late replies. Split [`SHARDS`] ways, each doubling moves
//! one shard's entries: about 4k of them at a million.

use foldhash::fast::RandomState;
use hashbrown::hash_table::{Entry, HashTable};
use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};

/// Shards per map: a shard of a ten-million-entry map holds about 40k,
/// whose doubling is a millisecond or so, not a map's 50 ms at 229k.
pub const SHARDS: usize = 256;

/// A hash map made of [`SHARDS`] independently growing tables, each key in
/// the shard its hash picks. Iteration order is unspecified, as a
/// `HashMap`'s is.
///
/// One hash per operation picks the shard and the slot in it. A `HashMap`
/// per shard hashed every key twice: lookups at 300k keys took 32 ns
/// against one `HashMap`'s 20 ns, and the whole audit verify 5 % longer;
/// one hash brings them to 29 ns against 22 (the shard's own header is
/// the one load more).
#[derive(Clone)]
pub struct ShardedMap<K, V> {
    hasher: RandomState,
    shards: Box<[HashTable<(K, V)>]>,
}

/// The shard of a hash: bits 48..56. hashbrown takes a slot from the low
/// bits and filters on the top 7, so every key of a shard sharing these
/// costs it nothing (a shard would need 2^48 slots to reach them).
fn shard_of(hash: u64) -> usize {
    (hash >> 48) as usize & (SHARDS - 1)
}

impl<K: Hash + Eq, V> ShardedMap<K, V> {
    /// An empty map; shards allocate on their first insert.
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An empty map with room for about `entries` spread evenly.
    pub fn with_capacity(entries: usize) -> Self {
        let per_shard = entries.div_ceil(SHARDS);
        ShardedMap {
            hasher: RandomState::default(),
            shards: (0..SHARDS)
                .map(|_| HashTable::with_capacity(per_shard))
                .collect(),
        }
    }

    fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The value of `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        self.shards[shard_of(hash)]
            .find(hash, |(k, _)| k.borrow() == key)
            .map(|(_, v)| v)
    }

    /// The value of `key`, to change.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        self.shards[shard_of(hash)]
            .find_mut(hash, |(k, _)| k.borrow() == key)
            .map(|(_, v)| v)
    }

    /// Whether `key` has a value.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(key).is_some()
    }

    /// Sets `key` to `value`; the value it had.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let hash = self.hash(&key);
        let hasher = &self.hasher;
        let shard = &mut self.shards[shard_of(hash)];
        match shard.entry(hash, |(k, _)| *k == key, |(k, _)| hasher.hash_one(k)) {
            Entry::Occupied(mut entry) => Some(std::mem::replace(&mut entry.get_mut().1, value)),
            Entry::Vacant(entry) => {
                entry.insert((key, value));
                None
            }
        }
    }

    /// The value of `key`, inserting `make()` first if it has none.
    pub fn get_or_insert_with(&mut self, key: K, make: impl FnOnce() -> V) -> &mut V {
        let hash = self.hash(&key);
        let hasher = &self.hasher;
        let shard = &mut self.shards[shard_of(hash)];
        match shard.entry(hash, |(k, _)| *k == key, |(k, _)| hasher.hash_one(k)) {
            Entry::Occupied(entry) => &mut entry.into_mut().1,
            Entry::Vacant(entry) => &mut entry.insert((key, make())).into_mut().1,
        }
    }

    /// Removes `key`; the value it had.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        match self.shards[shard_of(hash)].find_entry(hash, |(k, _)| k.borrow() == key) {
            Ok(entry) => Some(entry.remove().0 .1),
            Err(_) => None,
        }
    }

    /// Entries in the map.
    pub fn len(&self) -> usize {
        self.shards.iter().map(HashTable::len).sum()
    }

    /// Whether the map has no entry.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(HashTable::is_empty)
    }

    /// Every entry, shard by shard.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards
            .iter()
            .flat_map(|shard| shard.iter().map(|(k, v)| (k, v)))
    }

    /// Every key, shard by shard.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.iter().map(|(k, _)| k)
    }

    /// Every value, shard by shard.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    /// Keeps only the entries for which `keep` says so.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        for shard in self.shards.iter_mut() {
            shard.retain(|(k, v)| keep(k, v));
        }
    }
}

impl<K: Hash + Eq, V> Default for ShardedMap<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq, V> Extend<(K, V)> for ShardedMap<K, V> {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, entries: I) {
        for (key, value) in entries {
            self.insert(key, value);
        }
    }
}

impl<K: Hash + Eq, V> FromIterator<(K, V)> for ShardedMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(entries: I) -> Self {
        let mut map = ShardedMap::new();
        map.extend(entries);
        map
    }
}

/// Equal when both hold the same entries, whatever their seeds.
impl<K: Hash + Eq, V: PartialEq> PartialEq for ShardedMap<K, V> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl<K: Hash + Eq, V: Eq> Eq for ShardedMap<K, V> {}

impl<K: fmt::Debug, V: fmt::Debug> fmt::Debug for ShardedMap<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.shards
                    .iter()
                    .flat_map(|shard| shard.iter().map(|(k, v)| (k, v))),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn behaves_as_one_map_through_inserts_removals_and_growth() {
        let mut sharded = ShardedMap::new();
        let mut model = BTreeMap::new();
        // Enough keys that every shard grows several times.
        for i in 0u64..20_000 {
            let key = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            assert_eq!(sharded.insert(key, i), model.insert(key, i));
            if i % 3 == 0 {
                let gone = key.wrapping_sub(0x9e37_79b9_7f4a_7c15);
                assert_eq!(sharded.remove(&gone), model.remove(&gone));
            }
        }
        *sharded.get_or_insert_with(7, || 0) += 1;
        *model.entry(7).or_insert(0) += 1;
        sharded.retain(|_, v| *v % 5 != 0);
        model.retain(|_, v| *v % 5 != 0);
        assert_eq!(sharded.len(), model.len());
        assert!(model.iter().all(|(k, v)| sharded.get(k) == Some(v)));
        let mut seen: Vec<_> = sharded.iter().map(|(k, v)| (*k, *v)).collect();
        seen.sort_unstable();
        assert_eq!(seen, model.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn keys_spread_over_the_shards() {
        let map: ShardedMap<u64, ()> = (0..(SHARDS as u64 * 64)).map(|k| (k, ())).collect();
        let fullest = map.shards.iter().map(HashTable::len).max().unwrap();
        let emptiest = map.shards.iter().map(HashTable::len).min().unwrap();
        // 64 per shard on average: a shard picked by a fixed bit pattern of
        // sequential keys would hold them all, or none.
        assert!(fullest < 160 && emptiest > 10, "{emptiest}..{fullest}");
    }

    #[test]
    fn maps_with_other_seeds_compare_by_entries() {
        let a: ShardedMap<&str, u8> = [("x", 1), ("y", 2)].into_iter().collect();
        let b: ShardedMap<&str, u8> = [("y", 2), ("x", 1)].into_iter().collect();
        let c: ShardedMap<&str, u8> = [("y", 2), ("x", 3)].into_iter().collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(ShardedMap::<u8, u8>::default().is_empty());
    }
}
