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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EnvelopeIn<'a> {
    actor: Agent,
    command_id: Uuid,
    #[serde(default)]
    correlation_id: Option<String>,
    #[serde(borrow)]
    data: &'a RawValue,
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

/// Why stored or received bytes are not a valid envelope.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON of the envelope's shape.
    #[error("malformed envelope: {0}")]
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
        let raw: EnvelopeIn<'_> = serde_json::from_slice(bytes)?;
        if raw.schema_version != SCHEMA_VERSION {
            return Err(DecodeError::SchemaVersion(raw.schema_version));
        }
        let data = EventData::decode(raw.event_type, raw.data.get())?;
        Ok(Envelope {
            event_id: raw.event_id,
            schema_version: raw.schema_version,
            position: raw.position,
            token_id: raw.token_id,
            token_kind: raw.token_kind,
            workspace_id: raw.workspace_id,
            version: raw.version,
            occurred_at: raw.occurred_at,
            actor: raw.actor,
            command_id: raw.command_id,
            correlation_id: raw.correlation_id,
            data,
            prev_hash: raw.prev_hash,
            hash: raw.hash.unwrap_or_default(),
        })
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
