//! The views as they were at a point of the log, and what changed between two.
//!
//! A replay is a verification pass (without the schema check, which only
//! matters for the bytes, not the views) with an observer that snapshots the
//! state when the log reaches each point: so a replay never presents a
//! history that does not verify, and stops at the first finding instead.
//!
//! Replays and histories ([`crate::history`]) read any [`Source`]: a data
//! dir, an export file, or the JetStream stream, each verified on the way as
//! `audit verify` verifies it. A source that holds less than the whole log
//! answers only what it holds in full ([`Extent`], [`gap`]): an export from
//! a later position lacks its tokens' earlier events, a workspace export the
//! other workspaces' (and with them the times of the positions it skips),
//! an export that ends before the log's head what came after. A question it
//! cannot answer completely is refused ([`Incomplete`]), never answered in
//! part.

use crate::diff::{diff, FieldChange};
use crate::export::{read_header, verify_export_with, ExportHeader};
use crate::nats::{verify_stream, StreamPlan};
use crate::source::LogReader;
use crate::verify::{verify, Observer, Plan, Progress, Report, VerifiedEvent, VerifyOptions};
use crate::{AuditError, Finding};
use ledger_core::{LedgerState, Timestamp, TokenView};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;
use uuid::Uuid;

/// Where a replay or a history reads the log.
#[derive(Clone, Copy)]
pub enum Source<'a> {
    /// The `log` tree of a data dir (locked while a server runs).
    DataDir(&'a LogReader),
    /// An export file (`audit export`), verified whole with its manifest and
    /// inclusion proofs ([`verify_export_with`]).
    Export(&'a Path),
    /// The JetStream stream `TOKENS` from sequence 1 ([`verify_stream`]),
    /// read only as far as the question needs.
    Stream {
        /// A multi-thread runtime that drives the consumer (the pass runs on
        /// the calling thread, which must not be one of its).
        runtime: &'a tokio::runtime::Handle,
        /// The JetStream context.
        js: &'a async_nats::jetstream::Context,
        /// How long to wait for a message.
        idle_timeout: Duration,
    },
}

impl std::fmt::Debug for Source<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::DataDir(_) => f.write_str("DataDir"),
            Source::Export(path) => f.debug_tuple("Export").field(path).finish(),
            Source::Stream { idle_timeout, .. } => f
                .debug_struct("Stream")
                .field("idle_timeout", idle_timeout)
                .finish_non_exhaustive(),
        }
    }
}

impl Source<'_> {
    /// What the source holds. For an export, what its header claims (read
    /// again, and judged again, when the file is verified).
    pub fn extent(&self) -> Result<Extent, AuditError> {
        match self {
            Source::DataDir(_) | Source::Stream { .. } => Ok(Extent::whole()),
            Source::Export(path) => Ok(Extent::of_export(path, &read_header(path)?)),
        }
    }

    /// One verification pass (every check, as `audit verify` runs them)
    /// with `observer`; a data dir is read up to position `to` at most.
    /// Returns the report and what the source held, as the pass read it.
    pub(crate) fn pass(
        &self,
        to: u64,
        options: &VerifyOptions,
        observer: &mut dyn Observer,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(Report, Extent), AuditError> {
        match *self {
            Source::DataDir(reader) => {
                let report = verify(
                    reader.records(1, to),
                    Plan::whole_log(),
                    options,
                    observer,
                    progress,
                )?;
                Ok((report, Extent::whole()))
            }
            Source::Export(path) => {
                let v = verify_export_with(path, &[], options, observer, progress)?;
                Ok((v.report, Extent::of_export(path, &v.header)))
            }
            Source::Stream {
                runtime,
                js,
                idle_timeout,
            } => {
                let plan = StreamPlan {
                    idle_timeout,
                    ..StreamPlan::whole_stream()
                };
                let v = verify_stream(runtime, js, plan, options, observer, progress)?;
                Ok((v.report, Extent::whole()))
            }
        }
    }
}

/// What a source holds of the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extent {
    /// The source, for messages (an export's path).
    pub label: String,
    /// Its first position.
    pub from: u64,
    /// When it ends before the log's head as of its making: (its last
    /// position, that head). `None`: it runs to the head.
    pub ends_early: Option<(u64, u64)>,
    /// It holds only this workspace's events.
    pub workspace: Option<String>,
}

impl Extent {
    /// The whole log (a data dir, the stream).
    pub fn whole() -> Extent {
        Extent {
            label: "the log".into(),
            from: 1,
            ends_early: None,
            workspace: None,
        }
    }

    /// What an export's header says it holds.
    pub fn of_export(path: &Path, header: &ExportHeader) -> Extent {
        Extent {
            label: path.display().to_string(),
            from: header.from,
            ends_early: (header.to < header.head.position)
                .then_some((header.to, header.head.position)),
            workspace: header.workspace_id.clone(),
        }
    }
}

/// What to change in a question a source cannot answer completely.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// The source itself (another export).
    Source,
    /// The workspace asked about.
    Workspace,
    /// The point at this index of those asked for.
    Point(usize),
}

/// Why a source cannot answer a question in full: the answer is refused
/// rather than shown in part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Incomplete {
    /// What to change.
    pub input: Input,
    /// Why, for a person.
    pub reason: String,
}

impl std::fmt::Display for Incomplete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Whether `extent` holds every event the views of `workspace` (all
/// workspaces with `None`) at `points` depend on:
///
/// - from position 1 only (the views need each token's every event);
/// - a workspace's export answers for that workspace only, and at times
///   only: a position it skips is another workspace's event, whose time
///   (which the views are judged at: `expired`) it does not hold;
/// - an export that ends before the log's head answers positions up to its
///   end only: at a time, or a later position, events after its end may
///   count.
pub fn gap(extent: &Extent, points: &[Point], workspace: Option<&str>) -> Option<Incomplete> {
    let label = &extent.label;
    if extent.from > 1 {
        return Some(Incomplete {
            input: Input::Source,
            reason: format!(
                "{label} starts at position {}: the events of its tokens before it are not in it, so it cannot show the views at a point; give an export from position 1",
                extent.from
            ),
        });
    }
    if let Some(held) = &extent.workspace {
        if workspace != Some(held.as_str()) {
            return Some(Incomplete {
                input: Input::Workspace,
                reason: match workspace {
                    None => format!(
                        "{label} holds only workspace {held}'s events: it cannot show every workspace's views; ask for workspace {held}"
                    ),
                    Some(asked) => format!(
                        "{label} holds only workspace {held}'s events, none of workspace {asked}'s"
                    ),
                },
            });
        }
        if let Some(i) = points.iter().position(|p| matches!(p, Point::Position(_))) {
            return Some(Incomplete {
                input: Input::Point(i),
                reason: format!(
                    "{label} holds only workspace {held}'s events: the views at {} are judged at the time of the event there, which may be another workspace's; give a time",
                    points[i]
                ),
            });
        }
    }
    if let Some((to, head)) = extent.ends_early {
        for (i, p) in points.iter().enumerate() {
            let reason = match *p {
                Point::Position(n) if n <= to => continue,
                Point::Position(n) => format!(
                    "position {n} is after the last position of {label} ({to}), and the log went on to {head} when it was exported: the views there are not in it"
                ),
                Point::Time(t) => format!(
                    "{label} ends at position {to}, before the log's head ({head}) when it was exported: the views at {t} may depend on events after it; give a position up to {to}"
                ),
            };
            return Some(Incomplete {
                input: Input::Point(i),
                reason,
            });
        }
    }
    None
}

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

    fn after(&mut self, state: &LedgerState, event: &VerifiedEvent) {
        self.last_position = event.env.position;
        self.last_time = Some(event.env.occurred_at);
        // A position is reached with its own event: no need to read the next.
        for i in 0..self.points.len() {
            if self.taken[i].is_none() && self.points[i] == Point::Position(self.last_position) {
                self.take(i, state);
            }
        }
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
    replay_from(
        &Source::DataDir(reader),
        points,
        workspace,
        options,
        progress,
    )
}

/// Replays `source` and snapshots the views at each point, in the order
/// given. `Err(finding)` when the source does not verify (a data dir or
/// the stream: up to the last point; an export: anywhere).
/// [`AuditError::Incomplete`] when the source cannot show those views in
/// full ([`gap`]).
pub fn replay_from(
    source: &Source<'_>,
    points: &[Point],
    workspace: Option<&str>,
    options: &VerifyOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Result<Vec<Snapshot>, Finding>, AuditError> {
    let refuse = |extent: &Extent| match gap(extent, points, workspace) {
        Some(why) => Err(AuditError::Incomplete(why)),
        None => Ok(()),
    };
    refuse(&source.extent()?)?;
    let bound = points
        .iter()
        .map(|p| p.position_bound())
        .try_fold(0u64, |acc, b| b.map(|b| acc.max(b)));
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
    let (report, extent) = source.pass(
        bound.unwrap_or(u64::MAX),
        &options,
        &mut snapshots,
        progress,
    )?;
    // The file as verified, which may not be the one first looked at.
    refuse(&extent)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn export(from: u64, to: u64, head: u64, workspace: Option<&str>) -> Extent {
        Extent {
            label: "x.jsonl".into(),
            from,
            ends_early: (to < head).then_some((to, head)),
            workspace: workspace.map(str::to_owned),
        }
    }

    fn time() -> Point {
        Point::parse("2026-03-02T00:00:00Z").unwrap()
    }

    fn input(e: &Extent, points: &[Point], ws: Option<&str>) -> Option<Input> {
        gap(e, points, ws).map(|g| g.input)
    }

    #[test]
    fn a_whole_source_answers_everything() {
        let points = [Point::Position(1_000), time()];
        assert_eq!(input(&Extent::whole(), &points, None), None);
        assert_eq!(input(&export(1, 9, 9, None), &points, Some("acme")), None);
        assert_eq!(crate::history::gap(&export(1, 9, 9, Some("acme"))), None);
    }

    #[test]
    fn a_later_start_is_refused_for_views_and_histories() {
        let e = export(4, 9, 9, None);
        assert_eq!(input(&e, &[Point::Position(9)], None), Some(Input::Source));
        let why = crate::history::gap(&e).unwrap();
        assert_eq!(why.input, Input::Source);
        assert!(why.reason.contains("starts at position 4"), "{why}");
    }

    #[test]
    fn a_workspace_export_answers_its_workspace_at_times() {
        let e = export(1, 9, 9, Some("acme"));
        assert_eq!(input(&e, &[time()], Some("acme")), None);
        assert_eq!(input(&e, &[time()], None), Some(Input::Workspace));
        assert_eq!(input(&e, &[time()], Some("globex")), Some(Input::Workspace));
        assert_eq!(
            input(&e, &[time(), Point::Position(3)], Some("acme")),
            Some(Input::Point(1))
        );
    }

    #[test]
    fn an_export_that_ends_early_answers_positions_up_to_its_end() {
        let e = export(1, 5, 9, None);
        assert_eq!(input(&e, &[Point::Position(5)], None), None);
        assert_eq!(
            input(&e, &[Point::Position(2), Point::Position(6)], None),
            Some(Input::Point(1))
        );
        assert_eq!(input(&e, &[time()], None), Some(Input::Point(0)));
        assert_eq!(
            crate::history::gap(&e).map(|g| g.input),
            Some(Input::Source)
        );
    }
}
