//! The event catalogue of tokenledger: the JSON Schemas in `events/`, embedded
//! in the binary and compiled once.
//!
//! `events/` at the repository root is the published contract for every event
//! the ledger emits: `envelope.schema.json` for the envelope, one
//! `<type>.schema.json` per event type for its `data`, shared shapes in
//! `defs.schema.json`, and golden examples under `events/examples/`. This crate
//! embeds those files with `include_str!` and checks JSON against them:
//!
//! ```
//! use ledger_catalogue::Catalogue;
//!
//! let catalogue = Catalogue::shared();
//! let json = serde_json::json!({ "type": "token_restored" });
//! let violations = catalogue.validate_envelope(&json).unwrap_err();
//! assert!(violations.iter().any(|v| v.path == "/actor"));
//! ```
//!
//! **Architecture invariant**: schemas resolve only against each other. The
//! validators are built offline, and a `$ref` to anything outside the
//! catalogue fails when the catalogue is loaded, not at validation time.
//!
//! Messages never echo the offending value (the validator's masked form), so a
//! violation can be logged even when a misbehaving producer put a plaintext
//! secret where a sealed one belongs.

mod tape;

use jsonschema::error::ValidationErrorKind;
use jsonschema::{Registry, ValidationError, Validator};
use ledger_core::event::SCHEMA_VERSION;
use ledger_core::{Envelope, EventType};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;
use tape::{Tape, TapeJson, TapeNode};

/// Base URI of the catalogue: every schema's `$id` is this plus its file name.
///
/// The `.invalid` top-level domain (RFC 2606) can never resolve, which makes it
/// plain that the identifiers are names, not places to fetch from.
pub const BASE_URI: &str = "https://schemas.tokenledger.invalid/events/";

/// `events/envelope.schema.json`: the envelope, with `data` only required to be an object.
pub const ENVELOPE_SCHEMA: &str = include_str!("../../../events/envelope.schema.json");

/// `events/defs.schema.json`: shapes shared by the envelope and the data schemas.
pub const DEFS_SCHEMA: &str = include_str!("../../../events/defs.schema.json");

macro_rules! data_schemas {
    ($($name:literal,)*) => {
        /// Every event type's `data` schema for the current [`SCHEMA_VERSION`], as
        /// `(type name, schema text)`, in [`EventType::ALL`] order.
        pub const EVENT_TYPES: &[(&str, &str)] = &[$(
            ($name, include_str!(concat!("../../../events/", $name, ".schema.json"))),
        )*];
    };
}

data_schemas! {
    "client_token_issued",
    "client_token_updated",
    "permission_groups_assigned",
    "permission_groups_unassigned",
    "client_token_rotated",
    "access_token_registered",
    "access_token_refreshed",
    "access_token_updated",
    "token_trashed",
    "token_restored",
    "token_revoked",
    "token_purged",
}

/// One way in which a JSON value breaks the catalogue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaViolation {
    /// JSON Pointer (RFC 6901) into the envelope, e.g. `/data/jwt/kid`; empty for the root.
    ///
    /// For a missing required property and for a property that is not allowed,
    /// the pointer names that property itself rather than the object holding it.
    pub path: String,
    /// What is wrong, without the offending value.
    pub message: String,
}

impl fmt::Display for SchemaViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        write!(f, "{path}: {}", self.message)
    }
}

/// The compiled catalogue: the envelope validator and one `data` validator per
/// `(event type, schemaVersion)`.
pub struct Catalogue {
    envelope: Validator,
    data: HashMap<(EventType, u32), Validator>,
    /// The same schemas, compiled for the borrowed representation of
    /// [`Catalogue::validate_published`]'s fast path.
    fast_envelope: Validator<TapeJson>,
    fast_data: HashMap<(EventType, u32), Validator<TapeJson>>,
}

impl fmt::Debug for Catalogue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Catalogue")
            .field("data_schemas", &self.data.len())
            .finish_non_exhaustive()
    }
}

impl Catalogue {
    /// Compiles every embedded schema.
    ///
    /// Compiling takes about 3 ms in a release build (60 ms in a debug one) and
    /// a validation about 12 µs per envelope: build the catalogue once and keep
    /// it, or use [`Catalogue::shared`].
    ///
    /// # Panics
    ///
    /// When an embedded schema is not valid JSON, not a valid draft 2020-12
    /// schema, refers outside the catalogue, or when [`EVENT_TYPES`] and
    /// [`EventType::ALL`] disagree: all of these are build defects, which this
    /// crate's tests catch.
    pub fn load() -> Catalogue {
        let defs = parse("defs.schema.json", DEFS_SCHEMA);
        let registry = Registry::new()
            .add(format!("{BASE_URI}defs.schema.json"), defs)
            .and_then(|builder| builder.prepare())
            .unwrap_or_else(|e| panic!("events/defs.schema.json: {e}"));
        let compile = |file: &str, text: &str| -> Validator {
            let schema = parse(file, text);
            jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .with_registry(&registry)
                .offline()
                .build(&schema)
                .unwrap_or_else(|e| panic!("events/{file}: {e}"))
        };
        let compile_fast = |file: &str, text: &str| -> Validator<TapeJson> {
            let schema = parse(file, text);
            jsonschema::options_for::<TapeJson>()
                .with_draft(jsonschema::Draft::Draft202012)
                .with_registry(&registry)
                .offline()
                .build(&schema)
                .unwrap_or_else(|e| panic!("events/{file}: {e}"))
        };
        let envelope = compile("envelope.schema.json", ENVELOPE_SCHEMA);
        let fast_envelope = compile_fast("envelope.schema.json", ENVELOPE_SCHEMA);
        assert_eq!(
            EVENT_TYPES.len(),
            EventType::ALL.len(),
            "one data schema per event type"
        );
        let mut data = HashMap::with_capacity(EVENT_TYPES.len());
        let mut fast_data = HashMap::with_capacity(EVENT_TYPES.len());
        for (name, text) in EVENT_TYPES {
            let ty = EventType::parse(name)
                .unwrap_or_else(|| panic!("events/{name}.schema.json: not an event type"));
            let file = format!("{name}.schema.json");
            let previous = data.insert((ty, SCHEMA_VERSION), compile(&file, text));
            assert!(previous.is_none(), "{name} listed twice");
            fast_data.insert((ty, SCHEMA_VERSION), compile_fast(&file, text));
        }
        Catalogue {
            envelope,
            data,
            fast_envelope,
            fast_data,
        }
    }

    /// A process-wide catalogue, compiled on first use.
    pub fn shared() -> &'static Catalogue {
        static SHARED: OnceLock<Catalogue> = OnceLock::new();
        SHARED.get_or_init(Catalogue::load)
    }

    /// Checks a published envelope: the envelope schema first, then `data`
    /// against the schema of its `type` and `schemaVersion`.
    ///
    /// Every violation found is returned, envelope ones first. `data` is checked
    /// whenever `type` names a known event type and `schemaVersion` a known
    /// version, even if the envelope itself has other faults.
    pub fn validate_envelope(&self, json: &Value) -> Result<(), Vec<SchemaViolation>> {
        let mut violations = Vec::new();
        collect(&self.envelope, json, "", &mut violations);
        if let Some((validator, data)) = self.data_validator(json) {
            collect(validator, data, "/data", &mut violations);
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(violations)
        }
    }

    /// Checks the bytes of a published envelope: the same check as
    /// [`Catalogue::validate_envelope`] on those bytes parsed as JSON, with
    /// the same violations.
    ///
    /// Bytes in the form the ledger writes (compact, every object's keys in
    /// increasing order, no escapes, integers only) are checked without
    /// building a `serde_json::Value`: the schemas run on a flat token list
    /// that borrows the bytes, and parsing it costs a fraction of a `Value`. Anything else, and every envelope
    /// that fails, goes through the `Value` path, which gathers the
    /// violations; bytes that are not JSON are one violation at the root.
    pub fn validate_published(&self, bytes: &[u8]) -> Result<(), Vec<SchemaViolation>> {
        match self.check_fast(bytes) {
            Some(true) => Ok(()),
            Some(false) => match self.validate_bytes(bytes) {
                Err(violations) => Err(violations),
                Ok(()) => Err(vec![disagreement()]),
            },
            None => self.validate_bytes(bytes),
        }
    }

    /// The fast path of [`Catalogue::validate_published`] alone: whether
    /// the envelope in `bytes` passes every schema, or `None` when the bytes
    /// are not in the form the ledger writes (whitespace, keys out of order
    /// or repeated, escapes, fractions, not JSON) and only a
    /// `serde_json::Value` can tell.
    ///
    /// Callers that get `Some(false)` find the violations with
    /// [`Catalogue::validate_envelope`]; should that pass, the two paths
    /// disagree, which is a defect to report ([`disagreement`]), never a pass.
    pub fn check_fast(&self, bytes: &[u8]) -> Option<bool> {
        let tape = Tape::parse(bytes, None)?;
        Some(self.fast_is_valid(tape.root()))
    }

    /// [`Catalogue::check_fast`] on the published form of an envelope's
    /// canonical bytes (the store's record): the bytes plus a `hash` member
    /// holding `hash_hex`, without building that form. `None` also when the
    /// bytes hold a `hash` of their own.
    pub fn check_fast_canonical(&self, canonical: &[u8], hash_hex: &str) -> Option<bool> {
        let tape = Tape::parse(canonical, Some(("hash", hash_hex)))?;
        Some(self.fast_is_valid(tape.root()))
    }

    fn validate_bytes(&self, bytes: &[u8]) -> Result<(), Vec<SchemaViolation>> {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(json) => self.validate_envelope(&json),
            Err(e) => Err(vec![SchemaViolation {
                path: String::new(),
                message: format!("not JSON: {e}"),
            }]),
        }
    }

    fn fast_is_valid(&self, root: TapeNode<'_>) -> bool {
        if !self.fast_envelope.is_valid(root) {
            return false;
        }
        // The envelope schema requires `type` to name an event type and
        // `schemaVersion` to be a version; `data` is then checked as
        // `validate_envelope` does.
        let validator = (|| {
            let ty = EventType::parse(root.member("type")?.as_str_value()?)?;
            let version = u32::try_from(root.member("schemaVersion")?.as_u64_value()?).ok()?;
            Some((self.fast_data.get(&(ty, version))?, root.member("data")?))
        })();
        match validator {
            Some((validator, data)) => validator.is_valid(data),
            // The envelope schema admits no envelope without them: a
            // disagreement, which the `Value` path reports.
            None => false,
        }
    }

    /// Checks an envelope as the core built it, in its published form.
    pub fn validate_event(&self, envelope: &Envelope) -> Result<(), Vec<SchemaViolation>> {
        self.validate_envelope(&envelope.to_json_value())
    }

    /// Checks `data` alone against the schema of `ty` at the current [`SCHEMA_VERSION`].
    ///
    /// Paths are relative to `data` (the root is the empty pointer).
    pub fn validate_data(&self, ty: EventType, data: &Value) -> Result<(), Vec<SchemaViolation>> {
        let validator = self
            .data
            .get(&(ty, SCHEMA_VERSION))
            .expect("load() compiles a schema for every event type");
        let mut violations = Vec::new();
        collect(validator, data, "", &mut violations);
        if violations.is_empty() {
            Ok(())
        } else {
            Err(violations)
        }
    }

    /// The `data` schema text of an event type, as published in `events/`.
    pub fn data_schema(ty: EventType) -> &'static str {
        EVENT_TYPES
            .iter()
            .find(|(name, _)| *name == ty.as_str())
            .map(|(_, text)| *text)
            .expect("EVENT_TYPES lists every event type")
    }

    fn data_validator<'a, 'v>(&'a self, json: &'v Value) -> Option<(&'a Validator, &'v Value)> {
        let ty = EventType::parse(json.get("type")?.as_str()?)?;
        let version = u32::try_from(json.get("schemaVersion")?.as_u64()?).ok()?;
        let validator = self.data.get(&(ty, version))?;
        Some((validator, json.get("data")?))
    }
}

/// The violation to report when [`Catalogue::check_fast`] fails an envelope
/// that [`Catalogue::validate_envelope`] passes.
pub fn disagreement() -> SchemaViolation {
    SchemaViolation {
        path: String::new(),
        message: "the envelope fails the catalogue's schemas on the fast path only".into(),
    }
}

fn parse(file: &str, text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("events/{file}: {e}"))
}

fn collect(validator: &Validator, instance: &Value, prefix: &str, out: &mut Vec<SchemaViolation>) {
    // `is_valid` short-circuits and builds no errors: about twice as fast on
    // the valid events an audit mostly sees; the errors are gathered only
    // when there is something to report.
    if validator.is_valid(instance) {
        return;
    }
    for error in validator.iter_errors(instance) {
        out.extend(violations(&error, prefix));
    }
}

/// Turns one validator error into violations, pointing at the property itself
/// for `required` and `additionalProperties`.
fn violations(error: &ValidationError<'_>, prefix: &str) -> Vec<SchemaViolation> {
    let at = format!("{prefix}{}", error.instance_path().as_str());
    match error.kind() {
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            vec![SchemaViolation {
                path: format!("{at}/{}", escape(name)),
                message: format!("required property \"{name}\" is missing"),
            }]
        }
        ValidationErrorKind::AdditionalProperties { unexpected } => unexpected
            .iter()
            .map(|name| SchemaViolation {
                path: format!("{at}/{}", escape(name)),
                message: format!("property \"{name}\" is not allowed"),
            })
            .collect(),
        _ => vec![SchemaViolation {
            path: at,
            message: error.masked().to_string(),
        }],
    }
}

/// Escapes a property name as one JSON Pointer reference token.
fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}
