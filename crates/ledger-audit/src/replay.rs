//! The views as they were at a point of the log, and what changed between two.
//!
//! A replay is a verification pass (without the schema check, which only
//! matters for the bytes, not the views) with an observer that snapshots the
//! state when the log reaches each point: so a replay never presents a
//! history that does not verify, and stops at the first finding instead.

use crate::diff::{diff, FieldChange};
use crate::source::LogReader;
use crate::verify::{verify, Observer, Plan, Progress, VerifiedEvent, VerifyOptions};
use crate::{AuditError, Finding};
use ledger_core::{LedgerState, Timestamp, TokenView};
use serde::Serialize;
use std::collections::BTreeMap;
use uuid::Uuid;

/// A point of the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Point {
    /// After every event up to this position, inclusive.
    Position(u64),
    /// After every event that occurred at or before this instant.
    Time(Timestamp),
}

impl Point {
    /// A position (digits) or an RFC 3339 time.
    pub fn parse(text: &str) -> Option<Point> {
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return text.parse().ok().map(Point::Position);
        }
        Timestamp::parse(text).map(Point::Time)
    }

    /// The last position the point can need.
    fn position_bound(self) -> Option<u64> {
        match self {
            Point::Position(p) => Some(p),
            Point::Time(_) => None,
        }
    }
}

impl std::fmt::Display for Point {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Point::Position(p) => write!(f, "position {p}"),
            Point::Time(t) => write!(f, "{t}"),
        }
    }
}

/// The views at a point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// The point asked for.
    pub point: Point,
    /// The last position replayed (0 before the first event).
    pub position: u64,
    /// The time views are judged at (`expired`): the point's time, or the
    /// last replayed event's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
    /// Every token with a view then (purged tokens have none), by id.
    pub tokens: BTreeMap<Uuid, TokenView>,
}

struct Snapshots<'a> {
    points: Vec<Point>,
    taken: Vec<Option<Snapshot>>,
    workspace: Option<&'a str>,
    last_position: u64,
    last_time: Option<Timestamp>,
}

impl Snapshots<'_> {
    fn take(&mut self, i: usize, state: &LedgerState) {
        let point = self.points[i];
        let at = match point {
            Point::Time(t) => Some(t),
            Point::Position(_) => self.last_time,
        };
        let tokens = state
            .tokens()
            .filter(|t| self.workspace.is_none_or(|w| t.workspace_id == w))
            .filter_map(|t| {
                let view = TokenView::of(t)?;
                Some((t.id, at.map_or(view.clone(), |at| view.with_expired(at))))
            })
            .collect();
        self.taken[i] = Some(Snapshot {
            point,
            position: self.last_position,
            at,
            tokens,
        });
    }
}

impl Observer for Snapshots<'_> {
    fn before(&mut self, state: &LedgerState, event: &VerifiedEvent) {
        for i in 0..self.points.len() {
            if self.taken[i].is_some() {
                continue;
            }
            let passed = match self.points[i] {
                Point::Position(p) => event.env.position > p,
                Point::Time(t) => event.env.occurred_at > t,
            };
            if passed {
                self.take(i, state);
            }
        }
    }

    fn after(&mut self, _state: &LedgerState, event: &VerifiedEvent) {
        self.last_position = event.env.position;
        self.last_time = Some(event.env.occurred_at);
    }

    fn done(&self) -> bool {
        self.taken.iter().all(Option::is_some)
    }

    fn finish(&mut self, state: &LedgerState) {
        for i in 0..self.points.len() {
            if self.taken[i].is_none() {
                self.take(i, state);
            }
        }
    }
}

/// Replays the log of `reader` and snapshots the views at each point, in
/// the order given. `Err(finding)` when the log does not verify up to the
/// last point.
pub fn replay(
    reader: &LogReader,
    points: &[Point],
    workspace: Option<&str>,
    options: &VerifyOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Result<Vec<Snapshot>, Finding>, AuditError> {
    let bound = points
        .iter()
        .map(|p| p.position_bound())
        .try_fold(0u64, |acc, b| b.map(|b| acc.max(b)));
    let to = bound.unwrap_or(u64::MAX);
    let mut snapshots = Snapshots {
        points: points.to_vec(),
        taken: vec![None; points.len()],
        workspace,
        last_position: 0,
        last_time: None,
    };
    let options = VerifyOptions {
        schema: false,
        ..options.clone()
    };
    let report = verify(
        reader.records(1, to),
        Plan::whole_log(),
        &options,
        &mut snapshots,
        progress,
    )?;
    if let Some(finding) = report.finding {
        return Ok(Err(finding));
    }
    Ok(Ok(snapshots
        .taken
        .into_iter()
        .map(|s| s.expect("finish takes every point"))
        .collect()))
}

/// How one token differs between two snapshots.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    tag = "change"
)]
pub enum TokenChange {
    /// It has a view at B only (created, or restored from… nothing: created).
    Added {
        /// The token.
        token_id: Uuid,
        /// Its view at B.
        token: Box<TokenView>,
    },
    /// It has a view at A only (purged in between).
    Removed {
        /// The token.
        token_id: Uuid,
        /// Its view at A.
        token: Box<TokenView>,
    },
    /// Its view differs.
    Changed {
        /// The token.
        token_id: Uuid,
        /// The fields that differ.
        changes: Vec<FieldChange>,
    },
}

/// What changed from snapshot `a` to snapshot `b`, token by token (id order).
pub fn diff_snapshots(a: &Snapshot, b: &Snapshot) -> Vec<TokenChange> {
    let mut ids: Vec<&Uuid> = a.tokens.keys().chain(b.tokens.keys()).collect();
    ids.sort();
    ids.dedup();
    ids.into_iter()
        .filter_map(|id| match (a.tokens.get(id), b.tokens.get(id)) {
            (None, Some(v)) => Some(TokenChange::Added {
                token_id: *id,
                token: Box::new(v.clone()),
            }),
            (Some(v), None) => Some(TokenChange::Removed {
                token_id: *id,
                token: Box::new(v.clone()),
            }),
            (Some(x), Some(y)) => {
                let x = serde_json::to_value(x).expect("views serialize");
                let y = serde_json::to_value(y).expect("views serialize");
                let changes = diff(Some(&x), Some(&y));
                (!changes.is_empty()).then_some(TokenChange::Changed {
                    token_id: *id,
                    changes,
                })
            }
            (None, None) => None,
        })
        .collect()
}
