//! Commands over request/reply: `tokens.cmd.{workspaceId}.{command}`.

use crate::lease::LeaseGuard;
use crate::reply::ReplyLimit;
use crate::subjects::request_parts;
use chrono::Utc;
use ledger_core::command::{self};
use ledger_core::TokenView;
use ledger_core::{validate, CommandName, ErrorCode, Rejection, Timestamp};
use ledger_store::Store;
use serde::Serialize;
use serde_json::value::RawValue;

/// What a command handler needs.
pub(crate) struct CommandContext {
    pub store: Store,
    /// A reply too large for it goes out without the token's view.
    pub reply_limit: ReplyLimit,
    /// Appends only while this instance holds the writer lease.
    pub lease: LeaseGuard,
}

/// Handles one command request; the reply's `result` or the rejection.
///
/// Order of checks (after the size, checked for every endpoint): subject, JSON and field rules (`parse`), the
/// body's workspace against the subject's, then the store. Nothing is
/// appended unless every check before the store passed.
pub(crate) async fn handle(
    ctx: &CommandContext,
    name: CommandName,
    subject: &str,
    payload: &[u8],
) -> Result<Box<RawValue>, Rejection> {
    let workspace = subject_workspace(subject)?;
    let cmd = command::parse(name, payload)?;
    if cmd.workspace_id != workspace {
        return Err(Rejection::invalid(
            "workspaceId",
            format!(
                "workspaceId {:?} differs from the subject's workspace {workspace:?}",
                cmd.workspace_id
            ),
        ));
    }
    ctx.lease.check()?;
    // The string is never stored: it is re-minted from the recorded claims,
    // only where the product shows it (issue and rotate replies); those
    // keep who asked, for the audit record below.
    let shows_string = matches!(
        name,
        CommandName::IssueClientToken | CommandName::RotateClientToken
    )
    .then(|| (cmd.command_id, cmd.actor.clone()));
    let committed = ctx.store.execute(cmd).await?;
    let view = match committed.view {
        None => None,
        Some(mut view) => {
            if let Some((command_id, actor)) = shows_string {
                view.token_str = ctx
                    .store
                    .token_str(&view)
                    .map_err(|e| Rejection::new(ErrorCode::Internal, e.to_string()))?;
                // A string this command did not mint (a retry of its
                // `commandId`, or an issue that found the token by its
                // provided id) is handed out as a reveal would: recorded.
                let minted = !committed.replayed
                    && !committed.positions.is_empty()
                    && (name == CommandName::RotateClientToken || view.version == 1);
                if !minted && view.token_str.is_some() {
                    tracing::info!(
                        target: ledger_store::AUDIT_LOG_TARGET,
                        workspace = %view.workspace_id,
                        token_id = %view.token_id(),
                        command = name.as_str(),
                        command_id = %command_id,
                        retry = committed.replayed,
                        agent_id = %actor.agent_id,
                        agent_type = actor.agent_type.as_str(),
                        "audit: existing token string sent in a reply"
                    );
                }
            }
            Some(view.with_expired(Timestamp::new(Utc::now())))
        }
    };
    accepted(
        committed.token_id,
        &committed.positions,
        view.as_ref(),
        &ctx.reply_limit,
    )
}

/// The result of an accepted command, serialized straight from the view
/// (building a `Value` tree first cost a few µs per command on the
/// server's two cores). When the reply would not fit in one NATS message
/// it goes without the view, not as an error: the command was applied,
/// and an error would say otherwise (`get` shows the view, if it fits).
/// `tokenId` names the token either way (an issue's new token too).
fn accepted(
    token_id: uuid::Uuid,
    positions: &[u64],
    token: Option<&TokenView>,
    limit: &ReplyLimit,
) -> Result<Box<RawValue>, Rejection> {
    let raw = |token| {
        serde_json::value::to_raw_value(&Accepted {
            positions,
            token_id,
            token,
        })
        .map_err(|e| Rejection::new(ErrorCode::Internal, e.to_string()))
    };
    let full = raw(token)?;
    if token.is_none() || limit.fits(&full) {
        return Ok(full);
    }
    tracing::warn!(
        bytes = full.get().len(),
        max_payload = limit.bytes_max(),
        "a command's reply is larger than the NATS server takes: sent without the token's \
         view (raise max_payload)"
    );
    raw(None)
}

/// The result of an accepted command.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Accepted<'a> {
    positions: &'a [u64],
    token_id: uuid::Uuid,
    token: Option<&'a TokenView>,
}

/// The workspace token of a request subject, checked like a body's `workspaceId`.
pub(crate) fn subject_workspace(subject: &str) -> Result<&str, Rejection> {
    let (workspace, _) = request_parts(subject).ok_or_else(|| {
        Rejection::invalid(
            "subject",
            format!("subject {subject:?} is not tokens.<kind>.<workspaceId>.<operation>"),
        )
    })?;
    validate::workspace_id("workspaceId", workspace)?;
    Ok(workspace)
}

/// The rejection for a subject naming no known command.
pub(crate) fn unknown_command(subject: &str) -> Rejection {
    let op = request_parts(subject).map_or(subject, |(_, op)| op);
    let known: Vec<&str> = CommandName::ALL.iter().map(|c| c.as_str()).collect();
    Rejection::new(
        ErrorCode::InvalidInput,
        format!(
            "unknown command {op:?} (subject {subject}); commands are: {}",
            known.join(", ")
        ),
    )
    .with_field("command")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_too_large_for_one_message_goes_without_the_view() {
        let chain = ledger_testkit::renamed_chain(2, "svc");
        let state = ledger_core::state::fold_token(chain.iter()).expect("a state");
        let view = TokenView::of(&state).expect("a view");
        let limit = ReplyLimit::default();
        let with_view = accepted(view.token_id(), &[7], Some(&view), &limit).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(with_view.get()).unwrap();
        assert_eq!(parsed["token"]["resourceId"], view.token_id().to_string());
        // Too small for the view, not for the positions: the command was applied.
        limit.set(with_view.get().len());
        let without = accepted(view.token_id(), &[7], Some(&view), &limit).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(without.get()).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!({"positions": [7], "tokenId": view.token_id(), "token": null})
        );
    }
}
