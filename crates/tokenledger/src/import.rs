//! `import`: records exported from the systems the seeds describe.
//!
//! * A primaERP `AccessToken` (dates as `"/Date(ms)/"`, a nested `user` of
//!   which only `id` matters) becomes `register_access_token`, keeping its `id`.
//! * A fimidara `IClientAssignedToken` becomes `issue_client_token`, keeping
//!   its `resourceId`, `issuedAt` and group assignments.
//!
//! The writable fields of a record are put into the same JSON body a caller
//! would send and go through `parse_value`, so an import is validated exactly
//! like a command (workspace pattern, lowercase UUIDs, lengths). The fields
//! only an import may set (original ids, times and agents) are checked with
//! the same `ledger_core::validate` helpers and attached afterwards.

use crate::app::{Ctx, Ledger};
use crate::commands::print_committed;
use crate::failure::Failure;
use crate::input;
use clap::{Args, ValueEnum};
use ledger_core::command::{parse_value, ImportOrigin, ImportedClientFields, ParsedCommand};
use ledger_core::event::AssignedPermissionGroup;
use ledger_core::validate::{self, AGENT_ID_LEN_MAX};
use ledger_core::{Agent, AgentType, Command, CommandName, Timestamp};
use ledger_store::Committed;
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// Source name recorded in `import.source` for primaERP records.
pub const SOURCE_PRIMAERP: &str = "primaerp";
/// Source name recorded in `import.source` for fimidara records.
pub const SOURCE_FIMIDARA: &str = "fimidara";

/// Top-level fields of a primaERP access token; anything else is refused.
const PRIMAERP_FIELDS: &[&str] = &[
    "accessToken",
    "accountName",
    "createdAt",
    "displayName",
    "id",
    "provider",
    "refreshToken",
    "trashItem",
    "updatedAt",
    "user",
    "version",
];

/// Fields of a fimidara `IClientAssignedToken`; anything else is refused.
const FIMIDARA_FIELDS: &[&str] = &[
    "createdAt",
    "createdBy",
    "expires",
    "issuedAt",
    "lastUpdatedAt",
    "lastUpdatedBy",
    "name",
    "permissionGroups",
    "providedResourceId",
    "resourceId",
    "tokenStr",
    "version",
    "workspaceId",
];

/// Fields of a fimidara `IAssignedPermissionGroup`.
const FIMIDARA_GROUP_FIELDS: &[&str] = &["assignedAt", "assignedBy", "order", "permissionGroupId"];

/// Which exporter wrote the record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Tell from the fields.
    Auto,
    /// A primaERP access token.
    Primaerp,
    /// A fimidara client-assigned token.
    Fimidara,
}

/// `import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The record, a JSON object (- for stdin).
    #[arg(value_name = "FILE")]
    pub file: String,
    /// The record's format.
    #[arg(long, value_enum, default_value = "auto")]
    pub format: Format,
    /// Idempotency key [default: derived from the workspace and the record,
    /// its secrets left out, so running the same import again, as after a
    /// crash, finishes it or answers it, and never imports it twice].
    #[arg(long, value_name = "UUID")]
    pub command_id: Option<String>,
}

/// An import ready to execute.
pub struct Plan {
    /// The creating command.
    pub command: ParsedCommand,
    /// A follow-up `trash_token` when the record was in the source's trash.
    pub trash: Option<ParsedCommand>,
    /// What the import left out or changed, for the caller.
    pub notes: Vec<String>,
}

/// Runs `import`.
pub fn run(args: ImportArgs, ctx: &Ctx) -> Result<(), Failure> {
    // An import's origin fields are accepted from the importer only, never from the wire.
    if ctx.nats.is_some() {
        return Err(Failure::invalid(
            "nats",
            "import works on the data dir only: run it without --nats, on a data dir no server holds",
        ));
    }
    let text = input::read_source("file", &args.file)?;
    let record: Value = ledger_core::json::parse_strict(text.as_bytes()).map_err(|e| {
        Failure::invalid(
            "file",
            format!("malformed JSON: {}", ledger_core::json::error_text(&e)),
        )
    })?;
    let command_id = match &args.command_id {
        Some(id) => id.clone(),
        None => record_command_id(&record, ctx.workspace.as_deref()).to_string(),
    };
    let plan = plan(&record, args.format, ctx, &command_id)?;
    let name = plan.command.command.name();
    Ledger::with(ctx, |ledger| {
        let created = ledger.execute(plan.command)?;
        // The trash has its own id derived from the import's, so a retry
        // after a crash between the two finishes the import, and a retry
        // after both is answered by both.
        let committed = match plan.trash {
            Some(trash) => {
                let trashed = ledger.execute(trash)?;
                Committed {
                    positions: [created.positions, trashed.positions].concat(),
                    ..trashed
                }
            }
            None => created,
        };
        print_committed(ctx, ledger, name, &committed, &plan.notes)
    })
}

/// Turns a record into the commands that import it.
pub fn plan(record: &Value, format: Format, ctx: &Ctx, command_id: &str) -> Result<Plan, Failure> {
    let Value::Object(map) = record else {
        return Err(Failure::invalid("file", "a record is a JSON object"));
    };
    let format = match format {
        Format::Auto => detect(map)?,
        f => f,
    };
    match format {
        Format::Primaerp => primaerp(map, ctx, command_id),
        Format::Fimidara => fimidara(map, ctx, command_id),
        Format::Auto => unreachable!("detected above"),
    }
}

/// Tells the format from fields only one of them has.
fn detect(map: &Map<String, Value>) -> Result<Format, Failure> {
    let has = |keys: &[&str]| keys.iter().any(|k| map.contains_key(*k));
    let fimidara = has(&["resourceId", "tokenStr", "permissionGroups", "issuedAt"]);
    let primaerp = has(&["accessToken", "accountName", "provider", "user"]);
    match (primaerp, fimidara) {
        (true, false) => Ok(Format::Primaerp),
        (false, true) => Ok(Format::Fimidara),
        _ => Err(Failure::invalid(
            "format",
            "cannot tell the record's format from its fields: give --format primaerp or --format fimidara",
        )),
    }
}

fn check_fields(map: &Map<String, Value>, known: &[&str], what: &str) -> Result<(), Failure> {
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    match keys.into_iter().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(Failure::invalid(
            k.as_str(),
            format!("unknown field {k} in a {what}"),
        )),
        None => Ok(()),
    }
}

/// A present, non-null field.
fn field<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).filter(|v| !v.is_null())
}

/// A date as exporters write it: `"/Date(ms)/"` (optionally with a `+hhmm`
/// offset, which does not change the instant), RFC 3339, or epoch ms.
pub fn date(field: &str, value: &Value) -> Result<Timestamp, Failure> {
    let bad = || {
        Failure::invalid(
            field,
            format!("cannot read the date {value}: expected \"/Date(ms)/\", RFC 3339 or epoch milliseconds"),
        )
    };
    let ms = match value {
        Value::Number(n) => n.as_i64().ok_or_else(bad)?,
        Value::String(s) => match s.strip_prefix("/Date(").and_then(|r| r.strip_suffix(")/")) {
            Some(inner) => {
                // The offset sign comes after the first character (which may be a minus).
                let digits = match inner.get(1..).and_then(|r| r.find(['+', '-'])) {
                    Some(i) => {
                        let (ms, offset) = inner.split_at(i + 1);
                        let offset = &offset[1..];
                        if offset.len() != 4 || !offset.bytes().all(|b| b.is_ascii_digit()) {
                            return Err(bad());
                        }
                        ms
                    }
                    None => inner,
                };
                digits.parse::<i64>().map_err(|_| bad())?
            }
            None => return Timestamp::parse(s).ok_or_else(bad),
        },
        _ => return Err(bad()),
    };
    Timestamp::from_millis(ms).ok_or_else(bad)
}

fn source_version(map: &Map<String, Value>) -> Result<Option<u64>, Failure> {
    match field(map, "version") {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| Failure::invalid("version", "must be a non-negative integer")),
    }
}

/// A token id that is a function of a command id and a record's account (a
/// random-looking v4 UUID).
fn id_for_command(command_id: &str, account: &str) -> Uuid {
    derived_id(b"tokenledger import token id\0", command_id, account)
}

/// The default `commandId` of an import: the same record into the same
/// workspace gets the same one. A fresh one per run would make a retry after
/// a crash between the register and the trash a new command, refused as a
/// duplicate before the trash ran, so a record from the source's trash
/// would stay live. The secrets are left out of the hash: the `commandId`
/// is in every event, and a digest of a secret would let anyone test
/// guesses of it.
fn record_command_id(record: &Value, workspace: Option<&str>) -> Uuid {
    let mut shown = record.clone();
    if let Value::Object(map) = &mut shown {
        for secret in ["accessToken", "refreshToken", "tokenStr"] {
            map.remove(secret);
        }
    }
    // serde_json's maps are sorted, so equal records print the same.
    derived_id(
        b"tokenledger import command\0",
        workspace.unwrap_or(""),
        &shown.to_string(),
    )
}

/// A UUID that the import's command id and `extra` determine, for `purpose`.
fn derived_id(purpose: &[u8], command_id: &str, extra: &str) -> Uuid {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(purpose)
        .chain_update(command_id.as_bytes())
        .chain_update(b"\0")
        .chain_update(extra.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// Common fields of the body every import sends.
fn base_body(
    workspace_id: &str,
    ctx: &Ctx,
    command_id: &str,
) -> Result<Map<String, Value>, Failure> {
    let mut body = Map::new();
    body.insert("workspaceId".into(), json!(workspace_id));
    body.insert("commandId".into(), json!(command_id));
    body.insert("actor".into(), ctx.actor_json()?);
    Ok(body)
}

fn primaerp(map: &Map<String, Value>, ctx: &Ctx, command_id: &str) -> Result<Plan, Failure> {
    check_fields(map, PRIMAERP_FIELDS, "primaERP access token")?;
    let workspace_id = ctx.workspace()?;
    let mut notes = Vec::new();
    let mut body = base_body(workspace_id, ctx, command_id)?;
    for key in [
        "id",
        "provider",
        "accountName",
        "accessToken",
        "refreshToken",
    ] {
        if let Some(v) = field(map, key) {
            body.insert(key.into(), v.clone());
        }
    }
    if !body.contains_key("id") {
        // Known up front so that a follow-up trash can name the token, and
        // derived from the command id and the record's account so that a
        // retry (same --command-id, same record) names the same token and
        // is answered as one, while another record under that id names
        // another token and is refused.
        let account = [
            field(map, "user").and_then(|u| u.get("id")),
            field(map, "provider"),
            field(map, "accountName"),
        ]
        .map(|v| v.map_or_else(String::new, Value::to_string))
        .join("\0");
        body.insert(
            "id".into(),
            json!(id_for_command(command_id, &account).to_string()),
        );
    }
    // Only the user's id matters; the rest of the user object belongs to primaERP.
    match field(map, "user") {
        Some(Value::Object(user)) => {
            let id = user.get("id").cloned().unwrap_or(Value::Null);
            body.insert("user".into(), json!({ "id": id }));
        }
        Some(_) => return Err(Failure::invalid("user", "must be an object with an id")),
        None => {}
    }
    let created_at = match field(map, "createdAt") {
        Some(v) => date("createdAt", v)?,
        None => {
            notes.push("the record has no createdAt: the import time stands in for it".into());
            ctx.now()
        }
    };
    let updated_at = field(map, "updatedAt")
        .map(|v| date("updatedAt", v))
        .transpose()?;
    let source_version = source_version(map)?;
    if let Some(d) = field(map, "displayName") {
        let account = field(map, "accountName");
        if Some(d) != account {
            notes.push(format!(
                "displayName {d} is not kept: the ledger derives displayName from accountName"
            ));
        }
    }

    let mut command = parse_value(CommandName::RegisterAccessToken, Value::Object(body))?;
    match &mut command.command {
        Command::RegisterAccessToken { import, .. } => {
            *import = Some(ImportOrigin {
                created_at,
                created_by: None,
                source: SOURCE_PRIMAERP.into(),
                source_version,
                updated_at,
            });
        }
        other => unreachable!("parsed {} as register_access_token", other.name()),
    }

    let trash = match field(map, "trashItem") {
        None => None,
        Some(item) if !item.is_object() => {
            return Err(Failure::invalid(
                "trashItem",
                "expected primaERP's TrashItem (an object) or null",
            ))
        }
        Some(_) => {
            let token_id = command
                .command
                .token_id()
                .expect("the body always carries an id");
            notes.push("the record was in primaERP's trash: it is trashed here too".into());
            let trash_id = derived_id(b"tokenledger import trash\0", command_id, "");
            let mut body = base_body(workspace_id, ctx, &trash_id.to_string())?;
            body.insert("tokenId".into(), json!(token_id.to_string()));
            body.insert(
                "reason".into(),
                json!("in the trash of primaERP when imported"),
            );
            Some(parse_value(CommandName::TrashToken, Value::Object(body))?)
        }
    };
    Ok(Plan {
        command,
        trash,
        notes,
    })
}

/// A fimidara agent (`{agentId, agentType}`) as a ledger agent.
fn fimidara_agent(field_name: &str, value: &Value) -> Result<Agent, Failure> {
    let Value::Object(obj) = value else {
        return Err(Failure::invalid(
            field_name,
            "must be an agent {agentId, agentType}",
        ));
    };
    check_fields(obj, &["agentId", "agentType"], "fimidara agent").map_err(|f| {
        Failure::invalid(
            format!("{field_name}.{}", f.field.unwrap_or_default()),
            f.message,
        )
    })?;
    let id_field = format!("{field_name}.agentId");
    let agent_id = obj
        .get("agentId")
        .and_then(Value::as_str)
        .ok_or_else(|| Failure::invalid(&id_field, "must be a string"))?;
    validate::text(&id_field, agent_id, AGENT_ID_LEN_MAX)?;
    let type_field = format!("{field_name}.agentType");
    let agent_type = match obj.get("agentType").and_then(Value::as_str) {
        Some("user") => AgentType::User,
        Some("client-assigned-token" | "clientAssignedToken" | "client_token") => {
            AgentType::ClientToken
        }
        Some("program-access-token" | "programAccessToken" | "service") => AgentType::Service,
        Some("system") => AgentType::System,
        other => {
            return Err(Failure::invalid(
                type_field,
                format!(
                    "unknown agent type {}: expected user, client-assigned-token, program-access-token or system",
                    other.map(|s| format!("{s:?}")).unwrap_or_else(|| "(none)".into())
                ),
            ))
        }
    };
    Ok(Agent {
        agent_id: agent_id.to_owned(),
        agent_type,
    })
}

fn required<'a>(map: &'a Map<String, Value>, key: &str) -> Result<&'a Value, Failure> {
    field(map, key).ok_or_else(|| Failure::invalid(key, format!("{key} is required")))
}

fn fimidara(map: &Map<String, Value>, ctx: &Ctx, command_id: &str) -> Result<Plan, Failure> {
    check_fields(map, FIMIDARA_FIELDS, "fimidara client token")?;
    let mut notes = Vec::new();
    let workspace_id = match (field(map, "workspaceId"), &ctx.workspace) {
        (Some(Value::String(rec)), Some(flag)) if rec != flag => {
            return Err(Failure::invalid(
                "workspaceId",
                format!("the record belongs to workspace {rec:?}, not {flag:?} (--workspace)"),
            ))
        }
        (Some(Value::String(rec)), _) => rec.clone(),
        (Some(_), _) => return Err(Failure::invalid("workspaceId", "must be a string")),
        (None, _) => ctx.workspace()?.to_owned(),
    };
    let resource_id = match required(map, "resourceId")? {
        Value::String(s) => validate::uuid("resourceId", s)?,
        _ => return Err(Failure::invalid("resourceId", "must be a string")),
    };
    let issued_at = date("issuedAt", required(map, "issuedAt")?)?;
    let created_at = date("createdAt", required(map, "createdAt")?)?;
    let created_by = fimidara_agent("createdBy", required(map, "createdBy")?)?;
    let updated_at = field(map, "lastUpdatedAt")
        .map(|v| date("lastUpdatedAt", v))
        .transpose()?;
    if let Some(by) = field(map, "lastUpdatedBy") {
        let by = fimidara_agent("lastUpdatedBy", by)?;
        notes.push(format!(
            "lastUpdatedBy ({}:{}) is not kept: the ledger records its own updaters",
            by.agent_type.as_str(),
            by.agent_id
        ));
    }
    let source_version = source_version(map)?;
    if field(map, "tokenStr").is_some() {
        notes.push(
            "tokenStr ignored: the ledger mints its own token string (shown here); \
             the old string does not verify against this ledger"
                .into(),
        );
    }

    // Group assignments as recorded, in their `order` when every one has it.
    let mut groups: Vec<(Option<i64>, String, Timestamp, Agent)> = Vec::new();
    if let Some(list) = field(map, "permissionGroups") {
        let Value::Array(list) = list else {
            return Err(Failure::invalid("permissionGroups", "must be an array"));
        };
        for (i, g) in list.iter().enumerate() {
            let at = format!("permissionGroups[{i}]");
            let Value::Object(g) = g else {
                return Err(Failure::invalid(at, "must be an assigned group object"));
            };
            check_fields(
                g,
                FIMIDARA_GROUP_FIELDS,
                "fimidara assigned permission group",
            )
            .map_err(|f| {
                Failure::invalid(format!("{at}.{}", f.field.unwrap_or_default()), f.message)
            })?;
            let id = g
                .get("permissionGroupId")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    Failure::invalid(format!("{at}.permissionGroupId"), "must be a string")
                })?;
            let assigned_at = date(
                &format!("{at}.assignedAt"),
                g.get("assignedAt").unwrap_or(&Value::Null),
            )?;
            let assigned_by = fimidara_agent(
                &format!("{at}.assignedBy"),
                g.get("assignedBy").unwrap_or(&Value::Null),
            )?;
            let order = g.get("order").and_then(Value::as_i64);
            groups.push((order, id.to_owned(), assigned_at, assigned_by));
        }
        if groups.iter().all(|g| g.0.is_some()) {
            groups.sort_by_key(|g| g.0);
        }
    }

    let mut body = base_body(&workspace_id, ctx, command_id)?;
    for key in ["name", "providedResourceId", "expires"] {
        if let Some(v) = field(map, key) {
            body.insert(key.into(), v.clone());
        }
    }
    if !groups.is_empty() {
        let ids: Vec<Value> = groups
            .iter()
            .map(|g| json!({ "permissionGroupId": g.1 }))
            .collect();
        body.insert("permissionGroups".into(), Value::Array(ids));
    }
    // An import must create: reusing a token by its provided id would silently merge two records.
    body.insert("ifExists".into(), json!("fail"));

    let mut command = parse_value(CommandName::IssueClientToken, Value::Object(body))?;
    match &mut command.command {
        Command::IssueClientToken {
            import,
            permission_group_ids,
            ..
        } => {
            // The parser validated and deduplicated the ids; keep each one's first assignment.
            let permission_groups = permission_group_ids
                .iter()
                .flatten()
                .map(|id| {
                    let g = groups
                        .iter()
                        .find(|g| &g.1 == id)
                        .expect("every parsed id comes from the record");
                    AssignedPermissionGroup {
                        assigned_at: g.2,
                        assigned_by: g.3.clone(),
                        permission_group_id: id.clone(),
                    }
                })
                .collect();
            *import = Some(Box::new(ImportedClientFields {
                resource_id,
                issued_at,
                permission_groups,
                origin: ImportOrigin {
                    created_at,
                    created_by: Some(created_by),
                    source: SOURCE_FIMIDARA.into(),
                    source_version,
                    updated_at,
                },
            }));
        }
        other => unreachable!("parsed {} as issue_client_token", other.name()),
    }
    Ok(Plan {
        command,
        trash: None,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> Ctx {
        Ctx {
            data_dir: "unused".into(),
            json: false,
            workspace: Some("acme".into()),
            workspace_from_env: false,
            actor: Some("user:tester".into()),
            nats: None,
            nats_access: Default::default(),
            snapshot_min_events: 10_000,
        }
    }

    #[test]
    fn dotnet_dates() {
        let t = date("d", &json!("/Date(1489385953498)/")).unwrap();
        assert_eq!(t.millis(), 1_489_385_953_498);
        let t = date("d", &json!("/Date(1489385953498+0100)/")).unwrap();
        assert_eq!(t.millis(), 1_489_385_953_498);
        let t = date("d", &json!("/Date(-1000)/")).unwrap();
        assert_eq!(t.millis(), -1000);
        assert_eq!(
            date("d", &json!("2017-03-13T06:19:13.498Z"))
                .unwrap()
                .millis(),
            1_489_385_953_498
        );
        for bad in [
            json!("/Date(x)/"),
            json!("/Date(1+01)/"),
            json!(true),
            json!("yesterday"),
        ] {
            assert_eq!(
                date("d", &bad).unwrap_err().field.as_deref(),
                Some("d"),
                "{bad}"
            );
        }
    }

    #[test]
    fn detects_formats() {
        let p = json!({"accessToken": "x", "provider": "google"});
        let f = json!({"resourceId": "x", "tokenStr": "y"});
        assert_eq!(detect(p.as_object().unwrap()).unwrap(), Format::Primaerp);
        assert_eq!(detect(f.as_object().unwrap()).unwrap(), Format::Fimidara);
        let both = json!({"accessToken": "x", "resourceId": "y"});
        assert!(detect(both.as_object().unwrap()).is_err());
    }

    #[test]
    fn primaerp_record_validates_like_a_command() {
        let record = json!({
            "id": "C2FB2DBE-39EB-421A-B07C-5A14671FBBB5",
            "provider": "google", "accessToken": "a", "accountName": "x",
            "user": {"id": "71c84cd2-91ac-4e6b-a74e-393c87d5f97d"}
        });
        let f = plan(&record, Format::Auto, &ctx(), &Uuid::new_v4().to_string())
            .err()
            .unwrap();
        assert_eq!(f.field.as_deref(), Some("id"));
        let record = json!({"provider": "google", "accessToken": "a", "accountName": "x",
            "user": {"id": "71c84cd2-91ac-4e6b-a74e-393c87d5f97d"}, "password": "p"});
        let f = plan(&record, Format::Auto, &ctx(), &Uuid::new_v4().to_string())
            .err()
            .unwrap();
        assert_eq!(f.field.as_deref(), Some("password"));
    }

    #[test]
    fn fimidara_agents_map_to_ledger_agents() {
        let a = fimidara_agent(
            "createdBy",
            &json!({"agentId": "x", "agentType": "program-access-token"}),
        )
        .unwrap();
        assert_eq!(a.agent_type, AgentType::Service);
        let f = fimidara_agent("createdBy", &json!({"agentId": "x", "agentType": "public"}))
            .unwrap_err();
        assert_eq!(f.field.as_deref(), Some("createdBy.agentType"));
    }
}
