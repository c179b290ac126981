//! The twelve commands as typed values, serialized to the ledger's JSON.
//!
//! Each struct holds a command's own fields; the common ones (`commandId`,
//! `actor`, `expectedVersion`, `correlationId`) are [`CommandOptions`],
//! attached with the [`TypedCommand`] helpers:
//!
//! ```
//! use ledger_client::{TypedCommand, UpdateClientToken, Patch};
//! let id = uuid::Uuid::new_v4();
//! let cmd = UpdateClientToken { token_id: id, name: Patch::Set("renamed".into()), ..UpdateClientToken::new(id) }
//!     .expected_version(3);
//! assert_eq!(cmd.options.expected_version, Some(3));
//! ```

use ledger_core::command::IfExists;
use ledger_core::{Agent, CommandName, TokenView};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use uuid::Uuid;

pub use ledger_core::command::Patch;

/// The fields every command may carry besides its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandOptions {
    /// Idempotency key; a fresh UUID v4 when `None`. Give your own to retry
    /// safely after a timeout: the ledger answers a known id with its first
    /// result and appends nothing. A refusal is a result too (a `conflict`,
    /// a `name_taken`): trying again after one is a new command, with a new id.
    pub command_id: Option<Uuid>,
    /// Who acts; the client's actor ([`crate::Client::with_actor`]) when `None`.
    pub actor: Option<Agent>,
    /// Refuse with `conflict` (and the current version) unless the token is at this version.
    pub expected_version: Option<u64>,
    /// Copied into the events.
    pub correlation_id: Option<String>,
}

/// A command with its options, what [`crate::Client::execute`] sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cmd<C> {
    /// The command's own fields.
    pub command: C,
    /// The common fields.
    pub options: CommandOptions,
}

impl<C> From<C> for Cmd<C> {
    fn from(command: C) -> Cmd<C> {
        Cmd {
            command,
            options: CommandOptions::default(),
        }
    }
}

impl<C> Cmd<C> {
    /// Sets `commandId`.
    pub fn command_id(mut self, id: Uuid) -> Cmd<C> {
        self.options.command_id = Some(id);
        self
    }
    /// Sets `actor`.
    pub fn actor(mut self, actor: Agent) -> Cmd<C> {
        self.options.actor = Some(actor);
        self
    }
    /// Sets `expectedVersion`.
    pub fn expected_version(mut self, version: u64) -> Cmd<C> {
        self.options.expected_version = Some(version);
        self
    }
    /// Sets `correlationId`.
    pub fn correlation_id(mut self, id: impl Into<String>) -> Cmd<C> {
        self.options.correlation_id = Some(id.into());
        self
    }
}

/// A command of the ledger: its wire name and its own fields as JSON.
pub trait TypedCommand: Serialize + Sized {
    /// The wire name (last token of `tokens.cmd.{workspaceId}.{command}`).
    const NAME: CommandName;

    /// With these options.
    fn with_options(self, options: CommandOptions) -> Cmd<Self> {
        Cmd {
            command: self,
            options,
        }
    }
    /// With `commandId`.
    fn command_id(self, id: Uuid) -> Cmd<Self> {
        Cmd::from(self).command_id(id)
    }
    /// With `actor`.
    fn actor(self, actor: Agent) -> Cmd<Self> {
        Cmd::from(self).actor(actor)
    }
    /// With `expectedVersion`.
    fn expected_version(self, version: u64) -> Cmd<Self> {
        Cmd::from(self).expected_version(version)
    }
    /// With `correlationId`.
    fn correlation_id(self, id: impl Into<String>) -> Cmd<Self> {
        Cmd::from(self).correlation_id(id)
    }
}

/// What an accepted command answers.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandResult {
    /// The token after the command, with its new `version` (and `tokenStr`
    /// after issue and rotate); `None` after `purge_token`, which leaves no view.
    pub token: Option<TokenView>,
    /// Positions of the appended events; empty when nothing was appended
    /// (a reuse by `providedResourceId`, or a replayed `commandId`).
    pub positions: Vec<u64>,
    /// The token the command was about, also when `token` is absent (purged,
    /// or a view too large for the reply); `None` from older servers.
    #[serde(default)]
    pub token_id: Option<uuid::Uuid>,
}

fn is_keep<T>(p: &Patch<T>) -> bool {
    matches!(p, Patch::Keep)
}

fn patch<T: Serialize, S: Serializer>(p: &Patch<T>, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Patch::Set(v) => v.serialize(s),
        Patch::Keep | Patch::Clear => s.serialize_none(),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GroupRef<'a> {
    permission_group_id: &'a str,
}

fn groups<S: Serializer>(ids: &[String], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(ids.iter().map(|id| GroupRef {
        permission_group_id: id,
    }))
}

fn some_groups<S: Serializer>(ids: &Option<Vec<String>>, s: S) -> Result<S::Ok, S::Error> {
    match ids {
        Some(ids) => groups(ids, s),
        None => s.serialize_none(),
    }
}

#[derive(Serialize)]
struct UserRefOut {
    id: Uuid,
}

fn user<S: Serializer>(id: &Uuid, s: S) -> Result<S::Ok, S::Error> {
    UserRefOut { id: *id }.serialize(s)
}

macro_rules! typed {
    ($($ty:ident = $name:ident,)*) => {$(
        impl TypedCommand for $ty {
            const NAME: CommandName = CommandName::$name;
        }
    )*};
}

typed! {
    IssueClientToken = IssueClientToken,
    UpdateClientToken = UpdateClientToken,
    AssignPermissionGroups = AssignPermissionGroups,
    UnassignPermissionGroups = UnassignPermissionGroups,
    RotateClientToken = RotateClientToken,
    RegisterAccessToken = RegisterAccessToken,
    RefreshAccessToken = RefreshAccessToken,
    UpdateAccessToken = UpdateAccessToken,
    TrashToken = TrashToken,
    RestoreToken = RestoreToken,
    RevokeToken = RevokeToken,
    PurgeToken = PurgeToken,
}

/// `issue_client_token`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IssueClientToken {
    /// Unique in the workspace, case-insensitively.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The caller's own id; issuing again with it reuses the token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provided_resource_id: Option<String>,
    /// Permission group ids to assign.
    #[serde(skip_serializing_if = "Vec::is_empty", serialize_with = "groups")]
    pub permission_groups: Vec<String>,
    /// Expiry, epoch milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    /// `fail` answers `provided_id_taken` instead of reusing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub if_exists: Option<IfExists>,
}

/// `update_client_token`: `Patch::Clear` sends `null` (removes the name or expiry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateClientToken {
    /// Target.
    pub token_id: Uuid,
    /// New name.
    #[serde(skip_serializing_if = "is_keep", serialize_with = "patch")]
    pub name: Patch<String>,
    /// New expiry, epoch milliseconds.
    #[serde(skip_serializing_if = "is_keep", serialize_with = "patch")]
    pub expires: Patch<i64>,
    /// The whole new list of groups.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "some_groups"
    )]
    pub permission_groups: Option<Vec<String>>,
}

impl UpdateClientToken {
    /// An update of `token_id` changing nothing yet.
    pub fn new(token_id: Uuid) -> UpdateClientToken {
        UpdateClientToken {
            token_id,
            name: Patch::Keep,
            expires: Patch::Keep,
            permission_groups: None,
        }
    }
}

/// `assign_permission_groups`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignPermissionGroups {
    /// Target.
    pub token_id: Uuid,
    /// Group ids to add.
    #[serde(serialize_with = "groups")]
    pub permission_groups: Vec<String>,
}

/// `unassign_permission_groups`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnassignPermissionGroups {
    /// Target.
    pub token_id: Uuid,
    /// Group ids to remove.
    #[serde(serialize_with = "groups")]
    pub permission_groups: Vec<String>,
}

/// `rotate_client_token`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RotateClientToken {
    /// Target.
    pub token_id: Uuid,
}

/// `register_access_token`. `Debug` hides the secrets.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RegisterAccessToken {
    /// Id to use; the ledger picks one when `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<Uuid>,
    /// Owner (sent as `user: {id}`).
    #[serde(rename = "user", serialize_with = "user")]
    pub user_id: Uuid,
    /// e.g. `google`.
    pub provider: String,
    /// e.g. an e-mail address.
    pub account_name: String,
    /// The provider's access token (secret).
    pub access_token: String,
    /// The provider's refresh token (secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

impl fmt::Debug for RegisterAccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisterAccessToken")
            .field("id", &self.id)
            .field("user_id", &self.user_id)
            .field("provider", &self.provider)
            .field("account_name", &self.account_name)
            .field("access_token", &"***")
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// `refresh_access_token`. `Debug` hides the secrets.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RefreshAccessToken {
    /// Target.
    pub token_id: Uuid,
    /// New access token (secret).
    pub access_token: String,
    /// New refresh token (secret); `None` keeps the old one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

impl fmt::Debug for RefreshAccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshAccessToken")
            .field("token_id", &self.token_id)
            .field("access_token", &"***")
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "***"))
            .finish()
    }
}

/// `update_access_token`: give at least one field.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateAccessToken {
    /// Target.
    pub token_id: Uuid,
    /// New account name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_name: Option<String>,
    /// New provider.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
}

/// `trash_token`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrashToken {
    /// Target.
    pub token_id: Uuid,
    /// Why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `restore_token`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreToken {
    /// Target.
    pub token_id: Uuid,
}

/// `revoke_token`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RevokeToken {
    /// Target.
    pub token_id: Uuid,
    /// Why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `purge_token`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PurgeToken {
    /// Target.
    pub token_id: Uuid,
    /// Purge even when not in the trash.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_core::command::parse_value;
    use serde_json::{json, Value};

    /// Fills the common fields the way the client does, then lets the core parse it.
    fn parses<C: TypedCommand>(cmd: C) -> Value {
        let mut v = serde_json::to_value(&cmd).unwrap();
        let obj = v.as_object_mut().unwrap();
        obj.insert("commandId".into(), json!(Uuid::new_v4()));
        obj.insert("workspaceId".into(), json!("acme"));
        obj.insert(
            "actor".into(),
            json!({"agentId": "svc", "agentType": "service"}),
        );
        parse_value(C::NAME, v.clone()).unwrap_or_else(|r| panic!("{}: {r}: {v}", C::NAME));
        v
    }

    #[test]
    fn every_typed_command_is_accepted_by_the_core_parser() {
        let id = Uuid::new_v4();
        let v = parses(IssueClientToken {
            name: Some("a".into()),
            provided_resource_id: Some("p".into()),
            permission_groups: vec!["g1".into()],
            expires: Some(4_102_444_800_000),
            if_exists: Some(IfExists::Fail),
        });
        assert_eq!(v["permissionGroups"], json!([{"permissionGroupId": "g1"}]));
        assert_eq!(v["ifExists"], "fail");
        parses(IssueClientToken::default());
        let v = parses(UpdateClientToken {
            name: Patch::Clear,
            expires: Patch::Set(5),
            ..UpdateClientToken::new(id)
        });
        assert_eq!(v["name"], Value::Null);
        assert_eq!(v["expires"], 5);
        assert!(v.get("permissionGroups").is_none());
        parses(UpdateClientToken {
            permission_groups: Some(vec![]),
            ..UpdateClientToken::new(id)
        });
        parses(AssignPermissionGroups {
            token_id: id,
            permission_groups: vec!["g".into()],
        });
        parses(UnassignPermissionGroups {
            token_id: id,
            permission_groups: vec!["g".into()],
        });
        parses(RotateClientToken { token_id: id });
        let v = parses(RegisterAccessToken {
            id: None,
            user_id: id,
            provider: "google".into(),
            account_name: "a@b.c".into(),
            access_token: "ya29".into(),
            refresh_token: Some("1//r".into()),
        });
        assert_eq!(v["user"]["id"], id.to_string());
        parses(RefreshAccessToken {
            token_id: id,
            access_token: "x".into(),
            refresh_token: None,
        });
        parses(UpdateAccessToken {
            token_id: id,
            account_name: Some("b".into()),
            provider: None,
        });
        parses(TrashToken {
            token_id: id,
            reason: Some("r".into()),
        });
        parses(RestoreToken { token_id: id });
        parses(RevokeToken {
            token_id: id,
            reason: None,
        });
        parses(PurgeToken {
            token_id: id,
            force: true,
        });
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let r = RegisterAccessToken {
            id: None,
            user_id: Uuid::nil(),
            provider: "google".into(),
            account_name: "a".into(),
            access_token: "SECRET-A".into(),
            refresh_token: Some("SECRET-R".into()),
        };
        let shown = format!("{r:?}");
        assert!(!shown.contains("SECRET"), "{shown}");
        let f = RefreshAccessToken {
            token_id: Uuid::nil(),
            access_token: "SECRET-A".into(),
            refresh_token: Some("SECRET-R".into()),
        };
        assert!(!format!("{f:?}").contains("SECRET"));
    }
}
