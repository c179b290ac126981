//! The twelve ledger commands as subcommands.
//!
//! Each subcommand only turns its flags into the JSON body the wire carries;
//! `ledger_core::command::parse_value` then validates that body, so a flag
//! value is refused exactly as the same field would be over NATS. `--body`
//! sends a raw body instead of flags; `workspaceId`, `commandId`, `actor` (and
//! `tokenId`, `expectedVersion` when given as arguments) are filled in when the
//! body lacks them, and a body that says otherwise than the command line is
//! refused (`invalid_input` on that field), never silently preferred.

use crate::app::{Ctx, Ledger};
use crate::failure::Failure;
use crate::input::{self, SecretSource};
use crate::output::Reply;
use clap::{Args, Subcommand, ValueEnum};
use ledger_core::command::{parse_value, ParsedCommand};
use ledger_core::CommandName;
use ledger_store::Committed;
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// Environment variable holding a provider access token (instead of a file or stdin).
pub const ACCESS_TOKEN_ENV: &str = "TOKENLEDGER_ACCESS_TOKEN";
/// Environment variable holding a provider refresh token (instead of a file).
pub const REFRESH_TOKEN_ENV: &str = "TOKENLEDGER_REFRESH_TOKEN";

const MISSING_ACCESS_TOKEN: &str = "give --access-token-file F, --access-token-stdin or \
     TOKENLEDGER_ACCESS_TOKEN (never a plain flag: it would leak into shell history)";

/// Flags every command takes.
#[derive(Args, Debug)]
pub struct CommonArgs {
    /// Optimistic concurrency: refuse with `conflict` unless the token is at this version.
    #[arg(long, value_name = "N")]
    pub expected_version: Option<u64>,
    /// Idempotency key (default: a fresh UUID v4). The same id again returns the first result.
    #[arg(long, value_name = "UUID")]
    pub command_id: Option<String>,
    /// Send this JSON body (or @FILE, @- for stdin) instead of building one from flags.
    #[arg(long, value_name = "JSON|@FILE")]
    pub body: Option<String>,
}

/// A command on one existing token.
#[derive(Args, Debug)]
pub struct TargetArgs {
    /// The token id.
    #[arg(value_name = "TOKEN", required_unless_present = "body")]
    pub token: Option<String>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// What `issue` does when the provided id is already used.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum IfExistsArg {
    /// Return that token, applying any differing fields as an update.
    Reuse,
    /// Refuse with `provided_id_taken`.
    Fail,
}

/// `issue`.
#[derive(Args, Debug)]
pub struct IssueArgs {
    /// Unique name in the workspace (case-insensitive).
    #[arg(long, conflicts_with = "body")]
    pub name: Option<String>,
    /// Your own id for the token (e.g. a user id); issuing again with it reuses the token.
    #[arg(long, value_name = "ID", conflicts_with = "body")]
    pub provided_id: Option<String>,
    /// A permission group to assign (repeat for several).
    #[arg(long = "group", value_name = "G", conflicts_with = "body")]
    pub groups: Vec<String>,
    /// Expiry: RFC 3339, +30d / +2h / +15m, or epoch milliseconds.
    #[arg(long, value_name = "WHEN", conflicts_with = "body")]
    pub expires: Option<String>,
    /// What to do when --provided-id is already used.
    #[arg(long, value_enum, conflicts_with = "body")]
    pub if_exists: Option<IfExistsArg>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `update`.
#[derive(Args, Debug)]
pub struct UpdateArgs {
    /// The client token id.
    #[arg(value_name = "TOKEN", required_unless_present = "body")]
    pub token: Option<String>,
    /// New name.
    #[arg(long, conflicts_with_all = ["clear_name", "body"])]
    pub name: Option<String>,
    /// Remove the name.
    #[arg(long, conflicts_with = "body")]
    pub clear_name: bool,
    /// New expiry: RFC 3339, +30d / +2h / +15m, or epoch milliseconds.
    #[arg(long, value_name = "WHEN", conflicts_with_all = ["clear_expires", "body"])]
    pub expires: Option<String>,
    /// Never expire.
    #[arg(long, conflicts_with = "body")]
    pub clear_expires: bool,
    /// Replace the whole list of groups (comma-separated; '' for none).
    #[arg(long, value_name = "G,G", value_delimiter = ',', num_args = 0.., conflicts_with = "body")]
    pub groups: Option<Vec<String>>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `assign` and `unassign`.
#[derive(Args, Debug)]
pub struct GroupsArgs {
    /// The client token id.
    #[arg(value_name = "TOKEN", required_unless_present = "body")]
    pub token: Option<String>,
    /// A permission group (repeat for several).
    #[arg(
        long = "group",
        value_name = "G",
        required_unless_present = "body",
        conflicts_with = "body"
    )]
    pub groups: Vec<String>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `register`.
#[derive(Args, Debug)]
pub struct RegisterArgs {
    /// The owner's user id.
    #[arg(
        long,
        value_name = "UUID",
        required_unless_present = "body",
        conflicts_with = "body"
    )]
    pub user: Option<String>,
    /// Provider, e.g. google.
    #[arg(
        long,
        value_name = "P",
        required_unless_present = "body",
        conflicts_with = "body"
    )]
    pub provider: Option<String>,
    /// Account name with the provider, e.g. an e-mail address.
    #[arg(
        long,
        value_name = "A",
        required_unless_present = "body",
        conflicts_with = "body"
    )]
    pub account: Option<String>,
    /// Token id to use (default: a fresh one).
    #[arg(long, value_name = "UUID", conflicts_with = "body")]
    pub id: Option<String>,
    #[command(flatten)]
    pub secrets: SecretArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Where provider secrets come from. Never flags: those leak into shell history and `ps`.
#[derive(Args, Debug)]
pub struct SecretArgs {
    /// Read the access token from this file (also: env TOKENLEDGER_ACCESS_TOKEN).
    #[arg(long, value_name = "F", conflicts_with = "access_token_stdin")]
    pub access_token_file: Option<String>,
    /// Read the access token from stdin.
    #[arg(long)]
    pub access_token_stdin: bool,
    /// Read the refresh token from this file (also: env TOKENLEDGER_REFRESH_TOKEN).
    #[arg(long, value_name = "F")]
    pub refresh_token_file: Option<String>,
}

impl SecretArgs {
    /// Adds `accessToken` / `refreshToken` to `body` unless it already has them.
    fn fill(&self, body: &mut Map<String, Value>) -> Result<(), Failure> {
        if !body.contains_key("accessToken") {
            let mut sources = Vec::new();
            if let Some(f) = &self.access_token_file {
                sources.push(SecretSource::File(f));
            }
            if self.access_token_stdin {
                sources.push(SecretSource::Stdin);
            }
            sources.push(SecretSource::Env(ACCESS_TOKEN_ENV));
            let secret = input::secret("accessToken", &sources)?
                .ok_or_else(|| Failure::invalid("accessToken", MISSING_ACCESS_TOKEN))?;
            body.insert("accessToken".into(), Value::String(secret));
        }
        if !body.contains_key("refreshToken") {
            let mut sources = Vec::new();
            if let Some(f) = &self.refresh_token_file {
                sources.push(SecretSource::File(f));
            }
            sources.push(SecretSource::Env(REFRESH_TOKEN_ENV));
            if let Some(s) = input::secret("refreshToken", &sources)? {
                body.insert("refreshToken".into(), Value::String(s));
            }
        }
        Ok(())
    }
}

/// `refresh`.
#[derive(Args, Debug)]
pub struct RefreshArgs {
    /// The access token id.
    #[arg(value_name = "TOKEN", required_unless_present = "body")]
    pub token: Option<String>,
    #[command(flatten)]
    pub secrets: SecretArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `update-access`.
#[derive(Args, Debug)]
pub struct UpdateAccessArgs {
    /// The access token id.
    #[arg(value_name = "TOKEN", required_unless_present = "body")]
    pub token: Option<String>,
    /// New account name.
    #[arg(long, value_name = "A", conflicts_with = "body")]
    pub account: Option<String>,
    /// New provider.
    #[arg(long, value_name = "P", conflicts_with = "body")]
    pub provider: Option<String>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `trash` and `revoke`.
#[derive(Args, Debug)]
pub struct ReasonArgs {
    /// The token id.
    #[arg(value_name = "TOKEN", required_unless_present = "body")]
    pub token: Option<String>,
    /// Why, for the audit trail.
    #[arg(long, value_name = "R", conflicts_with = "body")]
    pub reason: Option<String>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// `purge`.
#[derive(Args, Debug)]
pub struct PurgeArgs {
    /// The token id.
    #[arg(value_name = "TOKEN", required_unless_present = "body")]
    pub token: Option<String>,
    /// Purge even when the token is not in the trash.
    #[arg(long, conflicts_with = "body")]
    pub force: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// The ledger's commands.
#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Issue a client token (prints its token string).
    Issue(IssueArgs),
    /// Change a client token's name, expiry or whole list of groups.
    Update(UpdateArgs),
    /// Assign permission groups to a client token.
    Assign(GroupsArgs),
    /// Unassign permission groups from a client token.
    Unassign(GroupsArgs),
    /// Mint a new string for a client token; the old one stops verifying.
    Rotate(TargetArgs),
    /// Store a user's provider access token (secrets from files, stdin or env).
    Register(RegisterArgs),
    /// Replace an access token's provider secrets.
    Refresh(RefreshArgs),
    /// Change an access token's account name or provider.
    UpdateAccess(UpdateAccessArgs),
    /// Move a token to the trash (it stops verifying; restore brings it back).
    Trash(ReasonArgs),
    /// Take a token out of the trash.
    Restore(TargetArgs),
    /// End a token for good (it stays listable for audit).
    Revoke(ReasonArgs),
    /// Remove a token for good (from the trash, or anywhere with --force).
    Purge(PurgeArgs),
}

fn put(map: &mut Map<String, Value>, key: &str, value: impl Into<Value>) {
    map.insert(key.to_owned(), value.into());
}

/// The wire's group list; an empty id goes through, for the ledger to refuse.
fn groups_json(groups: &[String]) -> Value {
    Value::Array(
        groups
            .iter()
            .map(|g| json!({ "permissionGroupId": g }))
            .collect(),
    )
}

/// A subcommand taken apart: the wire name, the fields its flags give, the
/// token argument, the common flags and, for provider tokens, where secrets come from.
type Parts = (
    CommandName,
    Map<String, Value>,
    Option<String>,
    CommonArgs,
    Option<SecretArgs>,
);

impl TokenCommand {
    /// Splits a parsed subcommand into what [`assemble`] needs.
    fn into_parts(self, ctx: &Ctx) -> Result<Parts, Failure> {
        let mut m = Map::new();
        Ok(match self {
            TokenCommand::Issue(a) => {
                if let Some(n) = a.name {
                    put(&mut m, "name", n);
                }
                if let Some(p) = a.provided_id {
                    put(&mut m, "providedResourceId", p);
                }
                if !a.groups.is_empty() {
                    put(&mut m, "permissionGroups", groups_json(&a.groups));
                }
                if let Some(e) = a.expires {
                    put(&mut m, "expires", input::expires_ms(&e, ctx.now())?);
                }
                if let Some(i) = a.if_exists {
                    let v = match i {
                        IfExistsArg::Reuse => "reuse",
                        IfExistsArg::Fail => "fail",
                    };
                    put(&mut m, "ifExists", v);
                }
                (CommandName::IssueClientToken, m, None, a.common, None)
            }
            TokenCommand::Update(a) => {
                if let Some(n) = a.name {
                    put(&mut m, "name", n);
                } else if a.clear_name {
                    put(&mut m, "name", Value::Null);
                }
                if let Some(e) = a.expires {
                    put(&mut m, "expires", input::expires_ms(&e, ctx.now())?);
                } else if a.clear_expires {
                    put(&mut m, "expires", Value::Null);
                }
                if let Some(g) = a.groups {
                    // `--groups ''` (one empty value) is the documented "none".
                    let none = g.len() == 1 && g[0].is_empty();
                    let g: &[String] = if none { &[] } else { &g };
                    put(&mut m, "permissionGroups", groups_json(g));
                }
                (CommandName::UpdateClientToken, m, a.token, a.common, None)
            }
            TokenCommand::Assign(a) => {
                put(&mut m, "permissionGroups", groups_json(&a.groups));
                (
                    CommandName::AssignPermissionGroups,
                    m,
                    a.token,
                    a.common,
                    None,
                )
            }
            TokenCommand::Unassign(a) => {
                put(&mut m, "permissionGroups", groups_json(&a.groups));
                (
                    CommandName::UnassignPermissionGroups,
                    m,
                    a.token,
                    a.common,
                    None,
                )
            }
            TokenCommand::Rotate(a) => (CommandName::RotateClientToken, m, a.token, a.common, None),
            TokenCommand::Register(a) => {
                if let Some(id) = a.id {
                    put(&mut m, "id", id);
                }
                if let Some(u) = a.user {
                    put(&mut m, "user", json!({ "id": u }));
                }
                if let Some(p) = a.provider {
                    put(&mut m, "provider", p);
                }
                if let Some(acc) = a.account {
                    put(&mut m, "accountName", acc);
                }
                (
                    CommandName::RegisterAccessToken,
                    m,
                    None,
                    a.common,
                    Some(a.secrets),
                )
            }
            TokenCommand::Refresh(a) => (
                CommandName::RefreshAccessToken,
                m,
                a.token,
                a.common,
                Some(a.secrets),
            ),
            TokenCommand::UpdateAccess(a) => {
                if let Some(acc) = a.account {
                    put(&mut m, "accountName", acc);
                }
                if let Some(p) = a.provider {
                    put(&mut m, "provider", p);
                }
                (CommandName::UpdateAccessToken, m, a.token, a.common, None)
            }
            TokenCommand::Trash(a) => {
                if let Some(r) = a.reason {
                    put(&mut m, "reason", r);
                }
                (CommandName::TrashToken, m, a.token, a.common, None)
            }
            TokenCommand::Restore(a) => (CommandName::RestoreToken, m, a.token, a.common, None),
            TokenCommand::Revoke(a) => {
                if let Some(r) = a.reason {
                    put(&mut m, "reason", r);
                }
                (CommandName::RevokeToken, m, a.token, a.common, None)
            }
            TokenCommand::Purge(a) => {
                if a.force {
                    put(&mut m, "force", true);
                }
                (CommandName::PurgeToken, m, a.token, a.common, None)
            }
        })
    }
}

/// Builds the full command body, the JSON the wire carries.
///
/// The body is `--body` when given (the flags that build one conflict with
/// it), else the flags; the common fields are filled in when it lacks them.
/// [`parse_value`] then validates it exactly as the wire would.
pub fn build_body(
    ctx: &Ctx,
    flags: Map<String, Value>,
    token: Option<String>,
    common: &CommonArgs,
    secrets: Option<&SecretArgs>,
) -> Result<Map<String, Value>, Failure> {
    let mut body = match &common.body {
        Some(raw) => input::body(raw)?,
        None => flags,
    };
    if let Some(s) = secrets {
        s.fill(&mut body)?;
    }
    agree(&mut body, "tokenId", token.map(Value::String))?;
    // A workspace from the environment is a default, which a body may
    // override; one typed on the command line must agree with the body.
    let workspace = match &ctx.workspace {
        Some(_) if ctx.workspace_from_env && body.contains_key("workspaceId") => None,
        Some(_) => Some(Value::String(ctx.workspace()?.to_owned())),
        None => None,
    };
    agree(&mut body, "workspaceId", workspace)?;
    if !body.contains_key("workspaceId") {
        // Required: this names the flag to give.
        ctx.workspace()?;
    }
    agree(
        &mut body,
        "commandId",
        common.command_id.clone().map(Value::String),
    )?;
    if !body.contains_key("commandId") {
        body.insert(
            "commandId".into(),
            Value::String(Uuid::new_v4().to_string()),
        );
    }
    let actor = match &ctx.actor {
        Some(_) => Some(ctx.actor_json()?),
        None => None,
    };
    agree(&mut body, "actor", actor)?;
    if !body.contains_key("actor") {
        body.insert("actor".into(), ctx.actor_json()?);
    }
    agree(
        &mut body,
        "expectedVersion",
        common.expected_version.map(|v| json!(v)),
    )?;
    Ok(body)
}

/// Puts `given` (from a flag, an argument or `--workspace`) in `body` as
/// `field`; a `--body` that already says otherwise is refused rather than
/// silently overriding what the command line asked for (another workspace,
/// another token).
fn agree(body: &mut Map<String, Value>, field: &str, given: Option<Value>) -> Result<(), Failure> {
    let Some(given) = given else {
        return Ok(());
    };
    match body.get(field) {
        None => {
            body.insert(field.to_owned(), given);
            Ok(())
        }
        Some(said) if *said == given => Ok(()),
        Some(said) => Err(Failure::invalid(
            field,
            format!("--body says {said} but the command line says {given}: give it once"),
        )),
    }
}

/// Runs one command subcommand: on the data dir, or over NATS with `--nats`.
pub fn run(cmd: TokenCommand, ctx: &Ctx) -> Result<(), Failure> {
    let (name, flags, token, common, secrets) = cmd.into_parts(ctx)?;
    let body = build_body(ctx, flags, token, &common, secrets.as_ref())?;
    // Validate before opening the data dir or connecting: bad input is exit 2
    // whoever holds the data dir, and whether or not a server answers.
    let parsed: ParsedCommand = parse_value(name, Value::Object(body.clone()))?;
    if let Some(urls) = &ctx.nats {
        return crate::remote::execute(ctx, urls, name, body);
    }
    Ledger::with(ctx, |ledger| {
        let committed = ledger.execute(parsed)?;
        print_committed(ctx, ledger, name, &committed, &[])
    })
}

/// Prints a command's result; issue and rotate show the token string they minted.
pub fn print_committed(
    ctx: &Ctx,
    ledger: &Ledger,
    name: CommandName,
    committed: &Committed,
    notes: &[String],
) -> Result<(), Failure> {
    let now = ctx.now();
    let view = match &committed.view {
        Some(v) => {
            let mut v = v.clone().with_expired(now);
            if matches!(
                name,
                CommandName::IssueClientToken | CommandName::RotateClientToken
            ) {
                v.token_str = ledger.store.token_str(&v)?;
            }
            Some(v)
        }
        None => None,
    };
    Reply {
        name,
        token_id: committed.token_id,
        view: view.as_ref(),
        positions: &committed.positions,
        replayed: committed.replayed,
        notes,
    }
    .print(ctx.json, now)
}
