//! Commands: what callers ask for, parsed strictly from JSON.
//!
//! Parsing is the first line of defence: unknown fields, read-only fields,
//! wrong types, oversized strings and malformed ids are refused here with
//! `invalid_input` naming the field, before any state is consulted.

use crate::agent::Agent;
use crate::rejection::Rejection;
use crate::secret::{SealedSecret, Secret};
use crate::validate::{self, *};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use uuid::Uuid;

/// The twelve commands, by wire name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandName {
    /// `issue_client_token`
    IssueClientToken,
    /// `update_client_token`
    UpdateClientToken,
    /// `assign_permission_groups`
    AssignPermissionGroups,
    /// `unassign_permission_groups`
    UnassignPermissionGroups,
    /// `rotate_client_token`
    RotateClientToken,
    /// `register_access_token`
    RegisterAccessToken,
    /// `refresh_access_token`
    RefreshAccessToken,
    /// `update_access_token`
    UpdateAccessToken,
    /// `trash_token`
    TrashToken,
    /// `restore_token`
    RestoreToken,
    /// `revoke_token`
    RevokeToken,
    /// `purge_token`
    PurgeToken,
}

impl CommandName {
    /// Every command.
    pub const ALL: [CommandName; 12] = [
        CommandName::IssueClientToken,
        CommandName::UpdateClientToken,
        CommandName::AssignPermissionGroups,
        CommandName::UnassignPermissionGroups,
        CommandName::RotateClientToken,
        CommandName::RegisterAccessToken,
        CommandName::RefreshAccessToken,
        CommandName::UpdateAccessToken,
        CommandName::TrashToken,
        CommandName::RestoreToken,
        CommandName::RevokeToken,
        CommandName::PurgeToken,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandName::IssueClientToken => "issue_client_token",
            CommandName::UpdateClientToken => "update_client_token",
            CommandName::AssignPermissionGroups => "assign_permission_groups",
            CommandName::UnassignPermissionGroups => "unassign_permission_groups",
            CommandName::RotateClientToken => "rotate_client_token",
            CommandName::RegisterAccessToken => "register_access_token",
            CommandName::RefreshAccessToken => "refresh_access_token",
            CommandName::UpdateAccessToken => "update_access_token",
            CommandName::TrashToken => "trash_token",
            CommandName::RestoreToken => "restore_token",
            CommandName::RevokeToken => "revoke_token",
            CommandName::PurgeToken => "purge_token",
        }
    }

    /// Looks a wire name up.
    pub fn parse(name: &str) -> Option<CommandName> {
        CommandName::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The command's own fields (besides the common ones).
    fn fields(self) -> &'static [&'static str] {
        match self {
            CommandName::IssueClientToken => &[
                "name",
                "providedResourceId",
                "permissionGroups",
                "expires",
                "ifExists",
            ],
            CommandName::UpdateClientToken => &["tokenId", "name", "expires", "permissionGroups"],
            CommandName::AssignPermissionGroups | CommandName::UnassignPermissionGroups => {
                &["tokenId", "permissionGroups"]
            }
            CommandName::RotateClientToken | CommandName::RestoreToken => &["tokenId"],
            CommandName::RegisterAccessToken => &[
                "id",
                "user",
                "provider",
                "accountName",
                "accessToken",
                "refreshToken",
            ],
            CommandName::RefreshAccessToken => &["tokenId", "accessToken", "refreshToken"],
            CommandName::UpdateAccessToken => &["tokenId", "accountName", "provider"],
            CommandName::TrashToken | CommandName::RevokeToken => &["tokenId", "reason"],
            CommandName::PurgeToken => &["tokenId", "force"],
        }
    }
}

impl fmt::Display for CommandName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Fields every command carries.
const COMMON_FIELDS: &[&str] = &[
    "commandId",
    "workspaceId",
    "actor",
    "expectedVersion",
    "correlationId",
];

/// Fields only the ledger sets; a command naming one is refused.
pub const READ_ONLY_FIELDS: &[&str] = &[
    "resourceId",
    "createdAt",
    "createdBy",
    "lastUpdatedAt",
    "lastUpdatedBy",
    "updatedAt",
    "issuedAt",
    "tokenStr",
    "version",
    "displayName",
    "trashItem",
    "revoked",
    "expired",
    "kind",
];

/// What to do when `providedResourceId` is already used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IfExists {
    /// Return the existing token, applying changed fields as an update.
    #[default]
    Reuse,
    /// Refuse with `provided_id_taken`.
    Fail,
}

/// A change to an optional field: absent leaves it, `null` clears it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Patch<T> {
    /// Leave as is.
    #[default]
    Keep,
    /// Remove the value.
    Clear,
    /// Set a new value.
    Set(T),
}

/// How an import describes a token's origin; set only by the importer.
pub use crate::event::ImportOrigin;

/// A client token as read from a fimidara export, for import.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedClientFields {
    /// The original id.
    pub resource_id: Uuid,
    /// The original issue time.
    pub issued_at: crate::time::Timestamp,
    /// Groups with their original assignment data.
    pub permission_groups: Vec<crate::event::AssignedPermissionGroup>,
    /// Provenance.
    pub origin: ImportOrigin,
}

/// One command. `S` is the secret form: [`Secret`] as parsed, [`SealedSecret`]
/// once the edge has encrypted it for [`crate::decide`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command<S> {
    /// Issue a client token.
    IssueClientToken {
        /// Unique name in the workspace.
        name: Option<String>,
        /// The caller's own id.
        provided_resource_id: Option<String>,
        /// Groups to assign; `None` when the body has no list (a re-issue
        /// by provided id then keeps the token's, where `[]` replaces it).
        permission_group_ids: Option<Vec<String>>,
        /// Expiry, epoch ms.
        expires: Option<i64>,
        /// Reuse or fail on a known provided id.
        if_exists: IfExists,
        /// Set by the importer only.
        import: Option<Box<ImportedClientFields>>,
    },
    /// Change name, expiry or the whole list of groups.
    UpdateClientToken {
        /// Target.
        token_id: Uuid,
        /// New name.
        name: Patch<String>,
        /// New expiry.
        expires: Patch<i64>,
        /// New list of groups, replacing the old one.
        permission_group_ids: Option<Vec<String>>,
    },
    /// Add groups.
    AssignPermissionGroups {
        /// Target.
        token_id: Uuid,
        /// Groups to add.
        permission_group_ids: Vec<String>,
    },
    /// Remove groups.
    UnassignPermissionGroups {
        /// Target.
        token_id: Uuid,
        /// Groups to remove.
        permission_group_ids: Vec<String>,
    },
    /// Mint a new token string.
    RotateClientToken {
        /// Target.
        token_id: Uuid,
    },
    /// Store a provider token for a user.
    RegisterAccessToken {
        /// Id to use (generated when absent).
        id: Option<Uuid>,
        /// Owner.
        user_id: Uuid,
        /// Provider.
        provider: String,
        /// Account.
        account_name: String,
        /// Secret.
        access_token: S,
        /// Secret.
        refresh_token: Option<S>,
        /// Set by the importer only.
        import: Option<ImportOrigin>,
    },
    /// Replace the provider secrets.
    RefreshAccessToken {
        /// Target.
        token_id: Uuid,
        /// New access token.
        access_token: S,
        /// New refresh token.
        refresh_token: Option<S>,
    },
    /// Change account name or provider.
    UpdateAccessToken {
        /// Target.
        token_id: Uuid,
        /// New account.
        account_name: Option<String>,
        /// New provider.
        provider: Option<String>,
    },
    /// Move to the trash.
    TrashToken {
        /// Target.
        token_id: Uuid,
        /// Why.
        reason: Option<String>,
    },
    /// Take out of the trash.
    RestoreToken {
        /// Target.
        token_id: Uuid,
    },
    /// End for good.
    RevokeToken {
        /// Target.
        token_id: Uuid,
        /// Why.
        reason: Option<String>,
    },
    /// Remove for good.
    PurgeToken {
        /// Target.
        token_id: Uuid,
        /// Purge even when not in the trash.
        force: bool,
    },
}

impl<S> Command<S> {
    /// The command's wire name.
    pub fn name(&self) -> CommandName {
        match self {
            Command::IssueClientToken { .. } => CommandName::IssueClientToken,
            Command::UpdateClientToken { .. } => CommandName::UpdateClientToken,
            Command::AssignPermissionGroups { .. } => CommandName::AssignPermissionGroups,
            Command::UnassignPermissionGroups { .. } => CommandName::UnassignPermissionGroups,
            Command::RotateClientToken { .. } => CommandName::RotateClientToken,
            Command::RegisterAccessToken { .. } => CommandName::RegisterAccessToken,
            Command::RefreshAccessToken { .. } => CommandName::RefreshAccessToken,
            Command::UpdateAccessToken { .. } => CommandName::UpdateAccessToken,
            Command::TrashToken { .. } => CommandName::TrashToken,
            Command::RestoreToken { .. } => CommandName::RestoreToken,
            Command::RevokeToken { .. } => CommandName::RevokeToken,
            Command::PurgeToken { .. } => CommandName::PurgeToken,
        }
    }

    /// The token a command names, if it targets an existing one.
    pub fn token_id(&self) -> Option<Uuid> {
        match self {
            Command::IssueClientToken { .. } => None,
            Command::RegisterAccessToken { id, .. } => *id,
            Command::UpdateClientToken { token_id, .. }
            | Command::AssignPermissionGroups { token_id, .. }
            | Command::UnassignPermissionGroups { token_id, .. }
            | Command::RotateClientToken { token_id }
            | Command::RefreshAccessToken { token_id, .. }
            | Command::UpdateAccessToken { token_id, .. }
            | Command::TrashToken { token_id, .. }
            | Command::RestoreToken { token_id }
            | Command::RevokeToken { token_id, .. }
            | Command::PurgeToken { token_id, .. } => Some(*token_id),
        }
    }

    /// Replaces the secrets, e.g. to seal them; other commands pass through.
    pub fn try_map_secrets<T, E>(
        self,
        mut f: impl FnMut(&'static str, S) -> Result<T, E>,
    ) -> Result<Command<T>, E> {
        Ok(match self {
            Command::RegisterAccessToken {
                id,
                user_id,
                provider,
                account_name,
                access_token,
                refresh_token,
                import,
            } => Command::RegisterAccessToken {
                id,
                user_id,
                provider,
                account_name,
                access_token: f("accessToken", access_token)?,
                refresh_token: refresh_token.map(|s| f("refreshToken", s)).transpose()?,
                import,
            },
            Command::RefreshAccessToken {
                token_id,
                access_token,
                refresh_token,
            } => Command::RefreshAccessToken {
                token_id,
                access_token: f("accessToken", access_token)?,
                refresh_token: refresh_token.map(|s| f("refreshToken", s)).transpose()?,
            },
            Command::IssueClientToken {
                name,
                provided_resource_id,
                permission_group_ids,
                expires,
                if_exists,
                import,
            } => Command::IssueClientToken {
                name,
                provided_resource_id,
                permission_group_ids,
                expires,
                if_exists,
                import,
            },
            Command::UpdateClientToken {
                token_id,
                name,
                expires,
                permission_group_ids,
            } => Command::UpdateClientToken {
                token_id,
                name,
                expires,
                permission_group_ids,
            },
            Command::AssignPermissionGroups {
                token_id,
                permission_group_ids,
            } => Command::AssignPermissionGroups {
                token_id,
                permission_group_ids,
            },
            Command::UnassignPermissionGroups {
                token_id,
                permission_group_ids,
            } => Command::UnassignPermissionGroups {
                token_id,
                permission_group_ids,
            },
            Command::RotateClientToken { token_id } => Command::RotateClientToken { token_id },
            Command::UpdateAccessToken {
                token_id,
                account_name,
                provider,
            } => Command::UpdateAccessToken {
                token_id,
                account_name,
                provider,
            },
            Command::TrashToken { token_id, reason } => Command::TrashToken { token_id, reason },
            Command::RestoreToken { token_id } => Command::RestoreToken { token_id },
            Command::RevokeToken { token_id, reason } => Command::RevokeToken { token_id, reason },
            Command::PurgeToken { token_id, force } => Command::PurgeToken { token_id, force },
        })
    }
}

/// A command with the fields every command carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandEnvelope<S> {
    /// Idempotency key.
    pub command_id: Uuid,
    /// Tenant.
    pub workspace_id: String,
    /// Who asks.
    pub actor: Agent,
    /// Optimistic concurrency check.
    pub expected_version: Option<u64>,
    /// Caller's correlation id, copied into events.
    pub correlation_id: Option<String>,
    /// The command.
    pub command: Command<S>,
}

/// The parsed form, secrets in plaintext.
pub type ParsedCommand = CommandEnvelope<Secret>;
/// The form [`crate::decide`] takes, secrets sealed.
pub type SealedCommand = CommandEnvelope<SealedSecret>;

impl<S> CommandEnvelope<S> {
    /// Replaces the secrets of the inner command.
    pub fn try_map_secrets<T, E>(
        self,
        f: impl FnMut(&'static str, S) -> Result<T, E>,
    ) -> Result<CommandEnvelope<T>, E> {
        Ok(CommandEnvelope {
            command_id: self.command_id,
            workspace_id: self.workspace_id,
            actor: self.actor,
            expected_version: self.expected_version,
            correlation_id: self.correlation_id,
            command: self.command.try_map_secrets(f)?,
        })
    }
}

/// Parses a command body for `name`, checking every field rule that needs no state.
pub fn parse(name: CommandName, body: &[u8]) -> Result<ParsedCommand, Rejection> {
    if body.len() > COMMAND_BYTES_MAX {
        return Err(Rejection::invalid(
            "body",
            format!("command is larger than {COMMAND_BYTES_MAX} bytes"),
        ));
    }
    let value = crate::json::parse_strict(body).map_err(|e| {
        Rejection::invalid(
            "body",
            format!("malformed JSON: {}", crate::json::error_text(&e)),
        )
    })?;
    parse_value(name, value)
}

/// Parses a command already decoded as JSON.
pub fn parse_value(name: CommandName, value: Value) -> Result<ParsedCommand, Rejection> {
    let Value::Object(map) = value else {
        return Err(Rejection::invalid("body", "a command is a JSON object"));
    };
    let mut f = Fields { map };
    f.check_keys(name)?;

    let command_id: String = f.required("commandId")?;
    let command_id = validate::uuid("commandId", &command_id)?;
    let workspace_id: String = f.required("workspaceId")?;
    validate::workspace_id("workspaceId", &workspace_id)?;
    let actor: Agent = f.required("actor")?;
    validate::actor(&actor)?;
    let expected_version: Option<u64> = f.optional("expectedVersion")?;
    let correlation_id: Option<String> = f.optional("correlationId")?;
    if let Some(c) = &correlation_id {
        validate::text("correlationId", c, AGENT_ID_LEN_MAX)?;
    }

    let command = match name {
        CommandName::IssueClientToken => Command::IssueClientToken {
            name: f.optional_key_text("name", NAME_LEN_MAX)?,
            provided_resource_id: f.optional_text("providedResourceId", PROVIDED_ID_LEN_MAX)?,
            permission_group_ids: f.groups("permissionGroups", false, true)?,
            expires: f.optional_expiry("expires")?,
            if_exists: f.optional("ifExists")?.unwrap_or_default(),
            import: None,
        },
        CommandName::UpdateClientToken => {
            let cmd = Command::UpdateClientToken {
                token_id: f.token_id()?,
                name: f.patch_key_text("name", NAME_LEN_MAX)?,
                expires: f.patch_expiry("expires")?,
                permission_group_ids: f.groups("permissionGroups", false, true)?,
            };
            if let Command::UpdateClientToken {
                name: Patch::Keep,
                expires: Patch::Keep,
                permission_group_ids: None,
                ..
            } = cmd
            {
                return Err(Rejection::invalid(
                    "body",
                    "nothing to update: give name, expires or permissionGroups",
                ));
            }
            cmd
        }
        CommandName::AssignPermissionGroups => Command::AssignPermissionGroups {
            token_id: f.token_id()?,
            permission_group_ids: f
                .groups("permissionGroups", true, true)?
                .unwrap_or_default(),
        },
        CommandName::UnassignPermissionGroups => Command::UnassignPermissionGroups {
            token_id: f.token_id()?,
            permission_group_ids: f
                .groups("permissionGroups", true, false)?
                .unwrap_or_default(),
        },
        CommandName::RotateClientToken => Command::RotateClientToken {
            token_id: f.token_id()?,
        },
        CommandName::RegisterAccessToken => {
            let id = match f.optional::<String>("id")? {
                Some(id) => Some(validate::uuid("id", &id)?),
                None => None,
            };
            let user: UserInput = f.required("user")?;
            Command::RegisterAccessToken {
                id,
                user_id: validate::uuid("user.id", &user.id)?,
                provider: f.required_key_text("provider", PROVIDER_LEN_MAX)?,
                account_name: f.required_key_text("accountName", ACCOUNT_NAME_LEN_MAX)?,
                access_token: f.required_secret("accessToken")?,
                refresh_token: f.optional_secret("refreshToken")?,
                import: None,
            }
        }
        CommandName::RefreshAccessToken => Command::RefreshAccessToken {
            token_id: f.token_id()?,
            access_token: f.required_secret("accessToken")?,
            refresh_token: f.optional_secret("refreshToken")?,
        },
        CommandName::UpdateAccessToken => {
            let token_id = f.token_id()?;
            let account_name = f.optional_key_text("accountName", ACCOUNT_NAME_LEN_MAX)?;
            let provider = f.optional_key_text("provider", PROVIDER_LEN_MAX)?;
            if account_name.is_none() && provider.is_none() {
                return Err(Rejection::invalid(
                    "body",
                    "nothing to update: give accountName or provider",
                ));
            }
            Command::UpdateAccessToken {
                token_id,
                account_name,
                provider,
            }
        }
        CommandName::TrashToken => Command::TrashToken {
            token_id: f.token_id()?,
            reason: f.optional_text("reason", REASON_LEN_MAX)?,
        },
        CommandName::RestoreToken => Command::RestoreToken {
            token_id: f.token_id()?,
        },
        CommandName::RevokeToken => Command::RevokeToken {
            token_id: f.token_id()?,
            reason: f.optional_text("reason", REASON_LEN_MAX)?,
        },
        CommandName::PurgeToken => Command::PurgeToken {
            token_id: f.token_id()?,
            force: f.optional("force")?.unwrap_or(false),
        },
    };
    Ok(CommandEnvelope {
        command_id,
        workspace_id,
        actor,
        expected_version,
        correlation_id,
        command,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserInput {
    id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GroupInput {
    permission_group_id: String,
}

struct Fields {
    map: Map<String, Value>,
}

impl Fields {
    fn check_keys(&self, name: CommandName) -> Result<(), Rejection> {
        // Sorted so the first offending field reported is deterministic.
        let mut keys: Vec<&String> = self.map.keys().collect();
        keys.sort();
        for key in keys {
            if COMMON_FIELDS.contains(&key.as_str()) || name.fields().contains(&key.as_str()) {
                continue;
            }
            if READ_ONLY_FIELDS.contains(&key.as_str()) {
                let hint = match key.as_str() {
                    "version" => " (use expectedVersion)",
                    "trashItem" => " (use trash_token / restore_token)",
                    _ => "",
                };
                return Err(Rejection::invalid(
                    key.as_str(),
                    format!("{key} is read-only: only the ledger sets it{hint}"),
                ));
            }
            return Err(Rejection::invalid(
                key.as_str(),
                format!("unknown field {key} for {name}"),
            ));
        }
        Ok(())
    }

    fn decode<T: DeserializeOwned>(field: &str, value: Value) -> Result<T, Rejection> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let full = if path == "." {
                field.to_owned()
            } else {
                format!("{field}.{path}").replace(".[", "[")
            };
            Rejection::invalid(
                full,
                format!("invalid value: {}", crate::json::error_text(e.inner())),
            )
        })
    }

    fn optional<T: DeserializeOwned>(&mut self, field: &str) -> Result<Option<T>, Rejection> {
        match self.map.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => Self::decode(field, v).map(Some),
        }
    }

    fn required<T: DeserializeOwned>(&mut self, field: &str) -> Result<T, Rejection> {
        self.optional(field)?
            .ok_or_else(|| Rejection::invalid(field, format!("{field} is required")))
    }

    fn token_id(&mut self) -> Result<Uuid, Rejection> {
        let raw: String = self.required("tokenId")?;
        validate::uuid("tokenId", &raw)
    }

    fn required_text(&mut self, field: &str, max: usize) -> Result<String, Rejection> {
        let v: String = self.required(field)?;
        validate::text(field, &v, max)?;
        Ok(v)
    }

    fn optional_text(&mut self, field: &str, max: usize) -> Result<Option<String>, Rejection> {
        let v: Option<String> = self.optional(field)?;
        if let Some(v) = &v {
            validate::text(field, v, max)?;
        }
        Ok(v)
    }

    /// Text that is (part of) a uniqueness key: see [`validate::key_text`].
    fn required_key_text(&mut self, field: &str, max: usize) -> Result<String, Rejection> {
        let v = self.required_text(field, max)?;
        validate::key_text(field, &v)?;
        Ok(v)
    }

    fn optional_key_text(&mut self, field: &str, max: usize) -> Result<Option<String>, Rejection> {
        let v = self.optional_text(field, max)?;
        if let Some(v) = &v {
            validate::key_text(field, v)?;
        }
        Ok(v)
    }

    fn patch_key_text(&mut self, field: &str, max: usize) -> Result<Patch<String>, Rejection> {
        let p = self.patch_text(field, max)?;
        if let Patch::Set(v) = &p {
            validate::key_text(field, v)?;
        }
        Ok(p)
    }

    fn patch_text(&mut self, field: &str, max: usize) -> Result<Patch<String>, Rejection> {
        match self.map.remove(field) {
            None => Ok(Patch::Keep),
            Some(Value::Null) => Ok(Patch::Clear),
            Some(v) => {
                let s: String = Self::decode(field, v)?;
                validate::text(field, &s, max)?;
                Ok(Patch::Set(s))
            }
        }
    }

    fn expiry(field: &str, v: Value) -> Result<i64, Rejection> {
        let ms: i64 = Self::decode(field, v)?;
        if !(0..=253_402_300_799_999).contains(&ms) {
            return Err(Rejection::invalid(
                field,
                "must be epoch milliseconds between 1970 and 9999",
            ));
        }
        Ok(ms)
    }

    fn optional_expiry(&mut self, field: &str) -> Result<Option<i64>, Rejection> {
        match self.map.remove(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => Self::expiry(field, v).map(Some),
        }
    }

    fn patch_expiry(&mut self, field: &str) -> Result<Patch<i64>, Rejection> {
        match self.map.remove(field) {
            None => Ok(Patch::Keep),
            Some(Value::Null) => Ok(Patch::Clear),
            Some(v) => Self::expiry(field, v).map(Patch::Set),
        }
    }

    fn required_secret(&mut self, field: &str) -> Result<Secret, Rejection> {
        let v: String = self.required(field)?;
        validate::secret(field, &v)?;
        Ok(Secret::new(v))
    }

    fn optional_secret(&mut self, field: &str) -> Result<Option<Secret>, Rejection> {
        let v: Option<String> = self.optional(field)?;
        match v {
            Some(v) => {
                validate::secret(field, &v)?;
                Ok(Some(Secret::new(v)))
            }
            None => Ok(None),
        }
    }

    /// `[{ "permissionGroupId": ... }]`, deduplicated, order kept. With
    /// `new_ids`, each id must also pass the key rules of names; an unassign
    /// names ids already held, which may predate those rules.
    fn groups(
        &mut self,
        field: &str,
        non_empty: bool,
        new_ids: bool,
    ) -> Result<Option<Vec<String>>, Rejection> {
        // The seed's groups carry assignedAt and assignedBy; a caller who
        // sends them back is told they are the ledger's, not "unknown".
        if let Some(Value::Array(given)) = self.map.get(field) {
            for (i, g) in given.iter().enumerate() {
                if let Some(key) = ["assignedAt", "assignedBy"]
                    .into_iter()
                    .find(|k| g.get(*k).is_some())
                {
                    return Err(Rejection::invalid(
                        format!("{field}[{i}].{key}"),
                        format!(
                            "{key} is read-only: the ledger fills it when it assigns the group"
                        ),
                    ));
                }
            }
        }
        let groups: Option<Vec<GroupInput>> = self.optional(field)?;
        let Some(groups) = groups else {
            if non_empty {
                return Err(Rejection::invalid(field, format!("{field} is required")));
            }
            return Ok(None);
        };
        if non_empty && groups.is_empty() {
            return Err(Rejection::invalid(field, "must name at least one group"));
        }
        if groups.len() > PERMISSION_GROUPS_MAX {
            return Err(Rejection::invalid(
                field,
                format!("at most {PERMISSION_GROUPS_MAX} groups"),
            ));
        }
        let mut ids: Vec<String> = Vec::with_capacity(groups.len());
        for (i, g) in groups.into_iter().enumerate() {
            let at = format!("{field}[{i}].permissionGroupId");
            validate::text(&at, &g.permission_group_id, PERMISSION_GROUP_ID_LEN_MAX)?;
            // A group id is a key too (" x " and "x" would be two groups).
            if new_ids {
                validate::key_text(&at, &g.permission_group_id)?;
            }
            if !ids.contains(&g.permission_group_id) {
                ids.push(g.permission_group_id);
            }
        }
        Ok(Some(ids))
    }
}
