//! Events: the immutable facts of the ledger, and their envelope.
//!
//! The canonical bytes of an envelope are its compact JSON with every object's
//! keys in sorted order and without `hash`. Structs here declare fields in
//! alphabetical order of their JSON names so that serde's derived output *is*
//! that form; a test compares it against a key-sorting re-serialization for
//! every event type. `hash = SHA-256(canonical bytes)`, and since the bytes
//! include `prevHash`, each hash commits to the whole history before it.

use crate::agent::Agent;
use crate::secret::SealedSecret;
use crate::state::TokenKind;
use crate::time::Timestamp;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use std::fmt;
use uuid::Uuid;

/// Current schema version of every event type.
pub const SCHEMA_VERSION: u32 = 1;

/// The JetStream stream every event is published on (PRODUCT.md's NATS surface).
pub const STREAM_NAME: &str = "TOKENS";

/// First token of every event subject; the stream captures `tokens.evt.>`.
pub const EVENT_SUBJECT_PREFIX: &str = "tokens.evt";

/// `prevHash` of the first event in the log.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A permission group as assigned to a client token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AssignedPermissionGroup {
    /// When it was assigned.
    pub assigned_at: Timestamp,
    /// Who assigned it.
    pub assigned_by: Agent,
    /// The group's id.
    pub permission_group_id: String,
}

/// What a client token's JWT was minted from; the string itself is never stored.
///
/// Signatures are deterministic (EdDSA, HMAC), so these claims and the key
/// `kid` re-mint the same string on an explicit request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtRef {
    /// `exp` claim (seconds), if the token expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// `iat` claim (seconds).
    pub iat: i64,
    /// `jti` claim: unique per mint, so a rotated string never equals an older one.
    pub jti: String,
    /// Signing key id.
    pub kid: String,
}

/// Where an imported token came from, with the times the source recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImportOrigin {
    /// Creation time in the source system.
    pub created_at: Timestamp,
    /// Creator in the source system, if it recorded one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<Agent>,
    /// Source format, e.g. `primaerp` or `fimidara`.
    pub source: String,
    /// The source's own version number of the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_version: Option<u64>,
    /// Last update time in the source system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Timestamp>,
}

/// The user a provider access token belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRef {
    /// The user's id.
    pub id: Uuid,
}

/// `client_token_issued`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTokenIssued {
    /// Expiry, epoch milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    /// Set when the token was imported from another system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<ImportOrigin>,
    /// When the current token string was issued.
    pub issued_at: Timestamp,
    /// Claims of the token string.
    pub jwt: JwtRef,
    /// Unique name in the workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Assigned groups.
    pub permission_groups: Vec<AssignedPermissionGroup>,
    /// The caller's own id for the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provided_resource_id: Option<String>,
}

/// `client_token_updated`: only the fields that changed; `null` clears.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTokenUpdated {
    /// New expiry (`null`: never expires).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "double_option"
    )]
    pub expires: Option<Option<i64>>,
    /// New name (`null`: no name).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "double_option"
    )]
    pub name: Option<Option<String>>,
    /// The whole new list of groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_groups: Option<Vec<AssignedPermissionGroup>>,
}

impl ClientTokenUpdated {
    /// True when nothing would change.
    pub fn is_empty(&self) -> bool {
        self.expires.is_none() && self.name.is_none() && self.permission_groups.is_none()
    }
}

/// `permission_groups_assigned`: the groups newly added.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PermissionGroupsAssigned {
    /// Groups added, in command order.
    pub permission_groups: Vec<AssignedPermissionGroup>,
}

/// `permission_groups_unassigned`: the groups removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PermissionGroupsUnassigned {
    /// Ids removed, in command order.
    pub permission_group_ids: Vec<String>,
}

/// `client_token_rotated`: a new token string; the old one stops verifying.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTokenRotated {
    /// New `issuedAt`.
    pub issued_at: Timestamp,
    /// Claims of the new string.
    pub jwt: JwtRef,
}

/// `access_token_registered`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessTokenRegistered {
    /// The provider's access token, sealed.
    pub access_token: SealedSecret,
    /// The account at the provider, e.g. an e-mail address.
    pub account_name: String,
    /// Set when imported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<ImportOrigin>,
    /// Provider name, e.g. `google`.
    pub provider: String,
    /// The provider's refresh token, sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<SealedSecret>,
    /// Owner.
    pub user: UserRef,
}

/// `access_token_refreshed`: new secrets from the provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessTokenRefreshed {
    /// New access token, sealed.
    pub access_token: SealedSecret,
    /// New refresh token, sealed; absent keeps the old one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<SealedSecret>,
}

/// `access_token_updated`: only the fields that changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessTokenUpdated {
    /// New account name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_name: Option<String>,
    /// New provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

/// `token_trashed`; `trashedAt`/`trashedBy` are the envelope's time and actor.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenTrashed {
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `token_restored`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRestored {}

/// `token_revoked`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenRevoked {
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `token_purged`: the token is gone for good; its secrets are shredded.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenPurged {
    /// True when purged without passing through the trash.
    pub forced: bool,
}

fn double_option<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

macro_rules! event_types {
    ($($variant:ident($ty:ident) = $name:literal,)*) => {
        /// The type name of an event, as in the envelope's `type`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum EventType { $(
            #[doc = concat!("`", $name, "`")]
            $variant,
        )* }

        impl EventType {
            /// Every event type, in catalogue order.
            pub const ALL: &'static [EventType] = &[$(EventType::$variant,)*];
            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self { $(EventType::$variant => $name,)* }
            }
            /// Looks a wire name up.
            pub fn parse(name: &str) -> Option<EventType> {
                match name { $($name => Some(EventType::$variant),)* _ => None }
            }
        }

        /// The payload of an event, one variant per type.
        #[derive(Clone, Debug, PartialEq, Eq, Serialize)]
        #[serde(untagged)]
        pub enum EventData { $(
            #[doc = concat!("`", $name, "`")]
            $variant($ty),
        )* }

        impl EventData {
            /// The event's type.
            pub fn event_type(&self) -> EventType {
                match self { $(EventData::$variant(_) => EventType::$variant,)* }
            }
            /// Decodes `data` of the given type, rejecting unknown fields.
            pub fn decode(ty: EventType, json: &str) -> Result<EventData, serde_json::Error> {
                Ok(match ty { $(EventType::$variant => EventData::$variant(serde_json::from_str(json)?),)* })
            }
        }
    };
}

event_types! {
    ClientTokenIssued(ClientTokenIssued) = "client_token_issued",
    ClientTokenUpdated(ClientTokenUpdated) = "client_token_updated",
    PermissionGroupsAssigned(PermissionGroupsAssigned) = "permission_groups_assigned",
    PermissionGroupsUnassigned(PermissionGroupsUnassigned) = "permission_groups_unassigned",
    ClientTokenRotated(ClientTokenRotated) = "client_token_rotated",
    AccessTokenRegistered(AccessTokenRegistered) = "access_token_registered",
    AccessTokenRefreshed(AccessTokenRefreshed) = "access_token_refreshed",
    AccessTokenUpdated(AccessTokenUpdated) = "access_token_updated",
    TokenTrashed(TokenTrashed) = "token_trashed",
    TokenRestored(TokenRestored) = "token_restored",
    TokenRevoked(TokenRevoked) = "token_revoked",
    TokenPurged(TokenPurged) = "token_purged",
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event decided by the core, before the store gives it a place in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventDraft {
    /// The token it is about.
    pub token_id: Uuid,
    /// That token's kind.
    pub token_kind: TokenKind,
    /// The token's workspace.
    pub workspace_id: String,
    /// The token's version after this event.
    pub version: u64,
    /// Payload.
    pub data: EventData,
}

/// What the store adds to a draft to make it an envelope.
#[derive(Clone, Debug)]
pub struct StampMeta {
    /// UUID v7 of the event.
    pub event_id: Uuid,
    /// Global position, gap-free from 1.
    pub position: u64,
    /// Commit time.
    pub occurred_at: Timestamp,
    /// Who issued the command.
    pub actor: Agent,
    /// The command's idempotency key.
    pub command_id: Uuid,
    /// Caller's correlation id.
    pub correlation_id: Option<String>,
    /// Hash of the event at `position - 1` ([`GENESIS_HASH`] for the first).
    pub prev_hash: String,
}

impl EventDraft {
    /// Places the draft in the log: fills the envelope and computes its hash.
    ///
    /// Returns the envelope and its canonical bytes (what the store keeps).
    pub fn stamp(self, meta: StampMeta) -> (Envelope, Vec<u8>) {
        let mut env = Envelope {
            event_id: meta.event_id,
            schema_version: SCHEMA_VERSION,
            position: meta.position,
            token_id: self.token_id,
            token_kind: self.token_kind,
            workspace_id: self.workspace_id,
            version: self.version,
            occurred_at: meta.occurred_at,
            actor: meta.actor,
            command_id: meta.command_id,
            correlation_id: meta.correlation_id,
            data: self.data,
            prev_hash: meta.prev_hash,
            hash: String::new(),
        };
        let bytes = env.canonical_bytes();
        env.hash = hash_hex(&bytes);
        (env, bytes)
    }
}

/// The NATS subject of an event: `tokens.evt.{workspaceId}.{tokenId}.{type}`.
pub fn event_subject(workspace_id: &str, token_id: &Uuid, event_type: EventType) -> String {
    format!("{EVENT_SUBJECT_PREFIX}.{workspace_id}.{token_id}.{event_type}")
}

/// The hex SHA-256 of canonical bytes.
pub fn hash_hex(canonical: &[u8]) -> String {
    hex::encode(Sha256::digest(canonical))
}

/// An event with its place in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// UUID v7, also the JetStream `Nats-Msg-Id`.
    pub event_id: Uuid,
    /// Version of `data`'s schema.
    pub schema_version: u32,
    /// Global position, gap-free from 1.
    pub position: u64,
    /// The token.
    pub token_id: Uuid,
    /// The token's kind.
    pub token_kind: TokenKind,
    /// Tenant.
    pub workspace_id: String,
    /// The token's version after this event.
    pub version: u64,
    /// Commit time.
    pub occurred_at: Timestamp,
    /// Who.
    pub actor: Agent,
    /// Idempotency key of the command that produced it.
    pub command_id: Uuid,
    /// Caller's correlation id.
    pub correlation_id: Option<String>,
    /// Payload; its type is the envelope's `type`.
    pub data: EventData,
    /// Hash of the previous event.
    pub prev_hash: String,
    /// SHA-256 of this envelope's canonical bytes, hex.
    pub hash: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EnvelopeRepr<'a> {
    actor: &'a Agent,
    command_id: &'a Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlation_id: &'a Option<String>,
    data: &'a EventData,
    event_id: &'a Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash: Option<&'a str>,
    occurred_at: &'a Timestamp,
    position: u64,
    prev_hash: &'a str,
    schema_version: u32,
    token_id: &'a Uuid,
    token_kind: TokenKind,
    #[serde(rename = "type")]
    event_type: EventType,
    version: u64,
    workspace_id: &'a str,
}

/// The decoded shape of an envelope, generic over `data`: `&RawValue` for
/// the general two-step decode, or one payload struct for the one-pass decode
/// of [`Envelope::from_json`] (one instance per event type).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EnvelopeIn<D> {
    actor: Agent,
    command_id: Uuid,
    #[serde(default)]
    correlation_id: Option<String>,
    data: D,
    event_id: Uuid,
    #[serde(default)]
    hash: Option<String>,
    occurred_at: Timestamp,
    position: u64,
    prev_hash: String,
    schema_version: u32,
    token_id: Uuid,
    token_kind: TokenKind,
    #[serde(rename = "type")]
    event_type: EventType,
    version: u64,
    workspace_id: String,
}

impl<D> EnvelopeIn<D> {
    fn into_envelope(self, wrap: impl FnOnce(D) -> EventData) -> Envelope {
        Envelope {
            event_id: self.event_id,
            schema_version: self.schema_version,
            position: self.position,
            token_id: self.token_id,
            token_kind: self.token_kind,
            workspace_id: self.workspace_id,
            version: self.version,
            occurred_at: self.occurred_at,
            actor: self.actor,
            command_id: self.command_id,
            correlation_id: self.correlation_id,
            data: wrap(self.data),
            prev_hash: self.prev_hash,
            hash: self.hash.unwrap_or_default(),
        }
    }
}

/// The event type named by the last `"type":"…"` in the bytes: in canonical
/// form, the envelope's own `type` (only `version` and `workspaceId` follow
/// it, and a quote inside a string is escaped). Only a guess: the decode
/// checks it against the decoded `type`.
fn guess_type(bytes: &[u8]) -> Option<EventType> {
    const KEY: &[u8] = b"\"type\":\"";
    let at = bytes.windows(KEY.len()).rposition(|w| w == KEY)? + KEY.len();
    let rest = &bytes[at..];
    let len = rest.iter().take(32).position(|&b| b == b'"')?;
    EventType::parse(std::str::from_utf8(&rest[..len]).ok()?)
}

/// Decodes `data` as `ty` while reading the envelope; `None` when that does
/// not give a valid envelope of type `ty` (the caller then takes the general
/// path, which reports the error).
fn decode_one_pass(ty: EventType, bytes: &[u8]) -> Option<Envelope> {
    // One UTF-8 check of the whole text instead of one per string (what
    // `from_slice` does); on valid UTF-8 the two readers accept the same.
    let text = std::str::from_utf8(bytes).ok()?;
    fn one<D: serde::de::DeserializeOwned>(
        ty: EventType,
        text: &str,
        wrap: fn(D) -> EventData,
    ) -> Option<Envelope> {
        let raw: EnvelopeIn<D> = serde_json::from_str(text).ok()?;
        if raw.event_type != ty || raw.schema_version != SCHEMA_VERSION {
            return None;
        }
        Some(raw.into_envelope(wrap))
    }
    match ty {
        EventType::ClientTokenIssued => one(ty, text, EventData::ClientTokenIssued),
        EventType::ClientTokenUpdated => one(ty, text, EventData::ClientTokenUpdated),
        EventType::PermissionGroupsAssigned => one(ty, text, EventData::PermissionGroupsAssigned),
        EventType::PermissionGroupsUnassigned => {
            one(ty, text, EventData::PermissionGroupsUnassigned)
        }
        EventType::ClientTokenRotated => one(ty, text, EventData::ClientTokenRotated),
        EventType::AccessTokenRegistered => one(ty, text, EventData::AccessTokenRegistered),
        EventType::AccessTokenRefreshed => one(ty, text, EventData::AccessTokenRefreshed),
        EventType::AccessTokenUpdated => one(ty, text, EventData::AccessTokenUpdated),
        EventType::TokenTrashed => one(ty, text, EventData::TokenTrashed),
        EventType::TokenRestored => one(ty, text, EventData::TokenRestored),
        EventType::TokenRevoked => one(ty, text, EventData::TokenRevoked),
        EventType::TokenPurged => one(ty, text, EventData::TokenPurged),
    }
}

/// Why stored or received bytes are not a valid envelope.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON of the envelope's shape.
    #[error("malformed envelope: {}", crate::json::error_text(.0))]
    Malformed(#[from] serde_json::Error),
    /// A `schemaVersion` this build cannot read.
    #[error("unsupported schemaVersion {0}")]
    SchemaVersion(u32),
}

impl Envelope {
    /// The event's type.
    pub fn event_type(&self) -> EventType {
        self.data.event_type()
    }

    /// The subject it is published on: `tokens.evt.{workspaceId}.{tokenId}.{type}`.
    ///
    /// Part of the wire contract (the publisher writes it, subscribers check
    /// a message's subject against its body), so it is defined once, here.
    pub fn subject(&self) -> String {
        event_subject(&self.workspace_id, &self.token_id, self.event_type())
    }

    fn repr(&self, with_hash: bool) -> EnvelopeRepr<'_> {
        EnvelopeRepr {
            actor: &self.actor,
            command_id: &self.command_id,
            correlation_id: &self.correlation_id,
            data: &self.data,
            event_id: &self.event_id,
            hash: with_hash.then_some(self.hash.as_str()),
            occurred_at: &self.occurred_at,
            position: self.position,
            prev_hash: &self.prev_hash,
            schema_version: self.schema_version,
            token_id: &self.token_id,
            token_kind: self.token_kind,
            event_type: self.event_type(),
            version: self.version,
            workspace_id: &self.workspace_id,
        }
    }

    /// The bytes the hash covers: sorted-key compact JSON without `hash`.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.repr(false)).expect("envelope serialization cannot fail")
    }

    /// The published form: canonical JSON with `hash` included.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.repr(true)).expect("envelope serialization cannot fail")
    }

    /// The published form as a JSON value.
    pub fn to_json_value(&self) -> serde_json::Value {
        serde_json::to_value(self.repr(true)).expect("envelope serialization cannot fail")
    }

    /// Decodes an envelope (with or without `hash`); `hash` is left empty when absent.
    pub fn from_json(bytes: &[u8]) -> Result<Envelope, DecodeError> {
        // `data` precedes `type` in the canonical (sorted) form, so the type
        // is not known when `data` is reached. The general path buffers `data`
        // as a raw value and parses it a second time once `type` is read. The
        // fast path finds `type` by a byte scan from the end (where canonical
        // form puts it), decodes `data` as that type in the same pass, and
        // keeps the result only if the decoded `type` equals the guess and the
        // schema version is supported. Every other outcome (no guess, a wrong
        // guess, any error) falls back to the general path, so what is
        // accepted, what is refused and the error reported are unchanged.
        if let Some(env) = guess_type(bytes).and_then(|ty| decode_one_pass(ty, bytes)) {
            return Ok(env);
        }
        Envelope::from_json_two_pass(bytes)
    }

    /// The general decode: `data` buffered as a raw value, then decoded by `type`.
    fn from_json_two_pass(bytes: &[u8]) -> Result<Envelope, DecodeError> {
        let raw: EnvelopeIn<&RawValue> = serde_json::from_slice(bytes)?;
        if raw.schema_version != SCHEMA_VERSION {
            return Err(DecodeError::SchemaVersion(raw.schema_version));
        }
        let data = EventData::decode(raw.event_type, raw.data.get())?;
        Ok(raw.into_envelope(|_| data))
    }

    /// Recomputes the hash from the canonical bytes.
    pub fn computed_hash(&self) -> String {
        hash_hex(&self.canonical_bytes())
    }
}

impl Serialize for Envelope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.repr(true).serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn same_outcome(bytes: &[u8]) {
        let fast = Envelope::from_json(bytes).map_err(|e| e.to_string());
        let general = Envelope::from_json_two_pass(bytes).map_err(|e| e.to_string());
        assert_eq!(fast, general, "{}", String::from_utf8_lossy(bytes));
    }

    /// The one-pass decode accepts, refuses and reports exactly as the
    /// general one, on the golden examples and on variations of them.
    #[test]
    fn one_pass_decode_matches_the_general_decode() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../events/examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let Ok(value) = serde_json::from_slice::<Value>(&bytes) else {
                same_outcome(&bytes);
                continue;
            };
            if value.get("type").is_none() {
                continue;
            }
            seen += 1;
            same_outcome(&bytes);
            let ty = EventType::parse(value["type"].as_str().unwrap()).unwrap();
            assert_eq!(guess_type(&bytes), Some(ty), "{}", path.display());
            assert!(decode_one_pass(ty, &bytes).is_some(), "{}", path.display());
            let env = Envelope::from_json(&bytes).unwrap();
            same_outcome(&env.canonical_bytes());
            // Pretty-printed: no guess, general path.
            same_outcome(serde_json::to_string_pretty(&value).unwrap().as_bytes());
            let mut variants: Vec<Value> = Vec::new();
            for other in EventType::ALL {
                let mut v = value.clone();
                v["type"] = json!(other.as_str());
                variants.push(v);
            }
            for (key, bad) in [
                ("data", Value::Null),
                ("data", json!({})),
                ("data", json!([])),
                ("data", json!("x")),
                ("schemaVersion", json!(2)),
                ("schemaVersion", json!("1")),
                ("type", json!("nope")),
                ("type", json!(1)),
                ("extra", json!(1)),
                ("hash", Value::Null),
                ("correlationId", Value::Null),
                ("version", json!(-1)),
            ] {
                let mut v = value.clone();
                v[key] = bad;
                variants.push(v);
            }
            for key in ["data", "type", "actor", "hash", "schemaVersion"] {
                let mut v = value.clone();
                v.as_object_mut().unwrap().remove(key);
                variants.push(v);
            }
            let mut v = value.clone();
            v["data"]["unknown"] = json!(true);
            variants.push(v);
            for v in &variants {
                same_outcome(&serde_json::to_vec(v).unwrap());
            }
            // `type` first, then a decoy `"type":"…"` inside a string near the end.
            let text = String::from_utf8(bytes.clone()).unwrap();
            let body = &text[1..];
            same_outcome(
                format!(
                    "{{\"type\":\"{}\",{}",
                    ty.as_str(),
                    body.replacen(&format!(",\"type\":\"{}\"", ty.as_str()), "", 1)
                )
                .as_bytes(),
            );
            let mut v = value.clone();
            v["workspaceId"] = json!("\"type\":\"token_purged\"");
            same_outcome(&serde_json::to_vec(&v).unwrap());
            // A duplicate `data` or `type` key.
            same_outcome(
                text.replacen(
                    "{\"actor\"",
                    &format!("{{\"type\":\"{}\",\"actor\"", ty.as_str()),
                    1,
                )
                .as_bytes(),
            );
            same_outcome(
                text.replacen("{\"actor\"", "{\"data\":{},\"actor\"", 1)
                    .as_bytes(),
            );
            // Invalid UTF-8 in a string, outside `data` and inside it.
            for (at, bad) in [("\"workspaceId\":\"", 0xffu8), ("\"data\":{\"", 0xc3)] {
                let mut broken = text.replacen(at, &format!("{at}\u{1}"), 1).into_bytes();
                if let Some(i) = broken.iter().position(|&b| b == 1) {
                    broken[i] = bad;
                    same_outcome(&broken);
                }
            }
        }
        assert!(seen >= 12, "only {seen} examples");
    }
}
