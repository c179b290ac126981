//! Every version of one token: who, when, which event, and what changed.
//!
//! Like a replay, the history comes out of a verification pass, so it is
//! never shown from a log that does not verify. Each entry's changes are the
//! field-level difference between the token's views before and after the
//! event; secrets appear only as their fingerprints (views carry no more).
//! `version`, `updatedAt`, `lastUpdatedAt` and `lastUpdatedBy` change with
//! every event and are left out of the changes: the entry states them.
//!
//! Any [`Source`] will do that holds every event of the token ([`gap`]): a
//! data dir, the stream, or an export from position 1 to the log's head
//! (of every workspace, or of the token's).

use crate::diff::{diff, FieldChange};
use crate::replay::{Extent, Incomplete, Input, Source};
use crate::source::LogReader;
use crate::verify::{Observer, Progress, VerifiedEvent, VerifyOptions};
use crate::{AuditError, Finding};
use ledger_core::{Agent, LedgerState, Timestamp, TokenView};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

/// Fields every event changes, which the entry itself states.
const BOOKKEEPING: &[&str] = &["version", "updatedAt", "lastUpdatedAt", "lastUpdatedBy"];

/// One version of a token.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// The version the event produced.
    pub version: u64,
    /// Its global position.
    pub position: u64,
    /// Its id.
    pub event_id: Uuid,
    /// Its type.
    #[serde(rename = "type")]
    pub event_type: &'static str,
    /// When.
    pub occurred_at: Timestamp,
    /// Who.
    pub actor: Agent,
    /// The event's hash, hex.
    pub hash: String,
    /// What changed in the token's view.
    pub changes: Vec<FieldChange>,
}

struct Collector {
    token: Uuid,
    before: Option<Value>,
    entries: Vec<HistoryEntry>,
    workspace: Option<String>,
}

fn view_value(state: &LedgerState, token: &Uuid) -> Option<Value> {
    let view = TokenView::of(state.token(token)?)?;
    let mut value = serde_json::to_value(view).expect("views serialize");
    if let Value::Object(map) = &mut value {
        for field in BOOKKEEPING {
            map.remove(*field);
        }
    }
    Some(value)
}

impl Observer for Collector {
    fn before(&mut self, state: &LedgerState, event: &VerifiedEvent) {
        if event.env.token_id == self.token {
            self.before = view_value(state, &self.token);
        }
    }

    fn after(&mut self, state: &LedgerState, event: &VerifiedEvent) {
        let env = &event.env;
        if env.token_id != self.token {
            return;
        }
        self.workspace
            .get_or_insert_with(|| env.workspace_id.clone());
        let after = view_value(state, &self.token);
        self.entries.push(HistoryEntry {
            version: env.version,
            position: env.position,
            event_id: env.event_id,
            event_type: env.event_type().as_str(),
            occurred_at: env.occurred_at,
            actor: env.actor.clone(),
            hash: env.hash.clone(),
            changes: diff(self.before.as_ref(), after.as_ref()),
        });
    }
}

/// A token's history, and the workspace it belongs to (`None`: no such token).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct History {
    /// The token.
    pub token_id: Uuid,
    /// Its workspace.
    pub workspace_id: Option<String>,
    /// Every version, oldest first.
    pub entries: Vec<HistoryEntry>,
}

/// Whether `extent` holds every version of any token it holds: it must
/// start at position 1 and run to the log's head (a workspace's export
/// holds its tokens' every event; the tokens of other workspaces are not in
/// it, and the caller says so when one is asked for).
pub fn gap(extent: &Extent) -> Option<Incomplete> {
    let label = &extent.label;
    let reason = if extent.from > 1 {
        format!(
            "{label} starts at position {}: a token's versions before it are not in it; give an export from position 1",
            extent.from
        )
    } else if let Some((to, head)) = extent.ends_early {
        format!(
            "{label} ends at position {to}, before the log's head ({head}) when it was exported: a token's later versions may be missing; give an export to the head"
        )
    } else {
        return None;
    };
    Some(Incomplete {
        input: Input::Source,
        reason,
    })
}

/// The history of `token` in the log of `reader`; `Err(finding)` when the
/// log does not verify.
pub fn token_history(
    reader: &LogReader,
    token: Uuid,
    options: &VerifyOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Result<History, Finding>, AuditError> {
    history_from(&Source::DataDir(reader), token, options, progress)
}

/// The history of `token` in `source`, read whole; `Err(finding)` when it
/// does not verify. [`AuditError::Incomplete`] when the source may lack
/// some of the token's versions ([`gap`]).
pub fn history_from(
    source: &Source<'_>,
    token: Uuid,
    options: &VerifyOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Result<History, Finding>, AuditError> {
    let refuse = |extent: &Extent| match gap(extent) {
        Some(why) => Err(AuditError::Incomplete(why)),
        None => Ok(()),
    };
    refuse(&source.extent()?)?;
    let mut collector = Collector {
        token,
        before: None,
        entries: Vec::new(),
        workspace: None,
    };
    let options = VerifyOptions {
        schema: false,
        ..options.clone()
    };
    let (report, extent) = source.pass(u64::MAX, &options, &mut collector, progress)?;
    refuse(&extent)?;
    if let Some(finding) = report.finding {
        return Ok(Err(finding));
    }
    Ok(Ok(History {
        token_id: token,
        workspace_id: collector.workspace,
        entries: collector.entries,
    }))
}
