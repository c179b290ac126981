//! The subjects of the NATS surface, built and parsed in one place.
//!
//! * commands: `tokens.cmd.{workspaceId}.{command}`
//! * queries: `tokens.query.{workspaceId}.{get|list|history|reveal}`
//! * events: `tokens.evt.{workspaceId}.{tokenId}.{type}` (stream [`STREAM_NAME`])
//! * verification and keys: [`VERIFY`], [`JWKS`], [`SNAPSHOT`], [`KEYS_ROTATE`], [`KEYS_LIST`]
//!
//! Command and query subjects are kept out of the stream's subjects, or the
//! stream would answer requests itself.

use ledger_core::{CommandName, Envelope};

pub use ledger_core::event::STREAM_NAME;
/// Subjects captured by [`STREAM_NAME`].
pub const STREAM_SUBJECTS: &str = "tokens.evt.>";
/// The micro service's name (`$SRV.PING.tokenledger`).
pub const SERVICE_NAME: &str = "tokenledger";
/// Queue group of every instance's command and query endpoints.
pub const QUEUE_GROUP: &str = "tokenledger";
/// Queue group of the catch-alls answering unknown commands and queries.
///
/// It must differ from [`QUEUE_GROUP`]: nats-server merges queue
/// subscriptions of one group name across every subject that matches a
/// message, so a `tokens.cmd.*.*` catch-all in the same group would take a
/// share of the known commands away from their endpoints. In its own group
/// it sees every command once (per group), answers only the unknown ones
/// and drops the rest unanswered.
pub const CATCH_ALL_QUEUE_GROUP: &str = "tokenledger-unknown";

/// The queries, by the last token of their subject.
pub const QUERY_NAMES: [&str; 4] = ["get", "list", "history", "reveal"];

/// Subject of a command endpoint: `tokens.cmd.*.{command}`.
pub fn command_endpoint(name: CommandName) -> String {
    format!("tokens.cmd.*.{name}")
}

/// Subject of a query endpoint: `tokens.query.*.{query}`.
pub fn query_endpoint(query: &str) -> String {
    format!("tokens.query.*.{query}")
}

/// Verification of a token string (`{"tokenStr"}` in, an introspection out).
pub const VERIFY: &str = "tokens.verify";
/// The public signing keys, as a JWKS.
pub const JWKS: &str = "tokens.jwks";
/// A page of client token statuses with the log position they are consistent with.
pub const SNAPSHOT: &str = "tokens.snapshot";
/// Rotation of the signing key while serving.
pub const KEYS_ROTATE: &str = "tokens.admin.keys.rotate";
/// The signing keys (public facts) and their history.
pub const KEYS_LIST: &str = "tokens.admin.keys.list";

/// The catch-all subject for commands.
pub const ANY_COMMAND: &str = "tokens.cmd.*.*";
/// The catch-all subject for queries.
pub const ANY_QUERY: &str = "tokens.query.*.*";

/// Subject of an event: `tokens.evt.{workspaceId}.{tokenId}.{type}`.
pub fn event_subject(env: &Envelope) -> String {
    env.subject()
}

/// The workspace (second-to-last token) and operation (last token) of a
/// four-token request subject such as `tokens.cmd.acme.issue_client_token`.
pub fn request_parts(subject: &str) -> Option<(&str, &str)> {
    let mut it = subject.split('.');
    let (_tokens, _kind, workspace, op) = (it.next()?, it.next()?, it.next()?, it.next()?);
    if it.next().is_some() {
        return None;
    }
    Some((workspace, op))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_subjects_split_into_workspace_and_operation() {
        assert_eq!(
            request_parts("tokens.cmd.acme.issue_client_token"),
            Some(("acme", "issue_client_token"))
        );
        assert_eq!(request_parts("tokens.cmd.acme"), None);
        assert_eq!(request_parts("tokens.cmd.a.b.c"), None);
        assert_eq!(
            command_endpoint(CommandName::PurgeToken),
            "tokens.cmd.*.purge_token"
        );
    }
}
