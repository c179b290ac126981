//! Printing results: JSON for machines (`--json`), short tables for people.
//!
//! Only results go to stdout; errors and logs go to stderr. Provider secrets
//! never reach this module (views carry fingerprints only); a client token's
//! string appears only when the caller asked for it or the command minted it.

use crate::failure::Failure;
use ledger_core::{Agent, CommandName, Envelope, Timestamp, TokenKind, TokenView};
use serde_json::{json, Value};
use std::io::Write;

/// Prints a JSON value on stdout.
pub fn print_json(value: &Value) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Failure::internal(format!("cannot encode the result: {e}")))?;
    print_text(&text)
}

/// Prints text on stdout, ending it with a newline.
///
/// A reader that closed the pipe early (`| head`) is no failure: the work is
/// done, and whoever piped chose to read less of its result.
pub fn print_text(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{}", text.trim_end()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure::internal(format!("cannot write to stdout: {e}")))
        }
        _ => Ok(()),
    }
}

/// Prints a failure on stderr, as a line or (with `--json`) an object.
pub fn print_failure(failure: &Failure, json: bool) {
    let mut err = std::io::stderr().lock();
    let _ = if json {
        writeln!(err, "{}", failure.to_json())
    } else {
        writeln!(err, "error: {}", failure.line())
    };
}

/// A view as JSON.
pub fn view_json(view: &TokenView) -> Result<Value, Failure> {
    serde_json::to_value(view).map_err(|e| Failure::internal(format!("cannot encode a view: {e}")))
}

/// `active`, `revoked`, `trashed` or `expired`: the first that applies, in that order of finality.
pub fn state(view: &TokenView, now: Timestamp) -> &'static str {
    if view.revoked {
        "revoked"
    } else if view.trash_item.is_some() {
        "trashed"
    } else if view.expired.unwrap_or_else(|| view.is_expired_at(now)) {
        "expired"
    } else {
        "active"
    }
}

/// `type:id`, the form `--actor` takes.
pub fn agent(a: &Agent) -> String {
    format!("{}:{}", a.agent_type.as_str(), a.agent_id)
}

/// A token's name (client) or account (access), for one-line summaries.
pub fn label(view: &TokenView) -> String {
    match view.kind {
        TokenKind::Client => view
            .name
            .clone()
            .or_else(|| {
                view.provided_resource_id
                    .as_ref()
                    .map(|p| format!("(provided id {p})"))
            })
            .unwrap_or_else(|| "-".to_owned()),
        TokenKind::Access => match (&view.provider, &view.account_name) {
            (Some(p), Some(a)) => format!("{a} ({p})"),
            (_, Some(a)) => a.clone(),
            _ => "-".to_owned(),
        },
    }
}

fn millis(ms: i64) -> String {
    match Timestamp::from_millis(ms) {
        Some(t) => format!("{t} ({ms})"),
        None => ms.to_string(),
    }
}

/// Every field of a view worth reading, one per line.
pub fn view_detail(view: &TokenView, now: Timestamp) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("id", view.token_id().to_string()),
        ("kind", view.kind.as_str().to_owned()),
        ("workspace", view.workspace_id.clone()),
    ];
    match view.kind {
        TokenKind::Client => {
            rows.push(("name", view.name.clone().unwrap_or_else(|| "-".into())));
            if let Some(p) = &view.provided_resource_id {
                rows.push(("provided id", p.clone()));
            }
            let groups = view
                .permission_groups
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(|g| g.permission_group_id.as_str())
                .collect::<Vec<_>>();
            rows.push((
                "groups",
                if groups.is_empty() {
                    "-".into()
                } else {
                    groups.join(", ")
                },
            ));
            if let Some(t) = view.issued_at {
                rows.push(("issued at", t.to_string()));
            }
            rows.push((
                "expires",
                view.expires.map(millis).unwrap_or_else(|| "never".into()),
            ));
            if let Some(jwt) = &view.jwt {
                rows.push(("signing key", jwt.kid.clone()));
                rows.push(("string id", jwt.jti.clone()));
                // The string's own expiry: only a rotation moves it, so it
                // can differ from the token's after an update.
                rows.push((
                    "string expires",
                    jwt.exp.map_or_else(
                        || "never".into(),
                        |secs| {
                            Timestamp::from_millis(secs.saturating_mul(1000))
                                .map_or_else(|| format!("{secs} (seconds)"), |t| t.to_string())
                        },
                    ),
                ));
            }
        }
        TokenKind::Access => {
            if let Some(u) = &view.user {
                rows.push(("user", u.id.to_string()));
            }
            rows.push(("provider", view.provider.clone().unwrap_or_default()));
            rows.push(("account", view.account_name.clone().unwrap_or_default()));
            if let Some(d) = &view.display_name {
                rows.push(("display name", d.clone()));
            }
            if let Some(f) = &view.access_token_fingerprint {
                rows.push(("access token", format!("fingerprint {f}")));
            }
            if let Some(f) = &view.refresh_token_fingerprint {
                rows.push(("refresh token", format!("fingerprint {f}")));
            }
        }
    }
    rows.push(("version", view.version.to_string()));
    let mut state_line = state(view, now).to_owned();
    if let Some(r) = &view.revocation {
        state_line.push_str(&format!(
            " (revoked {} by {}{})",
            r.revoked_at,
            agent(&r.revoked_by),
            r.reason
                .as_ref()
                .map(|x| format!(": {x}"))
                .unwrap_or_default()
        ));
    } else if let Some(t) = &view.trash_item {
        state_line.push_str(&format!(
            " (trashed {} by {}{})",
            t.trashed_at,
            agent(&t.trashed_by),
            t.reason
                .as_ref()
                .map(|x| format!(": {x}"))
                .unwrap_or_default()
        ));
    }
    rows.push(("state", state_line));
    rows.push((
        "created",
        format!("{} by {}", view.created_at, agent(&view.created_by)),
    ));
    if let (Some(at), Some(by)) = (&view.last_updated_at, &view.last_updated_by) {
        rows.push(("last updated", format!("{at} by {}", agent(by))));
    }
    if let Some(imp) = &view.import {
        let mut s = format!("from {}, created there {}", imp.source, imp.created_at);
        if let Some(by) = &imp.created_by {
            s.push_str(&format!(" by {}", agent(by)));
        }
        if let Some(u) = imp.updated_at {
            s.push_str(&format!(", updated there {u}"));
        }
        if let Some(v) = imp.source_version {
            s.push_str(&format!(", version {v} there"));
        }
        rows.push(("imported", s));
    }
    if let Some(s) = &view.token_str {
        rows.push(("token str", s.clone()));
    }
    // Only a `get --reveal` carries them.
    if let Some(s) = &view.access_token {
        rows.push(("access token value", s.clone()));
    }
    if let Some(s) = &view.refresh_token {
        rows.push(("refresh token value", s.clone()));
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("  {k:<width$}  {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Aligned columns with a header row.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len() - 1;
        cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = vec![line(header.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

/// The list of tokens as a table.
pub fn token_table(items: &[TokenView], now: Timestamp) -> String {
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|v| {
            vec![
                v.token_id().to_string(),
                v.kind.as_str().to_owned(),
                v.version.to_string(),
                state(v, now).to_owned(),
                label(v),
            ]
        })
        .collect();
    table(&["ID", "KIND", "VERSION", "STATE", "NAME/ACCOUNT"], &rows)
}

/// A token's events as a table.
pub fn history_table(events: &[Envelope]) -> String {
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                e.version.to_string(),
                e.position.to_string(),
                e.occurred_at.to_string(),
                agent(&e.actor),
                e.event_type().as_str().to_owned(),
                crate::watch::summary(&e.data),
            ]
        })
        .collect();
    table(
        &[
            "VERSION",
            "POSITION",
            "OCCURRED AT",
            "ACTOR",
            "TYPE",
            "CHANGE",
        ],
        &rows,
    )
}

/// What a command did, in the past tense.
pub fn verb(name: CommandName) -> &'static str {
    match name {
        CommandName::IssueClientToken => "issued",
        CommandName::UpdateClientToken | CommandName::UpdateAccessToken => "updated",
        CommandName::AssignPermissionGroups => "assigned groups to",
        CommandName::UnassignPermissionGroups => "unassigned groups from",
        CommandName::RotateClientToken => "rotated",
        CommandName::RegisterAccessToken => "registered",
        CommandName::RefreshAccessToken => "refreshed",
        CommandName::TrashToken => "trashed",
        CommandName::RestoreToken => "restored",
        CommandName::RevokeToken => "revoked",
        CommandName::PurgeToken => "purged",
    }
}

/// The reply to a command: `{"token", "positions"}` plus any `notes`.
pub struct Reply<'a> {
    /// The command.
    pub name: CommandName,
    /// The token it was about.
    pub token_id: uuid::Uuid,
    /// Its view after the command (`None` once purged).
    pub view: Option<&'a TokenView>,
    /// Positions appended.
    pub positions: &'a [u64],
    /// True when the same `commandId` had already been executed.
    pub replayed: bool,
    /// Remarks for the caller (e.g. what an import left out).
    pub notes: &'a [String],
}

impl Reply<'_> {
    /// The caller's notes, and one of ours when an update left the token's
    /// string expiring before the token (only a rotation changes its `exp`).
    fn all_notes(&self) -> Vec<String> {
        let mut notes = self.notes.to_vec();
        if let Some(exp) = self
            .view
            .filter(|v| self.name == CommandName::UpdateClientToken && v.string_expires_first())
            .and_then(|v| v.jwt.as_ref().and_then(|j| j.exp))
        {
            let when = Timestamp::from_millis(exp.saturating_mul(1000))
                .map_or_else(|| exp.to_string(), |t| t.to_string());
            notes.push(format!(
                "its current token string still expires at {when} (its signed exp); `rotate` issues one that lasts until the new expiry"
            ));
        }
        notes
    }

    /// Prints the reply.
    pub fn print(&self, json_out: bool, now: Timestamp) -> Result<(), Failure> {
        let notes = self.all_notes();
        if json_out {
            let mut v = json!({
                "token": match self.view { Some(v) => view_json(v)?, None => Value::Null },
                "positions": self.positions,
            });
            if !notes.is_empty() {
                v["notes"] = json!(notes);
            }
            return print_json(&v);
        }
        let kind = self.view.map(|v| v.kind.as_str()).unwrap_or("");
        let at = format!(
            "at position{} {}",
            if self.positions.len() == 1 { "" } else { "s" },
            self.positions
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        // An issue that names a known providedResourceId returns that token,
        // applying any differing fields as an update instead of creating one.
        let reused = self.name == CommandName::IssueClientToken
            && self
                .view
                .is_some_and(|v| v.version > self.positions.len() as u64);
        let mut text = if self.replayed {
            format!(
                "already done: this commandId was executed before; nothing appended (token {})",
                self.token_id
            )
        } else if reused && self.positions.is_empty() {
            format!(
                "reused client token {} (its providedResourceId was issued before); nothing changed",
                self.token_id
            )
        } else if reused {
            format!(
                "reused client token {} (its providedResourceId was issued before) and updated it {at}",
                self.token_id
            )
        } else if self.positions.is_empty() {
            format!(
                "no change to {kind} token {}: nothing appended",
                self.token_id
            )
        } else {
            format!("{} {kind} token {} {at}", verb(self.name), self.token_id).replace("  ", " ")
        };
        if let Some(v) = self.view {
            text.push('\n');
            text.push_str(&view_detail(v, now));
        }
        for note in &notes {
            text.push_str(&format!("\nnote: {note}"));
        }
        print_text(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["A", "BB"],
            &[vec!["xxx".into(), "y".into()], vec!["z".into(), "w".into()]],
        );
        assert_eq!(t, "A    BB\nxxx  y\nz    w");
    }
}
