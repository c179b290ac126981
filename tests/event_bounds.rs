//! Boundary values through the whole write path: random sequences of
//! commands whose fields sit at the edges of the field rules
//! (`ledger_core::validate`, PRODUCT.md): texts of exactly the maximum
//! length in multi-byte characters, combining marks, RTL text, NFD forms,
//! zero-width and other format characters, quotes and backslashes (JSON
//! escapes), secrets of exactly 8192 bytes of arbitrary characters, group
//! lists of 256, expiries at `i64::MIN`/`i64::MAX`/0/the year-9999 limit,
//! `expectedVersion` at `u64::MAX`, actors and correlation ids at 200
//! characters, and a clock at the edges of the timestamp range.
//!
//! Whatever the rules accept must be handled by everything downstream of the
//! log; whatever they refuse must append nothing. After each accepted command
//! every new event must decode and re-encode to the same canonical bytes,
//! publish to bytes that decode again, and validate against the catalogue
//! (both of its paths). At every restart and at the end: the audit verifier
//! (schemas on) finds nothing, the projector's views serialize and equal a
//! rebuild, lookups by name, provided id and user find their tokens, a
//! reveal returns the secrets that were sent and a string that verifies, and
//! the store reopens from its snapshot. At the end of a case also: an export
//! of the log (whole, and of one workspace) verifies on its own and replays
//! to the same views, every token's history has one entry per version (from
//! the data dir and from the export), a view as of every version and every
//! event time exists, the local verifier's fold of a client token's events
//! equals its view, and a reopen without the snapshot (a full replay) works.
//! A retried `commandId` must get its first answer again, across restarts.
//!
//! Commands are parsed from bytes with `command::parse`, as every edge does,
//! so the 64 KiB body limit applies. `EVENT_BOUNDS_TRACE=1` prints what each
//! case did (outcomes by command, refusals by field), to check that the
//! generator still reaches acceptance; `PROPTEST_CASES` runs more cases.

use chrono::{TimeZone, Utc};
use ledger_audit::export::ExportRequest;
use ledger_audit::replay::{Point, Source as ReplaySource};
use ledger_audit::verify::NoObserver;
use ledger_audit::{LogReader, Plan, VerifyOptions};
use ledger_catalogue::Catalogue;
use ledger_core::command::parse;
use ledger_core::event::{hash_hex, GENESIS_HASH};
use ledger_core::time::{MAX_MILLIS, MIN_MILLIS};
use ledger_core::{CommandName, Envelope, ErrorCode, Timestamp, TokenKind, TokenView};
use ledger_crypto::MasterKey;
use ledger_projector::{AsOf, ListFilter, Lookup, Projector, TrashedFilter};
use ledger_store::{Store, StoreConfig, Verifier};
use ledger_verify::{Applied, TokenStatus};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use uuid::Uuid;

// ---------------------------------------------------------------------------
// Boundary texts
// ---------------------------------------------------------------------------

/// Pieces of text: each is accepted by the key-text rules (NFC, no format
/// characters, no odd spaces) when it stands alone and is not at an end.
const SAFE: &[&str] = &[
    "a",
    "Z",
    "\u{e9}",                        // é, composed (NFC)
    "\u{df}",                        // ß (folds to "ss")
    "\u{1F600}",                     // 😀, 4 bytes in UTF-8, 2 UTF-16 units
    "\u{5e9}\u{5dc}",                // Hebrew (RTL)
    "\u{639}\u{631}",                // Arabic (RTL)
    "\u{4e2d}",                      // CJK
    "\u{FFFF}",                      // a noncharacter
    "\u{10FFFF}",                    // the last code point
    "\u{E000}",                      // private use
    "\"",                            // escaped in JSON
    "\\",                            // escaped in JSON
    "\u{130}",                       // İ (folds to two characters)
    "\u{FB03}",                      // ﬃ (folds to "ffi")
    "\u{1F0}",                       // ǰ (folds to a non-NFC sequence)
    "\u{3c2}",                       // ς, final sigma
    "\u{1F1FA}\u{1F1F8}",            // a flag (two regional indicators)
    "\u{2764}\u{FE0F}",              // a variation selector
    "\u{915}\u{94D}\u{200D}\u{937}", // Devanagari: a joiner after a virama
    "\u{FFFD}",
    "\u{1D11E}", // 𝄞, 4 bytes
    "\u{390}",   // ΐ
    "\u{3164}",  // Hangul filler (Lo, invisible)
    " ",         // a space inside
    "/",
    ".",
    "*",
    ">",
    "%",
    "$",
    "'",
    "<script>",
    "0",
];

/// Pieces the key-text rules refuse (or that only plain text accepts).
const ODD: &[&str] = &[
    "e\u{301}",                   // NFD é
    "\u{1F469}\u{200D}\u{1F4BB}", // ZWJ emoji sequence
    "\u{200B}",                   // zero-width space
    "\u{FEFF}",                   // BOM
    "\u{202E}",                   // right-to-left override
    "\u{2028}",                   // line separator
    "\u{A0}",                     // no-break space
    "\u{212A}",                   // Kelvin sign (not NFC)
    "\u{2126}",                   // Ohm sign (not NFC)
    "\u{301}",                    // a lone combining mark
    "\u{E0041}",                  // a tag character (Cf)
    "\u{85}",                     // NEL (Cc)
    "\n",
    "\t",
    "\u{7F}",
    "\u{0}",
    "\u{1100}\u{1161}", // conjoining jamo (not NFC)
    "\u{345}",          // combining ypogegrammeni
    "\u{3000}",         // ideographic space
    "\u{2062}",         // invisible times (Cf)
];

fn piece() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        4 => proptest::sample::select(SAFE),
        1 => proptest::sample::select(ODD),
    ]
}

/// `target` characters (code points) taken in turn from `pieces`.
fn chars_from(pieces: &[&str], target: usize) -> String {
    let mut out = String::new();
    let mut n = 0;
    'outer: loop {
        for p in pieces {
            for c in p.chars() {
                if n == target {
                    break 'outer;
                }
                out.push(c);
                n += 1;
            }
        }
        if pieces.iter().all(|p| p.is_empty()) {
            break;
        }
    }
    out
}

/// Replaces whitespace at either end (refused in keys) by `x`, keeping the length.
fn inner(text: String) -> String {
    let n = text.chars().count();
    text.chars()
        .enumerate()
        .map(|(i, c)| {
            if (i == 0 || i + 1 == n) && c.is_whitespace() {
                'x'
            } else {
                c
            }
        })
        .collect()
}

/// A text for a field of at most `max` characters. Mostly one the rules
/// accept at its limit: exactly `max` characters of multi-byte pieces; also
/// odd pieces (format characters, NFD, controls), one character too many,
/// and special values.
fn text(max: usize) -> impl Strategy<Value = String> {
    let valid_len = prop_oneof![
        5 => Just(max),
        1 => Just(max - 1),
        1 => Just(1usize),
        2 => 1usize..12,
    ];
    let valid = (
        proptest::collection::vec(proptest::sample::select(SAFE), 1..4),
        valid_len,
    )
        .prop_map(|(pieces, len)| inner(chars_from(&pieces, len)));
    let any_len = prop_oneof![
        3 => Just(max),
        1 => Just(max + 1),
        2 => 1usize..12,
    ];
    let odd = (proptest::collection::vec(piece(), 1..4), any_len)
        .prop_map(|(pieces, len)| chars_from(&pieces, len));
    let special = proptest::sample::select(vec![
        String::new(),
        " ".into(),
        "\u{3000}".into(),
        " x".into(),
        "x ".into(),
        "x\u{A0}".into(),
        "\u{200B}".into(),
        "MyToken".into(),
        "mytoken".into(),
        "STRASSE".into(),
        "stra\u{df}e".into(),
        "\u{212A}elvin".into(),
        "Kelvin".into(),
        "x".repeat(max),
        "\u{1F600}".repeat(max),
        format!("{}\u{301}", "e".repeat(max - 1)),
        "\u{0}".into(),
    ]);
    prop_oneof![14 => valid, 3 => odd, 1 => special]
}

/// A provider secret: any characters, at most 8192 bytes.
fn secret() -> impl Strategy<Value = String> {
    let bytes = prop_oneof![
        5 => Just(8192usize),
        1 => Just(8193usize),
        1 => Just(8191usize),
        1 => Just(1usize),
        5 => 1usize..40,
    ];
    let pieces = proptest::collection::vec(
        prop_oneof![
            3 => proptest::sample::select(SAFE),
            1 => proptest::sample::select(ODD),
        ],
        1..4,
    );
    (pieces, bytes).prop_map(|(pieces, target)| {
        // Whole characters up to `target` bytes, then ASCII to fill it exactly.
        let mut out = String::new();
        'outer: for p in pieces.iter().cycle().take(target * 4 + 4) {
            for c in p.chars() {
                if out.len() + c.len_utf8() > target {
                    break 'outer;
                }
                out.push(c);
            }
        }
        while out.len() < target {
            out.push('s');
        }
        out
    })
}

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

/// Absent, `null`, or a value.
#[derive(Clone, Debug)]
enum Opt<T> {
    Absent,
    Null,
    Some(T),
}

fn opt<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> impl Strategy<Value = Opt<T>> {
    prop_oneof![
        2 => Just(Opt::Absent),
        1 => Just(Opt::Null),
        3 => s.prop_map(Opt::Some),
    ]
}

#[derive(Clone, Debug)]
enum Expected {
    Current,
    CurrentPlus1,
    Value(Value),
}

#[derive(Clone, Debug)]
enum Ws {
    /// The target token's workspace (`acme` for a new token).
    Target,
    Acme,
    Longest,
    Other,
}

impl Ws {
    fn id(&self) -> &'static str {
        match self {
            Ws::Target | Ws::Acme => "acme",
            // 64 characters, every allowed kind.
            Ws::Longest => "Zz09_-Zz09_-Zz09_-Zz09_-Zz09_-Zz09_-Zz09_-Zz09_-Zz09_-Zz09_-abcd",
            Ws::Other => "_",
        }
    }
}

/// What every command carries.
#[derive(Clone, Debug)]
struct Common {
    agent_id: String,
    agent_type: &'static str,
    correlation: Opt<String>,
    expected: Opt<Expected>,
    ws: Ws,
}

fn common() -> impl Strategy<Value = Common> {
    let expected = prop_oneof![
        2 => Just(Expected::Current),
        1 => Just(Expected::CurrentPlus1),
        1 => proptest::sample::select(vec![
            json!(0),
            json!(1),
            json!(u64::MAX),
            json!(-1),
            json!(1.5),
            json!("1"),
        ])
        .prop_map(Expected::Value),
    ];
    (
        prop_oneof![3 => Just("alice".to_owned()), 2 => text(200)],
        proptest::sample::select(vec!["user", "client_token", "service", "system"]),
        opt(text(200)),
        prop_oneof![4 => Just(Opt::Absent), 1 => opt(expected)],
        prop_oneof![16 => Just(Ws::Target), 1 => Just(Ws::Acme), 1 => Just(Ws::Longest), 1 => Just(Ws::Other)],
    )
        .prop_map(|(agent_id, agent_type, correlation, expected, ws)| Common {
            agent_id,
            agent_type,
            correlation,
            expected,
            ws,
        })
}

/// A key text given fresh, or taken from a token the case made.
#[derive(Clone, Debug)]
enum Src {
    Fresh(String),
    /// The value of the n-th known token that has one; upper-cased or not.
    Existing(Index, bool),
    /// The target's own value, changed by one of [`Case`].
    Own(Case),
}

/// Another spelling of a value.
#[derive(Clone, Copy, Debug)]
enum Case {
    Same,
    Upper,
    Lower,
    Folded,
}

impl Case {
    fn apply(self, v: &str) -> String {
        match self {
            Case::Same => v.to_owned(),
            Case::Upper => v.to_uppercase(),
            Case::Lower => v.to_lowercase(),
            Case::Folded => ledger_core::validate::fold(v),
        }
    }
}

fn src(max: usize) -> impl Strategy<Value = Src> {
    prop_oneof![
        6 => text(max).prop_map(Src::Fresh),
        2 => (any::<Index>(), any::<bool>()).prop_map(|(i, up)| Src::Existing(i, up)),
        1 => proptest::sample::select(vec![Case::Same, Case::Upper, Case::Lower, Case::Folded])
            .prop_map(Src::Own),
    ]
}

#[derive(Clone, Debug)]
enum Exp {
    Absent,
    Null,
    /// Now plus this many milliseconds.
    Rel(i64),
    Abs(Value),
}

fn expires() -> impl Strategy<Value = Exp> {
    prop_oneof![
        3 => Just(Exp::Absent),
        1 => Just(Exp::Null),
        3 => proptest::sample::select(vec![
            -1i64, 0, 1, 999, 1000, 1001, 86_400_000, 3_600_000_000_000,
        ])
        .prop_map(Exp::Rel),
        2 => proptest::sample::select(vec![
            json!(i64::MIN),
            json!(-1),
            json!(0),
            json!(1),
            json!(999),
            json!(MAX_MILLIS - 1),
            json!(MAX_MILLIS),
            json!(MAX_MILLIS + 1),
            json!(i64::MAX),
            json!(u64::MAX),
            json!(253_402_300_799_000i64),
            json!(1e300),
            json!(1.0),
            json!("1"),
        ])
        .prop_map(Exp::Abs),
    ]
}

#[derive(Clone, Debug)]
enum Groups {
    Absent,
    Null,
    /// Fresh ids.
    List(Vec<String>),
    /// `keep` of the target's held ids (all of them at most), then `extra`.
    Held {
        keep: usize,
        reversed: bool,
        extra: Vec<String>,
    },
}

fn group_ids() -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        // A few ids, each a boundary text.
        3 => proptest::collection::vec(text(200), 0..4),
        // Many short ids: 255, 256 or 257 of them, distinct or not.
        2 => (
            proptest::sample::select(vec![255usize, 256, 256, 256, 257, 300]),
            proptest::collection::vec(piece(), 1..3),
            any::<bool>(),
        )
            .prop_map(|(n, pieces, distinct)| {
                let stem = chars_from(&pieces, 3);
                (0..n)
                    .map(|i| if distinct { format!("{stem}{i}") } else { stem.clone() })
                    .collect()
            }),
        // 256 ids of exactly 200 characters: larger than a body may be
        // unless they are ASCII.
        1 => (any::<bool>(), proptest::collection::vec(piece(), 1..3)).prop_map(|(ascii, pieces)| {
            (0..256)
                .map(|i| {
                    let head = format!("{i:03}");
                    let tail = if ascii {
                        "g".repeat(197)
                    } else {
                        chars_from(&pieces, 197)
                    };
                    head + &tail
                })
                .collect()
        }),
    ]
}

/// For assign and unassign, which need a list.
fn some_groups() -> impl Strategy<Value = Groups> {
    prop_oneof![
        1 => Just(Groups::Absent),
        4 => group_ids().prop_map(Groups::List),
        4 => (1usize..300, any::<bool>(), proptest::collection::vec(text(200), 1..3))
            .prop_map(|(keep, reversed, extra)| Groups::Held { keep, reversed, extra }),
    ]
}

fn groups() -> impl Strategy<Value = Groups> {
    prop_oneof![
        2 => Just(Groups::Absent),
        1 => Just(Groups::Null),
        3 => group_ids().prop_map(Groups::List),
        2 => (0usize..300, any::<bool>(), proptest::collection::vec(text(200), 0..3))
            .prop_map(|(keep, reversed, extra)| Groups::Held { keep, reversed, extra }),
    ]
}

#[derive(Clone, Debug)]
enum Op {
    Issue {
        c: Common,
        name: Option<Src>,
        prid: Option<Src>,
        groups: Groups,
        expires: Exp,
        if_exists: Option<&'static str>,
    },
    Update {
        c: Common,
        target: Index,
        name: Opt<Src>,
        expires: Exp,
        groups: Groups,
    },
    Assign {
        c: Common,
        target: Index,
        groups: Groups,
    },
    Unassign {
        c: Common,
        target: Index,
        groups: Groups,
    },
    Rotate {
        c: Common,
        target: Index,
    },
    Register {
        c: Common,
        id: Option<Src>,
        user: Index,
        provider: Src,
        account: Src,
        access: String,
        refresh: Option<String>,
    },
    Refresh {
        c: Common,
        target: Index,
        access: String,
        refresh: Option<String>,
    },
    UpdateAccess {
        c: Common,
        target: Index,
        account: Option<Src>,
        provider: Option<Src>,
    },
    Trash {
        c: Common,
        target: Index,
        reason: Opt<String>,
    },
    Restore {
        c: Common,
        target: Index,
    },
    Revoke {
        c: Common,
        target: Index,
        reason: Opt<String>,
    },
    Purge {
        c: Common,
        target: Index,
        force: Option<bool>,
    },
    /// The same bytes as an earlier command (same `commandId`).
    Retry(Index),
    /// Moves the clock on.
    Tick(i64),
    Restart,
}

/// A command that creates a token.
fn creation() -> impl Strategy<Value = Op> {
    prop_oneof![
        (
            common(),
            proptest::option::of(src(200)),
            proptest::option::of(src(300)),
            groups(),
            expires()
        )
            .prop_map(|(c, name, prid, groups, expires)| Op::Issue {
                c,
                name,
                prid,
                groups,
                expires,
                if_exists: None
            }),
        (
            common(),
            any::<Index>(),
            src(64),
            src(320),
            secret(),
            proptest::option::of(secret())
        )
            .prop_map(
                |(c, user, provider, account, access, refresh)| Op::Register {
                    c,
                    id: None,
                    user,
                    provider,
                    account,
                    access,
                    refresh
                }
            ),
    ]
}

/// A few creations, then anything.
fn ops() -> impl Strategy<Value = Vec<Op>> {
    (
        proptest::collection::vec(creation(), 1..5),
        proptest::collection::vec(op(), 0..36),
    )
        .prop_map(|(mut first, then)| {
            first.extend(then);
            first
        })
}

fn op() -> impl Strategy<Value = Op> {
    let target = any::<Index>;
    prop_oneof![
        5 => (common(), proptest::option::of(src(200)), proptest::option::of(src(300)), groups(), expires(),
              proptest::option::of(proptest::sample::select(vec!["reuse", "fail", "reuse", "fail", "reuse", "fail", "Fail"])))
            .prop_map(|(c, name, prid, groups, expires, if_exists)| Op::Issue { c, name, prid, groups, expires, if_exists }),
        3 => (common(), target(), opt(src(200)), expires(), groups())
            .prop_map(|(c, target, name, expires, groups)| Op::Update { c, target, name, expires, groups }),
        2 => (common(), target(), some_groups()).prop_map(|(c, target, groups)| Op::Assign { c, target, groups }),
        2 => (common(), target(), some_groups()).prop_map(|(c, target, groups)| Op::Unassign { c, target, groups }),
        1 => (common(), target()).prop_map(|(c, target)| Op::Rotate { c, target }),
        4 => (common(), proptest::option::of(src(36)), target(), src(64), src(320), secret(), proptest::option::of(secret()))
            .prop_map(|(c, id, user, provider, account, access, refresh)| Op::Register { c, id, user, provider, account, access, refresh }),
        2 => (common(), target(), secret(), proptest::option::of(secret()))
            .prop_map(|(c, target, access, refresh)| Op::Refresh { c, target, access, refresh }),
        2 => (common(), target(), proptest::option::weighted(0.8, src(320)), proptest::option::weighted(0.6, src(64)))
            .prop_map(|(c, target, account, provider)| Op::UpdateAccess { c, target, account, provider }),
        2 => (common(), target(), opt(text(1000))).prop_map(|(c, target, reason)| Op::Trash { c, target, reason }),
        2 => (common(), target()).prop_map(|(c, target)| Op::Restore { c, target }),
        1 => (common(), target(), opt(text(1000))).prop_map(|(c, target, reason)| Op::Revoke { c, target, reason }),
        1 => (common(), target(), proptest::option::of(any::<bool>())).prop_map(|(c, target, force)| Op::Purge { c, target, force }),
        1 => target().prop_map(Op::Retry),
        1 => proptest::sample::select(vec![1i64, 999, 1000, 86_400_000, 3_600_000_000_000]).prop_map(Op::Tick),
        1 => Just(Op::Restart),
    ]
}

/// Where the clock starts.
#[derive(Clone, Copy, Debug)]
enum Start {
    /// 2026-01-01.
    Now,
    /// Ten seconds before the last instant a timestamp can hold.
    NearEnd,
    /// The Unix epoch.
    Epoch,
    /// A day before it.
    BeforeEpoch,
    /// The first instant a timestamp can hold (year 0).
    YearZero,
}

impl Start {
    fn millis(self) -> i64 {
        match self {
            Start::Now => 1_767_225_600_000,
            Start::NearEnd => MAX_MILLIS - 10_000,
            Start::Epoch => 0,
            Start::BeforeEpoch => -86_400_000,
            Start::YearZero => MIN_MILLIS,
        }
    }
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

const USERS: [&str; 2] = [
    "71c84cd2-91ac-4e6b-a74e-393c87d5f97d",
    "0b3c9a54-5a0e-4f3f-9d51-8a5b2f8f1e2a",
];

/// How a command ended the first time.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Unparsed(ErrorCode),
    Refused(ErrorCode),
    Accepted { token: Uuid, positions: Vec<u64> },
}

struct Run {
    dir: tempfile::TempDir,
    master: MasterKey,
    clock: Arc<AtomicI64>,
    /// `None` only while reopening.
    store: Option<Store>,
    projector: Option<Projector>,
    /// Tokens created, in order.
    tokens: Vec<Uuid>,
    /// The latest view of each token (`None` once purged).
    views: HashMap<Uuid, Option<TokenView>>,
    /// The plaintext secrets last sent for each access token.
    secrets: HashMap<Uuid, (String, Option<String>)>,
    /// Every command sent: its name, bytes and first outcome.
    sent: Vec<(CommandName, Vec<u8>, Outcome)>,
}

static LARGEST_EVENT: AtomicUsize = AtomicUsize::new(0);

fn open(dir: &Path, master: &MasterKey, clock: &Arc<AtomicI64>) -> (Store, Projector) {
    let c = clock.clone();
    let store = Store::open(
        dir,
        StoreConfig {
            master_key: Some(master.clone()),
            snapshot_min_events: Some(0),
            clock: Arc::new(move || {
                Utc.timestamp_millis_opt(c.load(Ordering::SeqCst))
                    .single()
                    .expect("the clock stays in chrono's range")
            }),
            ..StoreConfig::default()
        },
    )
    .unwrap_or_else(|e| panic!("(e) the store does not open: {e}"));
    let projector = Projector::open(store.db()).expect("projector");
    (store, projector)
}

impl Run {
    fn new(start: Start) -> Run {
        let dir = tempfile::tempdir().unwrap();
        let master = MasterKey::generate();
        let clock = Arc::new(AtomicI64::new(start.millis()));
        let (store, projector) = open(dir.path(), &master, &clock);
        Run {
            dir,
            master,
            clock,
            store: Some(store),
            projector: Some(projector),
            tokens: Vec::new(),
            views: HashMap::new(),
            secrets: HashMap::new(),
            sent: Vec::new(),
        }
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("open")
    }

    /// Stops the store cleanly and drops every handle on the data dir.
    fn close(&mut self) {
        self.store().shutdown().unwrap();
        self.projector = None;
        self.store = None;
    }

    fn reopen(&mut self) {
        let (store, projector) = open(self.dir.path(), &self.master, &self.clock);
        self.store = Some(store);
        self.projector = Some(projector);
    }

    fn now_ms(&self) -> i64 {
        self.clock.load(Ordering::SeqCst)
    }

    fn now(&self) -> Timestamp {
        Timestamp::new(Utc.timestamp_millis_opt(self.now_ms()).single().unwrap())
    }

    fn tick(&self, ms: i64) {
        let next = self.now_ms().saturating_add(ms).min(MAX_MILLIS);
        self.clock.store(next, Ordering::SeqCst);
    }

    /// A known token, preferably of `kind` and not purged; a random id when none is known.
    fn pick_of(&self, i: &Index, kind: Option<TokenKind>) -> Uuid {
        let fitting: Vec<Uuid> = self
            .tokens
            .iter()
            .filter(|t| {
                self.view(t)
                    .is_some_and(|v| kind.is_none_or(|k| v.kind == k))
            })
            .copied()
            .collect();
        if !fitting.is_empty() && i.index(8) != 0 {
            *i.get(&fitting)
        } else if self.tokens.is_empty() {
            Uuid::new_v4()
        } else {
            *i.get(&self.tokens)
        }
    }

    fn pick(&self, i: &Index) -> Uuid {
        self.pick_of(i, None)
    }

    /// A token in the trash, mostly.
    fn trashed(&self, i: &Index) -> Uuid {
        let trashed: Vec<Uuid> = self
            .tokens
            .iter()
            .filter(|t| self.view(t).is_some_and(|v| v.trash_item.is_some()))
            .copied()
            .collect();
        if !trashed.is_empty() && i.index(4) != 0 {
            *i.get(&trashed)
        } else {
            self.pick(i)
        }
    }

    fn client(&self, i: &Index) -> Uuid {
        self.pick_of(i, Some(TokenKind::Client))
    }

    fn access(&self, i: &Index) -> Uuid {
        self.pick_of(i, Some(TokenKind::Access))
    }

    fn view(&self, id: &Uuid) -> Option<&TokenView> {
        self.views.get(id).and_then(Option::as_ref)
    }

    /// A key text: fresh, or a value a known token holds.
    fn key(
        &self,
        s: &Src,
        target: Option<Uuid>,
        of: impl Fn(&TokenView) -> Option<String>,
    ) -> String {
        match s {
            Src::Fresh(t) => t.clone(),
            Src::Own(case) => {
                let own = target.and_then(|t| self.view(&t)).and_then(&of);
                case.apply(own.as_deref().unwrap_or("own"))
            }
            Src::Existing(i, upper) => {
                let known: Vec<String> = self
                    .tokens
                    .iter()
                    .filter_map(|t| self.view(t))
                    .filter_map(&of)
                    .collect();
                let v = if known.is_empty() {
                    "none".to_owned()
                } else {
                    i.get(&known).clone()
                };
                if *upper {
                    v.to_uppercase()
                } else {
                    v
                }
            }
        }
    }

    fn groups(&self, g: &Groups, target: Option<Uuid>, body: &mut Map<String, Value>) {
        let list = |ids: Vec<String>| {
            Value::Array(
                ids.into_iter()
                    .map(|id| json!({ "permissionGroupId": id }))
                    .collect(),
            )
        };
        match g {
            Groups::Absent => {}
            Groups::Null => {
                body.insert("permissionGroups".into(), Value::Null);
            }
            Groups::List(ids) => {
                body.insert("permissionGroups".into(), list(ids.clone()));
            }
            Groups::Held {
                keep,
                reversed,
                extra,
            } => {
                let mut held: Vec<String> = target
                    .and_then(|t| self.view(&t))
                    .and_then(|v| v.permission_groups.as_ref())
                    .map(|g| {
                        g.iter()
                            .map(|g| g.permission_group_id.clone())
                            .take(*keep)
                            .collect()
                    })
                    .unwrap_or_default();
                if *reversed {
                    held.reverse();
                }
                body.insert(
                    "permissionGroups".into(),
                    list(held.into_iter().chain(extra.iter().cloned()).collect()),
                );
            }
        }
    }

    fn expires(&self, e: &Exp, body: &mut Map<String, Value>) {
        let v = match e {
            Exp::Absent => return,
            Exp::Null => Value::Null,
            Exp::Rel(d) => json!(self.now_ms().saturating_add(*d)),
            Exp::Abs(v) => v.clone(),
        };
        body.insert("expires".into(), v);
    }

    fn common(&self, c: &Common, target: Option<Uuid>, body: &mut Map<String, Value>) {
        body.insert("commandId".into(), json!(Uuid::new_v4().to_string()));
        let ws = match (&c.ws, target.and_then(|t| self.view(&t))) {
            (Ws::Target, Some(v)) => v.workspace_id.clone(),
            (ws, _) => ws.id().to_owned(),
        };
        body.insert("workspaceId".into(), json!(ws));
        body.insert(
            "actor".into(),
            json!({"agentId": c.agent_id, "agentType": c.agent_type}),
        );
        match &c.correlation {
            Opt::Absent => {}
            Opt::Null => {
                body.insert("correlationId".into(), Value::Null);
            }
            Opt::Some(v) => {
                body.insert("correlationId".into(), json!(v));
            }
        }
        let current = target.and_then(|t| self.view(&t)).map_or(0, |v| v.version);
        let expected = match &c.expected {
            Opt::Absent => return,
            Opt::Null => Value::Null,
            Opt::Some(Expected::Current) => json!(current),
            Opt::Some(Expected::CurrentPlus1) => json!(current + 1),
            Opt::Some(Expected::Value(v)) => v.clone(),
        };
        body.insert("expectedVersion".into(), expected);
    }

    /// The command an op stands for.
    fn command(&self, op: &Op) -> (CommandName, Map<String, Value>, Option<Uuid>) {
        let mut b = Map::new();
        let name_of = |v: &TokenView| v.name.clone();
        let prid_of = |v: &TokenView| v.provided_resource_id.clone();
        let (name, target, c) = match op {
            Op::Issue {
                c,
                name,
                prid,
                groups,
                expires,
                if_exists,
            } => {
                if let Some(n) = name {
                    b.insert("name".into(), json!(self.key(n, None, name_of)));
                }
                if let Some(p) = prid {
                    b.insert(
                        "providedResourceId".into(),
                        json!(self.key(p, None, prid_of)),
                    );
                }
                self.groups(groups, None, &mut b);
                self.expires(expires, &mut b);
                if let Some(i) = if_exists {
                    b.insert("ifExists".into(), json!(i));
                }
                (CommandName::IssueClientToken, None, c)
            }
            Op::Update {
                c,
                target,
                name,
                expires,
                groups,
            } => {
                let t = self.client(target);
                match name {
                    Opt::Absent => {}
                    Opt::Null => {
                        b.insert("name".into(), Value::Null);
                    }
                    Opt::Some(n) => {
                        b.insert("name".into(), json!(self.key(n, Some(t), name_of)));
                    }
                }
                self.expires(expires, &mut b);
                self.groups(groups, Some(t), &mut b);
                (CommandName::UpdateClientToken, Some(t), c)
            }
            Op::Assign { c, target, groups } => {
                let t = self.client(target);
                self.groups(groups, Some(t), &mut b);
                (CommandName::AssignPermissionGroups, Some(t), c)
            }
            Op::Unassign { c, target, groups } => {
                let t = self.client(target);
                self.groups(groups, Some(t), &mut b);
                (CommandName::UnassignPermissionGroups, Some(t), c)
            }
            Op::Rotate { c, target } => {
                (CommandName::RotateClientToken, Some(self.client(target)), c)
            }
            Op::Register {
                c,
                id,
                user,
                provider,
                account,
                access,
                refresh,
            } => {
                let mut token = None;
                match id {
                    None => {}
                    Some(Src::Existing(i, upper)) => {
                        let t = self.pick(i);
                        token = Some(t);
                        let s = t.to_string();
                        b.insert(
                            "id".into(),
                            json!(if *upper { s.to_uppercase() } else { s }),
                        );
                    }
                    Some(Src::Fresh(_) | Src::Own(_)) => {
                        b.insert("id".into(), json!(Uuid::new_v4().to_string()));
                    }
                }
                b.insert("user".into(), json!({"id": user.get(&USERS)}));
                b.insert(
                    "provider".into(),
                    json!(self.key(provider, token, |v| v.provider.clone())),
                );
                b.insert(
                    "accountName".into(),
                    json!(self.key(account, token, |v| v.account_name.clone())),
                );
                b.insert("accessToken".into(), json!(access));
                if let Some(r) = refresh {
                    b.insert("refreshToken".into(), json!(r));
                }
                (CommandName::RegisterAccessToken, token, c)
            }
            Op::Refresh {
                c,
                target,
                access,
                refresh,
            } => {
                let t = self.access(target);
                b.insert("accessToken".into(), json!(access));
                if let Some(r) = refresh {
                    b.insert("refreshToken".into(), json!(r));
                }
                (CommandName::RefreshAccessToken, Some(t), c)
            }
            Op::UpdateAccess {
                c,
                target,
                account,
                provider,
            } => {
                let t = self.access(target);
                if let Some(a) = account {
                    b.insert(
                        "accountName".into(),
                        json!(self.key(a, Some(t), |v| v.account_name.clone())),
                    );
                }
                if let Some(p) = provider {
                    b.insert(
                        "provider".into(),
                        json!(self.key(p, Some(t), |v| v.provider.clone())),
                    );
                }
                (CommandName::UpdateAccessToken, Some(t), c)
            }
            Op::Trash { c, target, reason } | Op::Revoke { c, target, reason } => {
                let t = self.pick(target);
                match reason {
                    Opt::Absent => {}
                    Opt::Null => {
                        b.insert("reason".into(), Value::Null);
                    }
                    Opt::Some(r) => {
                        b.insert("reason".into(), json!(r));
                    }
                }
                let name = if matches!(op, Op::Trash { .. }) {
                    CommandName::TrashToken
                } else {
                    CommandName::RevokeToken
                };
                (name, Some(t), c)
            }
            Op::Restore { c, target } => (CommandName::RestoreToken, Some(self.trashed(target)), c),
            Op::Purge { c, target, force } => {
                let t = self.trashed(target);
                if let Some(f) = force {
                    b.insert("force".into(), json!(f));
                }
                (CommandName::PurgeToken, Some(t), c)
            }
            Op::Retry(_) | Op::Tick(_) | Op::Restart => unreachable!("not a command"),
        };
        if let Some(t) = target.filter(|_| name != CommandName::RegisterAccessToken) {
            b.insert("tokenId".into(), json!(t.to_string()));
        }
        self.common(c, target, &mut b);
        (name, b, target)
    }

    fn step(&mut self, op: &Op) {
        match op {
            Op::Restart => return self.restart(),
            Op::Tick(ms) => return self.tick(*ms),
            Op::Retry(i) => return self.retry(i),
            _ => {}
        }
        self.tick(1);
        let (name, body, _) = self.command(op);
        let bytes = serde_json::to_vec(&Value::Object(body)).unwrap();
        let outcome = self.execute(name, &bytes, None);
        self.sent.push((name, bytes, outcome));
    }

    /// Parses and executes; checks what a refusal and an acceptance append.
    fn execute(&mut self, name: CommandName, bytes: &[u8], first: Option<&Outcome>) -> Outcome {
        let before = self.store().head_position();
        let text = String::from_utf8_lossy(bytes);
        let parsed = match parse(name, bytes) {
            Ok(p) => p,
            Err(r) => {
                assert_eq!(r.code, ErrorCode::InvalidInput, "{name} {text}: {r:?}");
                if std::env::var_os("EVENT_BOUNDS_TRACE").is_some() {
                    eprintln!("unparsed {name}: {:?} {}", r.field, r.message);
                }
                return Outcome::Unparsed(r.code);
            }
        };
        let secrets = match &parsed.command {
            ledger_core::Command::RegisterAccessToken {
                access_token,
                refresh_token,
                ..
            }
            | ledger_core::Command::RefreshAccessToken {
                access_token,
                refresh_token,
                ..
            } => Some((
                access_token.expose().to_owned(),
                refresh_token.as_ref().map(|s| s.expose().to_owned()),
            )),
            _ => None,
        };
        match self.store().execute_blocking(parsed) {
            Err(r) => {
                assert_eq!(
                    self.store().head_position(),
                    before,
                    "a refusal appended: {name} {r:?}"
                );
                assert!(
                    !matches!(r.code, ErrorCode::Internal | ErrorCode::Unavailable),
                    "{name} was refused with {:?}: {} (field {:?})\nbody: {text}",
                    r.code,
                    r.message,
                    r.field
                );
                Outcome::Refused(r.code)
            }
            Ok(c) => {
                let expect: Vec<u64> = (before + 1..=before + c.positions.len() as u64).collect();
                if c.replayed {
                    assert!(first.is_some(), "a first run answered as a replay");
                    assert_eq!(self.store().head_position(), before, "a replay appended");
                } else {
                    assert_eq!(c.positions, expect, "positions of {name}");
                    assert_eq!(
                        self.store().head_position(),
                        before + c.positions.len() as u64
                    );
                }
                if !c.replayed {
                    for &p in &c.positions {
                        self.check_event(p);
                    }
                    if !self.tokens.contains(&c.token_id) {
                        self.tokens.push(c.token_id);
                    }
                    if !c.positions.is_empty() {
                        self.views.insert(c.token_id, c.view.clone());
                        if let Some((access, refresh)) = secrets {
                            let kept = self
                                .secrets
                                .get(&c.token_id)
                                .and_then(|(_, r)| r.clone())
                                .filter(|_| name == CommandName::RefreshAccessToken);
                            self.secrets.insert(c.token_id, (access, refresh.or(kept)));
                        }
                    }
                }
                Outcome::Accepted {
                    token: c.token_id,
                    positions: c.positions,
                }
            }
        }
    }

    /// The same bytes again: the first outcome again, nothing appended.
    fn retry(&mut self, i: &Index) {
        if self.sent.is_empty() {
            return;
        }
        let (name, bytes, first) = i.get(&self.sent).clone();
        if let Outcome::Unparsed(_) = first {
            return;
        }
        let before = self.store().head_position();
        let again = self.execute(name, &bytes, Some(&first));
        assert_eq!(self.store().head_position(), before, "a retry appended");
        let text = String::from_utf8_lossy(&bytes);
        match (&first, &again) {
            (Outcome::Refused(a), Outcome::Refused(b)) => {
                assert_eq!(
                    a, b,
                    "a retry of a refused {name} answers otherwise: {text}"
                )
            }
            (Outcome::Accepted { .. }, _) => assert_eq!(
                first, again,
                "a retry of an accepted {name} answers otherwise: {text}"
            ),
            _ => panic!("a retry of {name} answers {again:?}, first {first:?}: {text}"),
        }
    }

    /// (a) and (b) for the event at `position`.
    fn check_event(&self, position: u64) {
        let stored = self
            .store()
            .event(position)
            .unwrap()
            .unwrap_or_else(|| panic!("no event at {position}"));
        let shown = || String::from_utf8_lossy(&stored.bytes).into_owned();
        LARGEST_EVENT.fetch_max(stored.bytes.len(), Ordering::Relaxed);
        // (a) decode, re-encode to the same canonical bytes, same hash.
        let env = Envelope::from_json(&stored.bytes)
            .unwrap_or_else(|e| panic!("(a) event {position} does not decode: {e}\n{}", shown()));
        assert!(
            env.canonical_bytes() == stored.bytes,
            "(a) event {position} re-encodes to other bytes:\n{}\n{}",
            shown(),
            String::from_utf8_lossy(&env.canonical_bytes())
        );
        assert_eq!(
            hash_hex(&stored.bytes),
            stored.hash,
            "(a) hash of {position}"
        );
        let prev = match position {
            1 => GENESIS_HASH.to_owned(),
            p => self.store().event(p - 1).unwrap().unwrap().hash,
        };
        stored
            .check(position, &prev)
            .unwrap_or_else(|e| panic!("(a) event {position} does not check: {e}"));
        // The published form: the splice equals the full re-encode and decodes.
        let published = stored
            .published_bytes()
            .unwrap_or_else(|e| panic!("(a) event {position} does not publish: {e}"));
        let mut with_hash = env.clone();
        with_hash.hash.clone_from(&stored.hash);
        assert!(
            published == with_hash.to_json_bytes(),
            "(a) published bytes of {position} differ from the envelope's"
        );
        let again = Envelope::from_json(&published)
            .unwrap_or_else(|e| panic!("(a) published {position} does not decode: {e}"));
        assert_eq!(
            again, with_hash,
            "(a) published {position} decodes otherwise"
        );
        // (b) the catalogue, on a Value and on bytes, fast and slow.
        let cat = Catalogue::shared();
        let value: Value = serde_json::from_slice(&published).unwrap();
        if let Err(v) = cat.validate_envelope(&value) {
            panic!(
                "(b) event {position} breaks the schema: {v:#?}\n{}",
                shown()
            );
        }
        if let Err(v) = cat.validate_published(&published) {
            panic!(
                "(b) published event {position} fails validate_published: {v:#?}\n{}",
                shown()
            );
        }
        if let Some(false) = cat.check_fast_canonical(&stored.bytes, &stored.hash) {
            panic!(
                "(b) check_fast_canonical refuses event {position}\n{}",
                shown()
            );
        }
    }

    /// (c): the audit verifier, schemas on, over the whole log.
    fn audit(&self) {
        let reader = LogReader::from_db(self.store().db()).unwrap();
        let report = ledger_audit::verify(
            reader.all_records(),
            Plan::whole_log(),
            &VerifyOptions {
                schema: true,
                threads: 0,
            },
            &mut NoObserver,
            &mut |_| {},
        )
        .unwrap_or_else(|e| panic!("(c) the audit fails: {e}"));
        if let Some(f) = &report.finding {
            let bytes = self
                .store()
                .event(f.position)
                .ok()
                .flatten()
                .map(|e| String::from_utf8_lossy(&e.bytes).into_owned())
                .unwrap_or_default();
            panic!("(c) audit finding: {f}\nevent: {bytes}");
        }
        assert_eq!(report.summary.head_position, self.store().head_position());
    }

    /// (d): views serialize, equal a rebuild, answer lookups; reveals give
    /// back the secrets and strings that verify.
    fn check_views(&mut self) {
        let store = self.store.as_ref().expect("open");
        self.projector
            .as_mut()
            .expect("open")
            .catch_up(store)
            .unwrap();
        let dump = self.projector.as_ref().expect("open").dump().unwrap();
        let scratch = self.store().db().open_tree("views.bounds-check").unwrap();
        let rebuilt = Projector::rebuild(self.store(), scratch).unwrap();
        assert!(
            dump == rebuilt.dump().unwrap(),
            "(d) rebuild != incremental views"
        );
        drop(rebuilt);
        self.store().db().drop_tree("views.bounds-check").unwrap();
        let now = self.now();
        let mut seen = HashSet::new();
        for (key, value) in &dump {
            if key.first() != Some(&b'V') {
                continue;
            }
            let view: TokenView = serde_json::from_slice(value).unwrap_or_else(|e| {
                panic!(
                    "(d) a stored view does not decode: {e}\n{}",
                    String::from_utf8_lossy(value)
                )
            });
            assert!(
                serde_json::to_vec(&view).unwrap() == *value,
                "(d) a view re-serializes otherwise"
            );
            seen.insert(view.token_id());
        }
        let views = self.projector.as_ref().expect("open").views();
        for id in self.tokens.clone() {
            let expected = self.view(&id).cloned();
            let got = views
                .get(
                    expected
                        .as_ref()
                        .map_or("acme", |v| v.workspace_id.as_str()),
                    Lookup::Id(id),
                    now,
                )
                .unwrap();
            let Some(expected) = expected else {
                assert!(got.is_none(), "(d) a purged token has a view");
                continue;
            };
            let ws = expected.workspace_id.clone();
            let got = got.unwrap_or_else(|| panic!("(d) no view of {id}"));
            assert_eq!(
                got.clone().with_expired(now),
                expected.clone().with_expired(now),
                "(d) projector view != command reply view"
            );
            assert!(seen.contains(&id));
            if let Some(n) = &expected.name {
                let by = views.get(&ws, Lookup::Name(n.clone()), now).unwrap();
                assert_eq!(
                    by.map(|v| v.token_id()),
                    Some(id),
                    "(d) lookup by name {n:?}"
                );
            }
            if let Some(p) = &expected.provided_resource_id {
                let by = views.get(&ws, Lookup::ProvidedId(p.clone()), now).unwrap();
                assert_eq!(
                    by.map(|v| v.token_id()),
                    Some(id),
                    "(d) lookup by providedResourceId {p:?}"
                );
            }
            if let (Some(user), Some(provider)) = (&expected.user, &expected.provider) {
                let filter = ListFilter {
                    user_id: Some(user.id),
                    provider: Some(provider.clone()),
                    trashed: TrashedFilter::Include,
                    limit: 1000,
                    ..ListFilter::default()
                };
                let page = views
                    .list(&ws, &filter, now)
                    .unwrap_or_else(|e| panic!("(d) list by provider {provider:?}: {e}"));
                assert!(
                    page.items.iter().any(|v| v.token_id() == id),
                    "(d) list by user and provider {provider:?} misses {id}"
                );
            }
            if !expected.is_live() {
                continue;
            }
            let revealed = self
                .store()
                .reveal(&ws, &id)
                .unwrap_or_else(|r| panic!("(d) reveal of live token {id}: {r:?}"));
            match expected.kind {
                TokenKind::Access => {
                    let (access, refresh) = self.secrets.get(&id).cloned().unwrap();
                    assert!(
                        revealed.access_token.as_deref() == Some(access.as_str()),
                        "(d) revealed accessToken differs from the one sent"
                    );
                    assert!(
                        revealed.refresh_token == refresh,
                        "(d) revealed refreshToken differs from the one sent"
                    );
                }
                TokenKind::Client => {
                    let s = revealed
                        .token_str
                        .unwrap_or_else(|| panic!("(d) no tokenStr for {id}"));
                    let verifier = Verifier::new(self.store().clone());
                    let at = Utc.timestamp_millis_opt(self.now_ms()).unwrap();
                    let answer = verifier.verify(&s, at);
                    if expected.is_expired_at(now) {
                        assert!(answer.is_err(), "(d) an expired token verifies");
                    } else {
                        let active = answer.unwrap_or_else(|r| {
                            panic!("(d) the string of live token {id} does not verify: {r:?} (view {expected:?}, now {now})")
                        });
                        assert_eq!(active.token_id, id);
                    }
                }
            }
        }
    }

    /// The audit tools downstream of the log: an export of the whole log and
    /// of one workspace verifies on its own; a replay of it gives the views;
    /// a token's history has one entry per version, from the data dir and
    /// from the export; a view as of each version exists; the local
    /// verifier's fold of a client token's events equals its view.
    fn check_tools(&mut self) {
        let head = self.store().head_position();
        if head == 0 {
            return;
        }
        let options = VerifyOptions {
            schema: true,
            threads: 0,
        };
        let reader = LogReader::from_db(self.store().db()).unwrap();
        let out = self.dir.path().join("bounds-export.jsonl");
        let outcome = ledger_audit::export::export(
            self.dir.path(),
            &reader,
            &ExportRequest {
                from: 1,
                to: None,
                workspace: None,
            },
            &out,
            &options,
            &mut |_| {},
        )
        .unwrap_or_else(|e| panic!("(c) export fails: {e}"))
        .unwrap_or_else(|f| panic!("(c) export finding: {f}"));
        assert_eq!(outcome.events, head);
        let verified = ledger_audit::export::verify_export(&out, &[], &options, &mut |_| {})
            .unwrap_or_else(|e| panic!("(c) the export does not verify: {e}"));
        if let Some(f) = verified.report.finding {
            panic!("(c) export verification finding: {f}");
        }
        // One workspace's export, when it has events.
        let ws_out = self.dir.path().join("bounds-export-acme.jsonl");
        match ledger_audit::export::export(
            self.dir.path(),
            &reader,
            &ExportRequest {
                from: 1,
                to: None,
                workspace: Some("acme".into()),
            },
            &ws_out,
            &options,
            &mut |_| {},
        ) {
            Ok(Ok(_)) => {
                let v = ledger_audit::export::verify_export(&ws_out, &[], &options, &mut |_| {})
                    .unwrap_or_else(|e| panic!("(c) the acme export does not verify: {e}"));
                if let Some(f) = v.report.finding {
                    panic!("(c) acme export verification finding: {f}");
                }
            }
            Ok(Err(f)) => panic!("(c) acme export finding: {f}"),
            Err(_) => {} // no event of that workspace
        }
        // A replay of the export at its head gives the views.
        let snapshots = ledger_audit::replay::replay_from(
            &ReplaySource::Export(&out),
            &[Point::Position(head)],
            None,
            &options,
            &mut |_| {},
        )
        .unwrap_or_else(|e| panic!("(c) replay fails: {e}"))
        .unwrap_or_else(|f| panic!("(c) replay finding: {f}"));
        let snapshot = &snapshots[0];
        for id in &self.tokens {
            let expected = self.view(id).cloned().map(|mut v| {
                v.expired = None;
                v
            });
            let got = snapshot.tokens.get(id).cloned().map(|mut v| {
                v.expired = None;
                v
            });
            assert_eq!(got, expected, "(c) replayed view of {id}");
        }
        for id in self.tokens.clone() {
            let version = self.store().token_version(&id);
            if version == 0 {
                continue; // another run's id
            }
            for source in [ReplaySource::DataDir(&reader), ReplaySource::Export(&out)] {
                let history =
                    ledger_audit::history::history_from(&source, id, &options, &mut |_| {})
                        .unwrap_or_else(|e| panic!("(c) history of {id} fails: {e}"))
                        .unwrap_or_else(|f| panic!("(c) history of {id}: finding {f}"));
                assert_eq!(history.entries.len() as u64, version, "(c) history of {id}");
                serde_json::to_vec(&history).expect("a history serializes");
            }
            let events = self.store().token_events(&id, None).unwrap();
            let purged = self.view(&id).is_none();
            for v in 1..=version {
                let at = Projector::get_as_of(self.store(), id, AsOf::Version(v))
                    .unwrap_or_else(|e| panic!("(d) {id} as of version {v}: {e}"));
                assert_eq!(
                    at.is_some(),
                    !(purged && v == version),
                    "(d) {id} as of version {v}"
                );
                let t = events[(v - 1) as usize].occurred_at;
                Projector::get_as_of(self.store(), id, AsOf::Time(t))
                    .unwrap_or_else(|e| panic!("(d) {id} as of {t}: {e}"));
            }
            if let Some(view) = self.view(&id).filter(|v| v.kind == TokenKind::Client) {
                let mut status = TokenStatus::from_issued(&events[0]).expect("issued first");
                for e in &events[1..] {
                    assert_eq!(status.apply(e), Applied::Applied);
                }
                assert_eq!(
                    Some(status),
                    TokenStatus::from_view(view),
                    "(d) the local verifier's status of {id}"
                );
            }
        }
        std::fs::remove_file(&out).unwrap();
        let _ = std::fs::remove_file(&ws_out);
    }

    /// (e): a clean stop and a reopen from the snapshot it wrote.
    fn restart(&mut self) {
        self.check_views();
        self.audit();
        let head = self.store().head().unwrap();
        self.close();
        self.reopen();
        assert_eq!(self.store().head().unwrap(), head, "(e) head after reopen");
        assert_eq!(
            self.store().opened().snapshot,
            head.position,
            "(e) the reopen did not start from the snapshot"
        );
        self.check_views();
        self.audit();
    }

    fn finish(mut self) {
        self.check_tools();
        if std::env::var_os("EVENT_BOUNDS_TRACE").is_some() {
            let mut tally: HashMap<String, usize> = HashMap::new();
            for (name, _, outcome) in &self.sent {
                let what = match outcome {
                    Outcome::Unparsed(_) => "unparsed".to_owned(),
                    Outcome::Refused(code) => format!("refused {}", code.as_str()),
                    Outcome::Accepted { .. } => "accepted".to_owned(),
                };
                *tally.entry(format!("{name} {what}")).or_default() += 1;
            }
            eprintln!(
                "case: {} events, largest {} bytes: {tally:?}",
                self.store().head_position(),
                LARGEST_EVENT.load(Ordering::Relaxed)
            );
        }
        self.restart();
        // And once more without the snapshot: a full replay.
        let head = self.store().head().unwrap();
        self.close();
        let dir = self.dir.path().to_owned();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.contains("snapshot") {
                if path.is_dir() {
                    std::fs::remove_dir_all(&path).unwrap();
                } else {
                    std::fs::remove_file(&path).unwrap();
                }
            }
        }
        self.reopen();
        assert_eq!(
            self.store().head().unwrap(),
            head,
            "(e) head after a full replay"
        );
        assert_eq!(self.store().opened().snapshot, 0, "(e) a snapshot was left");
        self.check_views();
        self.close();
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 32,
        max_shrink_iters: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn boundary_values_survive_the_whole_write_path(
        start in prop_oneof![
            8 => Just(Start::Now),
            1 => Just(Start::NearEnd),
            1 => Just(Start::Epoch),
            1 => Just(Start::BeforeEpoch),
            1 => Just(Start::YearZero),
        ],
        ops in ops(),
    ) {
        let mut run = Run::new(start);
        for op in &ops {
            run.step(op);
        }
        run.finish();
        let largest = LARGEST_EVENT.load(Ordering::Relaxed);
        prop_assert!(largest < 1024 * 1024, "an event of {} bytes", largest);
    }
}

/// The property above holds only if its generator reaches acceptance: a
/// generator that produced refusals alone would pass it without checking
/// anything downstream. Every command type must be accepted in a few cases.
#[test]
fn the_generator_gets_every_command_accepted() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = ops();
    let mut accepted = std::collections::BTreeSet::new();
    for _ in 0..32 {
        let ops = strategy.new_tree(&mut runner).unwrap().current();
        let mut run = Run::new(Start::Now);
        for op in &ops {
            run.step(op);
        }
        for (name, _, outcome) in &run.sent {
            if matches!(outcome, Outcome::Accepted { .. }) {
                accepted.insert(name.as_str());
            }
        }
        run.close();
    }
    let missing: Vec<&str> = CommandName::ALL
        .iter()
        .map(|n| n.as_str())
        .filter(|n| !accepted.contains(n))
        .collect();
    assert!(missing.is_empty(), "never accepted: {missing:?}");
}
