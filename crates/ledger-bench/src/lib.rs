//! Shared helpers of the benchmarks: command builders and timing.

use ledger_core::command::{parse_value, ParsedCommand};
use ledger_core::CommandName;
use serde_json::json;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// An `issue_client_token` command with a unique name, about 400 bytes once evented.
pub fn issue(i: u64) -> ParsedCommand {
    parse_value(
        CommandName::IssueClientToken,
        json!({
            "commandId": Uuid::new_v4().to_string(),
            "workspaceId": format!("ws{}", i % 16),
            "actor": {"agentId": "bench", "agentType": "service"},
            "name": format!("token-{i}"),
            "permissionGroups": [{"permissionGroupId": "readers"}],
        }),
    )
    .expect("valid command")
}

/// A change to an existing client token, cycling through the kinds of change
/// a long-lived token sees: groups assigned and unassigned, a rotation, a rename.
pub fn change(workspace: &str, token: Uuid, i: u64) -> ParsedCommand {
    let id = token.to_string();
    let (name, body) = match i % 4 {
        0 => (
            CommandName::AssignPermissionGroups,
            json!({"tokenId": id, "permissionGroups": [{"permissionGroupId": format!("g{i}")}]}),
        ),
        1 => (
            CommandName::UnassignPermissionGroups,
            json!({"tokenId": id, "permissionGroups": [{"permissionGroupId": format!("g{}", i - 1)}]}),
        ),
        2 => (CommandName::RotateClientToken, json!({"tokenId": id})),
        _ => (
            CommandName::UpdateClientToken,
            json!({"tokenId": id, "name": format!("renamed-{i}")}),
        ),
    };
    let mut body = body;
    body["commandId"] = json!(Uuid::new_v4().to_string());
    body["workspaceId"] = json!(workspace);
    body["actor"] = json!({"agentId": "bench", "agentType": "service"});
    parse_value(name, body).expect("valid command")
}

/// Runs `f` and returns its result with the elapsed time.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed())
}

/// Operations per second.
pub fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}
