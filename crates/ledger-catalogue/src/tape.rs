//! A borrowed, flat JSON document for the hot path of the schema check.
//!
//! Parsing an event into a `serde_json::Value` allocates a `String` per
//! string and a B-tree per object, and dropping it frees them all: in the
//! audit's profile that cost more than the validation itself. A [`Tape`] is
//! one vector of tokens whose strings borrow the input. The `jsonschema`
//! crate validates any representation that implements its `Json` traits;
//! [`TapeJson`] is that implementation.
//!
//! The parser reads only a strict subset of JSON, the shape the ledger
//! writes: compact (no whitespace), every object's keys in strictly
//! increasing byte order, strings without escapes or control characters,
//! integers only, at most [`DEPTH_MAX`] levels. For anything else it returns
//! `None` and the caller takes the `serde_json::Value` path. Within the
//! subset a tape holds exactly the document `serde_json` reads (strings are
//! the bytes between the quotes, integers the same `Number`s, and sorted
//! keys rule out the duplicates a `Value` would collapse), so the schemas
//! see the same instance either way.

use jsonschema::json::{Array, Json, Node, NodeIdentity, Object};
use jsonschema::types::JsonType;
use serde_json::{Map, Number, Value};
use std::borrow::Cow;
use std::cmp::Ordering;

/// Deepest nesting the fast parser reads (events nest four levels).
pub const DEPTH_MAX: usize = 32;

/// One token of a tape.
#[derive(Debug)]
enum Tok<'s> {
    Null,
    Bool(bool),
    Number(Number),
    Str(&'s str),
    /// An array: its elements follow, up to `end` (exclusive).
    Array {
        len: u32,
        end: u32,
    },
    /// An object: `Key`, value, `Key`, value... up to `end`; the tokens of
    /// its keys are `members[first..first + len]`.
    Object {
        len: u32,
        end: u32,
        first: u32,
    },
    Key(&'s str),
}

/// A parsed document.
#[derive(Debug)]
pub struct Tape<'s> {
    toks: Vec<Tok<'s>>,
    /// Indices of the `Key` tokens, object by object, in key order.
    members: Vec<u32>,
}

impl<'s> Tape<'s> {
    /// Parses `bytes` if they are in the subset the fast path reads.
    ///
    /// `inject` adds one member to the root object (in its sorted place) as
    /// if the bytes held it: the published form of canonical bytes is them
    /// plus `hash`. Bytes that already hold that key are refused.
    pub fn parse(bytes: &'s [u8], inject: Option<(&'s str, &'s str)>) -> Option<Tape<'s>> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parser = Parser {
            text,
            bytes,
            at: 0,
            tape: Tape {
                toks: Vec::with_capacity(bytes.len() / 8 + 4),
                members: Vec::with_capacity(bytes.len() / 24 + 4),
            },
            open_keys: Vec::with_capacity(32),
            inject,
        };
        parser.value(0)?;
        if parser.at != bytes.len() || parser.inject.is_some() {
            return None;
        }
        Some(parser.tape)
    }

    /// The root node.
    pub fn root(&self) -> TapeNode<'_> {
        TapeNode {
            tape: tape_ref(self),
            at: 0,
        }
    }

    /// One past the last token of the value at `at`.
    fn skip(&self, at: u32) -> u32 {
        match self.toks[at as usize] {
            Tok::Array { end, .. } | Tok::Object { end, .. } => end,
            _ => at + 1,
        }
    }

    fn to_value(&self, at: u32) -> Value {
        match &self.toks[at as usize] {
            Tok::Null => Value::Null,
            Tok::Bool(b) => Value::Bool(*b),
            Tok::Number(n) => Value::Number(n.clone()),
            Tok::Str(s) | Tok::Key(s) => Value::String((*s).to_owned()),
            Tok::Array { .. } => Value::Array(
                self.elements(at)
                    .map(|node| self.to_value(node.at))
                    .collect(),
            ),
            Tok::Object { len, first, .. } => {
                let mut map = Map::new();
                for &key in &self.members[*first as usize..(*first + *len) as usize] {
                    let Tok::Key(name) = &self.toks[key as usize] else {
                        unreachable!("members index keys")
                    };
                    map.insert((*name).to_owned(), self.to_value(key + 1));
                }
                Value::Object(map)
            }
        }
    }

    fn elements(&self, at: u32) -> TapeElements<'_> {
        let (len, next) = match self.toks[at as usize] {
            Tok::Array { len, .. } => (len, at + 1),
            _ => (0, at + 1),
        };
        TapeElements {
            tape: tape_ref(self),
            next,
            left: len,
        }
    }
}

/// Shortens the strings' lifetime to the tape's own (a tape is covariant).
fn tape_ref<'a, 's: 'a>(tape: &'a Tape<'s>) -> &'a Tape<'a> {
    tape
}

struct Parser<'s> {
    text: &'s str,
    bytes: &'s [u8],
    at: usize,
    tape: Tape<'s>,
    /// The keys of the objects still open.
    open_keys: Vec<u32>,
    /// The member still to add to the root object.
    inject: Option<(&'s str, &'s str)>,
}

impl<'s> Parser<'s> {
    fn push(&mut self, tok: Tok<'s>) -> Option<u32> {
        let at = u32::try_from(self.tape.toks.len()).ok()?;
        self.tape.toks.push(tok);
        Some(at)
    }

    fn literal(&mut self, word: &[u8], tok: Tok<'s>) -> Option<()> {
        if self.bytes[self.at..].starts_with(word) {
            self.at += word.len();
            self.push(tok)?;
            Some(())
        } else {
            None
        }
    }

    fn value(&mut self, depth: usize) -> Option<()> {
        match *self.bytes.get(self.at)? {
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b'"' => {
                let s = self.string()?;
                self.push(Tok::Str(s))?;
                Some(())
            }
            b't' => self.literal(b"true", Tok::Bool(true)),
            b'f' => self.literal(b"false", Tok::Bool(false)),
            b'n' => self.literal(b"null", Tok::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// A string without escapes or control characters, at its opening quote.
    fn string(&mut self) -> Option<&'s str> {
        let start = self.at + 1;
        let len = string_end(&self.bytes[start..])?;
        if self.bytes[start + len] != b'"' {
            return None;
        }
        self.at = start + len + 1;
        // Quotes are ASCII, so both ends are character boundaries.
        self.text.get(start..start + len)
    }

    /// An integer: `-?(0|[1-9][0-9]*)`, within `i64` or `u64`.
    fn number(&mut self) -> Option<()> {
        let negative = self.bytes[self.at] == b'-';
        let start = self.at + usize::from(negative);
        let digits = self.bytes[start..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        let end = start + digits;
        let first = *self.bytes.get(start)?;
        if digits == 0 || (first == b'0' && digits > 1) {
            return None;
        }
        // A fraction or an exponent: the `Value` path reads it.
        if matches!(self.bytes.get(end), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let mut magnitude: u64 = 0;
        for &c in &self.bytes[start..end] {
            magnitude = magnitude
                .checked_mul(10)?
                .checked_add(u64::from(c - b'0'))?;
        }
        let number = if negative {
            if magnitude == 0 {
                return None;
            }
            Number::from(i64::try_from(-i128::from(magnitude)).ok()?)
        } else {
            Number::from(magnitude)
        };
        self.at = end;
        self.push(Tok::Number(number))?;
        Some(())
    }

    fn array(&mut self, depth: usize) -> Option<()> {
        if depth > DEPTH_MAX {
            return None;
        }
        let at = self.push(Tok::Array { len: 0, end: 0 })?;
        self.at += 1;
        let mut len = 0u32;
        if self.bytes.get(self.at) == Some(&b']') {
            self.at += 1;
        } else {
            loop {
                self.value(depth)?;
                len += 1;
                match *self.bytes.get(self.at)? {
                    b',' => self.at += 1,
                    b']' => {
                        self.at += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        let end = u32::try_from(self.tape.toks.len()).ok()?;
        self.tape.toks[at as usize] = Tok::Array { len, end };
        Some(())
    }

    fn key(&mut self, base: usize, key: &'s str) -> Option<()> {
        if self.open_keys.len() > base {
            let previous = self.open_keys[self.open_keys.len() - 1];
            let Tok::Key(previous) = self.tape.toks[previous as usize] else {
                unreachable!("open_keys index keys")
            };
            if previous.as_bytes() >= key.as_bytes() {
                return None;
            }
        }
        let at = self.push(Tok::Key(key))?;
        self.open_keys.push(at);
        Some(())
    }

    fn object(&mut self, depth: usize) -> Option<()> {
        if depth > DEPTH_MAX {
            return None;
        }
        let root = depth == 1;
        let at = self.push(Tok::Object {
            len: 0,
            end: 0,
            first: 0,
        })?;
        self.at += 1;
        // Keys are collected on a stack and appended to `members` once the
        // object is complete, so nested objects keep their own runs contiguous.
        let base = self.open_keys.len();
        if self.bytes.get(self.at) == Some(&b'}') {
            self.at += 1;
        } else {
            loop {
                if self.bytes.get(self.at) != Some(&b'"') {
                    return None;
                }
                let key = self.string()?;
                if root {
                    if let Some((name, value)) = self.inject {
                        match name.as_bytes().cmp(key.as_bytes()) {
                            Ordering::Less => {
                                self.inject = None;
                                self.key(base, name)?;
                                self.push(Tok::Str(value))?;
                            }
                            Ordering::Equal => return None,
                            Ordering::Greater => {}
                        }
                    }
                }
                self.key(base, key)?;
                if self.bytes.get(self.at) != Some(&b':') {
                    return None;
                }
                self.at += 1;
                self.value(depth)?;
                match *self.bytes.get(self.at)? {
                    b',' => self.at += 1,
                    b'}' => {
                        self.at += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        if root {
            if let Some((name, value)) = self.inject.take() {
                self.key(base, name)?;
                self.push(Tok::Str(value))?;
            }
        }
        let first = u32::try_from(self.tape.members.len()).ok()?;
        let len = u32::try_from(self.open_keys.len() - base).ok()?;
        self.tape.members.extend_from_slice(&self.open_keys[base..]);
        self.open_keys.truncate(base);
        let end = u32::try_from(self.tape.toks.len()).ok()?;
        self.tape.toks[at as usize] = Tok::Object { len, end, first };
        Some(())
    }
}

/// The `jsonschema` representation of a [`Tape`].
pub struct TapeJson;

impl Json for TapeJson {
    type Node<'a> = TapeNode<'a>;
    type PreparedKey = Box<str>;
    type StringBuffer = ();

    // Lookups are binary searches over sorted keys, as in a B-tree.
    const KEYS_PER_LOOKUP: usize = 2;
    const ACYCLIC: bool = true;

    fn prepare_key(key: &str) -> Box<str> {
        key.into()
    }

    fn with_string_node<T>((): &mut (), string: &str, f: impl FnOnce(TapeNode<'_>) -> T) -> T {
        let tape = Tape {
            toks: vec![Tok::Str(string)],
            members: Vec::new(),
        };
        f(tape.root())
    }
}

/// One value of a tape.
#[derive(Clone, Copy)]
pub struct TapeNode<'a> {
    tape: &'a Tape<'a>,
    at: u32,
}

impl<'a> TapeNode<'a> {
    fn tok(&self) -> &'a Tok<'a> {
        &self.tape.toks[self.at as usize]
    }

    fn str(&self) -> Option<&'a str> {
        match self.tok() {
            Tok::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The member `key` of an object.
    pub fn member(&self, key: &str) -> Option<TapeNode<'a>> {
        self.as_object()?.find(key)
    }

    /// The string, if the node is one.
    pub fn as_str_value(&self) -> Option<&'a str> {
        self.str()
    }

    /// The number as a `u64`, if it is one.
    pub fn as_u64_value(&self) -> Option<u64> {
        self.as_number()?.as_u64()
    }
}

impl<'a> Node<'a, TapeJson> for TapeNode<'a> {
    type Object = TapeObject<'a>;
    type Array = TapeArray<'a>;
    type Number = &'a Number;

    fn as_object(&self) -> Option<TapeObject<'a>> {
        match *self.tok() {
            Tok::Object { len, first, .. } => Some(TapeObject {
                tape: self.tape,
                keys: &self.tape.members[first as usize..(first + len) as usize],
            }),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<TapeArray<'a>> {
        match *self.tok() {
            Tok::Array { len, .. } => Some(TapeArray {
                tape: self.tape,
                at: self.at,
                len,
            }),
            _ => None,
        }
    }

    fn as_string(&self) -> Option<Cow<'a, str>> {
        self.str().map(Cow::Borrowed)
    }

    fn as_number(&self) -> Option<&'a Number> {
        match self.tok() {
            Tok::Number(n) => Some(n),
            _ => None,
        }
    }

    fn as_boolean(&self) -> Option<bool> {
        match self.tok() {
            Tok::Bool(b) => Some(*b),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        matches!(self.tok(), Tok::Null)
    }

    fn json_type(&self) -> JsonType {
        match self.tok() {
            Tok::Null => JsonType::Null,
            Tok::Bool(_) => JsonType::Boolean,
            Tok::Number(_) => JsonType::Number,
            Tok::Str(_) | Tok::Key(_) => JsonType::String,
            Tok::Array { .. } => JsonType::Array,
            Tok::Object { .. } => JsonType::Object,
        }
    }

    fn string_length(&self) -> Option<u64> {
        self.str().map(|s| char_count(s) as u64)
    }

    fn string_length_within(&self, min: u64, max: u64) -> Option<bool> {
        let s = self.str()?;
        // A code point takes one to four bytes.
        let bytes = s.len() as u64;
        if bytes < min || bytes.div_ceil(4) > max {
            return Some(false);
        }
        if min <= bytes.div_ceil(4) && bytes <= max {
            return Some(true);
        }
        Some((min..=max).contains(&(char_count(s) as u64)))
    }

    fn equals_value(&self, expected: &Value) -> bool {
        // Scalars without building a `Value` (enum and const checks run on
        // every event); containers through the general comparison.
        match (self.tok(), expected) {
            (Tok::Str(s), Value::String(e)) => *s == e,
            (Tok::Str(_), _) => false,
            (Tok::Null, e) => e.is_null(),
            (Tok::Bool(b), Value::Bool(e)) => b == e,
            (Tok::Bool(_), _) => false,
            (Tok::Number(n), Value::Number(_)) => {
                jsonschema::json::cmp::equal(&Value::Number(n.clone()), expected)
            }
            (Tok::Number(_), _) => false,
            _ => jsonschema::json::cmp::equal(&self.to_value(), expected),
        }
    }

    fn to_value(&self) -> Cow<'a, Value> {
        Cow::Owned(self.tape.to_value(self.at))
    }

    fn identity(&self) -> Option<NodeIdentity> {
        Some(NodeIdentity::tagged(
            std::ptr::from_ref(self.tape) as usize,
            self.at,
        ))
    }
}

/// Byte order of two short keys, without a `memcmp` call per probe.
fn compare(a: &[u8], b: &[u8]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}

/// Index of the first `"`, `\` or control byte (what ends a plain string),
/// eight bytes at a time: strings are most of an event's bytes.
///
/// `has(x)` flags the zero bytes of `x` (and maybe bytes above a zero,
/// through the borrow); `control` flags the bytes below 0x20 the same way.
/// The lowest flag is always a true one, and that is the one taken.
fn string_end(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for word in words.by_ref() {
        let w = u64::from_le_bytes(word.try_into().expect("chunks of eight"));
        let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
        let flags =
            has(w ^ (ONES * u64::from(b'"'))) | has(w ^ (ONES * u64::from(b'\\'))) | control;
        if flags != 0 {
            return Some(at + (flags.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let rest = words.remainder();
    rest.iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .map(|i| at + i)
}

fn char_count(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.chars().count()
    }
}

/// Objects with at most this many keys are searched by a linear scan.
const SCAN_KEYS_MAX: usize = 24;

/// An object of a tape.
#[derive(Clone, Copy)]
pub struct TapeObject<'a> {
    tape: &'a Tape<'a>,
    /// Its key tokens, in key order.
    keys: &'a [u32],
}

impl<'a> TapeObject<'a> {
    fn key(&self, at: u32) -> &'a str {
        match &self.tape.toks[at as usize] {
            Tok::Key(k) => k,
            _ => unreachable!("members index keys"),
        }
    }

    fn find(&self, key: &str) -> Option<TapeNode<'a>> {
        // Events' objects are small and their keys mostly differ in length:
        // a scan comparing lengths first beats a binary search of byte
        // comparisons there.
        let i = if self.keys.len() <= SCAN_KEYS_MAX {
            self.keys.iter().position(|&at| self.key(at) == key)?
        } else {
            self.keys
                .binary_search_by(|&at| compare(self.key(at).as_bytes(), key.as_bytes()))
                .ok()?
        };
        Some(TapeNode {
            tape: self.tape,
            at: self.keys[i] + 1,
        })
    }
}

/// The members of an object, in key order.
pub struct TapeMembers<'a> {
    object: TapeObject<'a>,
    next: usize,
}

impl<'a> Iterator for TapeMembers<'a> {
    type Item = (&'a str, TapeNode<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let &at = self.object.keys.get(self.next)?;
        self.next += 1;
        Some((
            self.object.key(at),
            TapeNode {
                tape: self.object.tape,
                at: at + 1,
            },
        ))
    }
}

impl<'a> Object<'a, TapeJson> for TapeObject<'a> {
    type Node = TapeNode<'a>;
    type MemberName = &'a str;
    type MembersIter = TapeMembers<'a>;

    fn len(&self) -> usize {
        self.keys.len()
    }

    fn get(&self, key: &Box<str>) -> Option<TapeNode<'a>> {
        self.find(key)
    }

    fn members(&self) -> TapeMembers<'a> {
        TapeMembers {
            object: *self,
            next: 0,
        }
    }
}

/// An array of a tape.
#[derive(Clone, Copy)]
pub struct TapeArray<'a> {
    tape: &'a Tape<'a>,
    at: u32,
    len: u32,
}

/// The elements of an array, in order.
pub struct TapeElements<'a> {
    tape: &'a Tape<'a>,
    next: u32,
    left: u32,
}

impl<'a> Iterator for TapeElements<'a> {
    type Item = TapeNode<'a>;

    fn next(&mut self) -> Option<TapeNode<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let node = TapeNode {
            tape: self.tape,
            at: self.next,
        };
        self.next = self.tape.skip(self.next);
        Some(node)
    }
}

impl<'a> Array<'a, TapeJson> for TapeArray<'a> {
    type Node = TapeNode<'a>;
    type ElementsIter = TapeElements<'a>;

    fn len(&self) -> usize {
        self.len as usize
    }

    fn elements(&self) -> TapeElements<'a> {
        self.tape.elements(self.at)
    }

    fn is_unique(&self) -> bool {
        // Arrays of strings (the only `uniqueItems` in the catalogue) without
        // building values; anything else the general way.
        let strings: Option<Vec<&str>> = self.elements().map(|n| n.str()).collect();
        match strings {
            Some(mut strings) => {
                strings.sort_unstable();
                strings.windows(2).all(|w| w[0] != w[1])
            }
            None => {
                let values: Vec<Value> =
                    self.elements().map(|n| self.tape.to_value(n.at)).collect();
                jsonschema::json::unique::is_unique(&values)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn string_end_finds_what_a_byte_scan_finds() {
        let naive = |b: &[u8]| b.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
        // Every special byte at every offset, after ASCII, UTF-8 and bytes
        // just around the boundaries (0x1f/0x20, 0x21-0x23, 0x5b-0x5d, 0x7f-0x81).
        let fillers: [&[u8]; 4] = [
            b"abcdefgh",
            "Straße—ü".as_bytes(),
            &[0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0xff],
            &[0xc3, 0xa9, 0x21, 0x20],
        ];
        for filler in fillers {
            for len in 0..40 {
                let base: Vec<u8> = filler.iter().copied().cycle().take(len).collect();
                assert_eq!(super::string_end(&base), naive(&base), "{base:?}");
                for special in [b'"', b'\\', 0x00, 0x0a, 0x1f] {
                    for at in 0..len {
                        let mut b = base.clone();
                        b[at] = special;
                        assert_eq!(super::string_end(&b), naive(&b), "{b:?}");
                        // A second special later never hides the first.
                        if at + 3 < len {
                            b[at + 3] = b'"';
                            assert_eq!(super::string_end(&b), naive(&b), "{b:?}");
                        }
                    }
                }
            }
        }
        // Pseudo-random bytes (xorshift), biased towards the special ones.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let len = (x % 48) as usize;
            let b: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let r = (x % 256) as u8;
                    if r < 8 {
                        [b'"', b'\\', 0x1f, 0x20, 0x21, 0x22, 0x5c, 0x00][r as usize]
                    } else {
                        r
                    }
                })
                .collect();
            assert_eq!(super::string_end(&b), naive(&b), "{b:?}");
        }
    }

    use super::*;

    fn parse(text: &str) -> Option<Tape<'_>> {
        Tape::parse(text.as_bytes(), None)
    }

    #[test]
    fn a_tape_reads_back_as_the_value_serde_json_parses() {
        let text = "{\"a\":[1,-2,0,18446744073709551615,-9223372036854775808,\"x\",null,true,{\"b\":{},\"c\":[]}],\"d\":\"\u{e9}t\u{e9}\",\"e\":false}";
        let tape = parse(text).unwrap();
        let value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(tape.root().to_value().into_owned(), value);
        let a = tape.root().member("a").unwrap();
        assert_eq!(a.as_array().unwrap().len(), 9);
        assert_eq!(
            a.as_array()
                .unwrap()
                .elements()
                .map(|n| n.json_type())
                .collect::<Vec<_>>(),
            [
                JsonType::Number,
                JsonType::Number,
                JsonType::Number,
                JsonType::Number,
                JsonType::Number,
                JsonType::String,
                JsonType::Null,
                JsonType::Boolean,
                JsonType::Object
            ]
        );
        assert_eq!(
            tape.root().member("d").unwrap().as_string().unwrap(),
            "\u{e9}t\u{e9}"
        );
        assert_eq!(tape.root().member("d").unwrap().string_length(), Some(3));
        assert!(tape.root().member("z").is_none());
        assert!(tape.root().member("").is_none());
        assert!(tape.root().member("a").unwrap().member("b").is_none());
    }

    #[test]
    fn anything_outside_the_subset_is_left_to_serde_json() {
        for text in [
            r#"{"b":1,"a":2}"#,
            r#"{"a":{"x":1,"x":2}}"#,
            r#"{"a":1} "#,
            r#" {"a":1}"#,
            r#"{"a": 1}"#,
            r#"{"a":1"#,
            r#"{"a":1,}"#,
            r#"[1,]"#,
            r#"{"a":"x\"y"}"#,
            r#"{"a":"x\u0041"}"#,
            "{\"a\":\"x\ty\"}",
            r#"{"a":1.5}"#,
            r#"{"a":1e3}"#,
            r#"{"a":01}"#,
            r#"{"a":-0}"#,
            r#"{"a":-}"#,
            r#"{"a":18446744073709551616}"#,
            r#"{"a":-9223372036854775809}"#,
            r#"{"a":tru}"#,
            r#"{"a":nul}"#,
            r#"{a:1}"#,
            "",
            "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
        ] {
            assert!(parse(text).is_none(), "{text}");
        }
        assert!(Tape::parse(b"{\"a\":\"\xff\"}", None).is_none());
        // A key that is only a prefix of the next one is in order.
        assert!(parse(r#"{"a":1,"ab":2}"#).is_some());
        assert!(parse(r#"[]"#).is_some());
        assert!(parse(r#"{}"#).is_some());
    }

    #[test]
    fn an_injected_member_takes_its_sorted_place_in_the_root_only() {
        let read = |text: &'static str| {
            let tape = Tape::parse(text.as_bytes(), Some(("hash", "h"))).unwrap();
            tape.root().to_value().into_owned()
        };
        for text in [r#"{"a":{"b":1},"z":2}"#, r#"{"a":1}"#, r#"{"z":1}"#, "{}"] {
            let mut expected: Value = serde_json::from_str(text).unwrap();
            expected["hash"] = Value::String("h".into());
            assert_eq!(read(text), expected, "{text}");
        }
        // Bytes that hold the key already, or no root object: refused.
        assert!(Tape::parse(br#"{"hash":"x","z":1}"#, Some(("hash", "h"))).is_none());
        assert!(Tape::parse(br#"[1]"#, Some(("hash", "h"))).is_none());
    }

    #[test]
    fn unique_items_compares_strings_and_other_values() {
        let unique = |text: &str| {
            let tape = parse(text).unwrap();
            let node = tape.root();
            node.as_array().unwrap().is_unique()
        };
        assert!(unique(r#"["a","b","c"]"#));
        assert!(!unique(r#"["a","b","a"]"#));
        assert!(unique(r#"[1,"1"]"#));
        assert!(!unique(r#"[1,1]"#));
        assert!(!unique(r#"[{"a":1},{"a":1}]"#));
        assert!(unique(r#"[]"#));
    }
}
