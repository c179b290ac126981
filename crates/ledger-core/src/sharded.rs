//! A hash map split into shards that grow one at a time.
//!
//! A `HashMap` doubles all at once. The writer keeps one entry per command
//! and per token, and at a few hundred thousand entries a doubling stopped
//! it for about 50 ms (the rehash, and the page faults of zeroing the new
//! table), so every command in flight waited: at 25k commands/s that is
//! over a thousand late replies. Split [`SHARDS`] ways, each doubling moves
//! one shard's entries, a few hundred microseconds' work at a million.

use foldhash::fast::RandomState;
use std::borrow::Borrow;
use std::collections::hash_map::{self, HashMap};
use std::fmt;
use std::hash::{BuildHasher, Hash};

/// Shards per map: enough that one shard's doubling stays well under a
/// millisecond up to tens of millions of entries.
pub const SHARDS: usize = 256;

/// A `HashMap` made of [`SHARDS`] independently growing maps, each key in
/// the shard its hash picks. Iteration order is unspecified, as a
/// `HashMap`'s is.
#[derive(Clone)]
pub struct ShardedMap<K, V> {
    /// Picks the shard. Seeded apart from the shards' own hashers: a shard
    /// whose keys all shared the top bits of their in-shard hash would
    /// defeat hashbrown's probing, which filters on those bits.
    pick: RandomState,
    shards: Box<[HashMap<K, V, RandomState>]>,
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
            pick: RandomState::default(),
            shards: (0..SHARDS)
                .map(|_| HashMap::with_capacity_and_hasher(per_shard, RandomState::default()))
                .collect(),
        }
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        // The top bits: foldhash mixes them as well as the low ones.
        (self.pick.hash_one(key) >> (u64::BITS - SHARDS.trailing_zeros())) as usize
    }

    /// The value of `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[self.shard(key)].get(key)
    }

    /// The value of `key`, to change.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = self.shard(key);
        self.shards[shard].get_mut(key)
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
        let shard = self.shard(&key);
        self.shards[shard].insert(key, value)
    }

    /// Removes `key`; the value it had.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = self.shard(key);
        self.shards[shard].remove(key)
    }

    /// The entry of `key`, in its shard.
    pub fn entry(&mut self, key: K) -> hash_map::Entry<'_, K, V> {
        let shard = self.shard(&key);
        self.shards[shard].entry(key)
    }

    /// Entries in the map.
    pub fn len(&self) -> usize {
        self.shards.iter().map(HashMap::len).sum()
    }

    /// Whether the map has no entry.
    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(HashMap::is_empty)
    }

    /// Every entry, shard by shard.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|shard| shard.iter())
    }

    /// Every key, shard by shard.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.shards.iter().flat_map(|shard| shard.keys())
    }

    /// Every value, shard by shard.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.shards.iter().flat_map(|shard| shard.values())
    }

    /// Keeps only the entries for which `keep` says so.
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        for shard in self.shards.iter_mut() {
            shard.retain(&mut keep);
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
            .entries(self.shards.iter().flat_map(|shard| shard.iter()))
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
        *sharded.entry(7).or_insert(0) += 1;
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
        let fullest = map.shards.iter().map(HashMap::len).max().unwrap();
        let emptiest = map.shards.iter().map(HashMap::len).min().unwrap();
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
