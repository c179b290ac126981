//! Subscribers: the ledger's events from the JetStream stream `TOKENS`,
//! resumable at any position.
//!
//! The ledger publishes event `p` of its log as stream sequence `p`, on
//! `tokens.evt.{workspaceId}.{tokenId}.{type}`. A [`Subscription`] reads
//! that stream through an ordered consumer (ephemeral, no acks, recreated
//! by async-nats from the last sequence it saw when it detects a gap, a
//! lost heartbeat or a reconnection) filtered on the subject of an
//! [`EventFilter`], and checks every message before yielding it:
//!
//! * it must decode as an envelope, its `hash` must recompute, its
//!   position must equal its stream sequence, and its subject and
//!   `Nats-Msg-Id` must be those of its body; without a filter, its
//!   `prevHash` must be the `hash` of the event before it. A message that
//!   fails is yielded as one [`ClientError::BadEvent`] item, then skipped;
//! * a stream sequence at or below the last one processed is a redelivery
//!   and is dropped, and so is an event whose (`tokenId`, `version`) was
//!   already yielded: nothing is yielded twice, even across the consumer's
//!   recreations. (A recreation that happens before the first message is
//!   delivered restarts, in async-nats 0.51, from the beginning of the
//!   stream instead of the requested start; those earlier messages are
//!   dropped here too.)
//!
//! * events the subscription should have delivered but the stream no
//!   longer holds (an operator's `max_age`, `max_msgs` or `max_bytes` on
//!   `TOKENS` removed them; the ledger never does) are one
//!   [`ClientError::EventsGone`] item naming the positions, never a silent
//!   skip: found when a consumer starts (at or after the stream's first
//!   sequence), and, without a filter, from a jump in the sequence. With a
//!   filter, a removal that happens while the consumer runs can still pass
//!   unseen, since filtered sequences jump anyway.
//!
//! After the NATS connection is re-established, the subscription replaces
//! its consumer with a new one at its cursor (the old one may be gone with
//! a restarted server). If the consumer fails in a way async-nats does not
//! recover from, the
//! subscription yields one [`ClientError::JetStream`] item and creates a new
//! consumer at [`Subscription::next_position`], with backoff, until it
//! succeeds; so errors are never terminal, and the stream ends only when it
//! is dropped. To resume in another process, remember
//! [`Subscription::next_position`] (or the last envelope's `position + 1`)
//! and subscribe with [`StartFrom::Position`].

use crate::ClientError;
use async_nats::jetstream::consumer::pull::{Ordered, OrderedConfig};
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::{self, Message};
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use ledger_core::{Envelope, EventType};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use uuid::Uuid;

pub use ledger_core::event::STREAM_NAME;
/// First pause before re-creating a failed consumer; doubles up to [`REOPEN_BACKOFF_MAX`].
const REOPEN_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest pause between attempts to re-create a failed consumer.
const REOPEN_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often a subscription looks at the connection's reconnect count.
///
/// After a reconnection the consumer may be gone (a restarted nats-server
/// drops in-memory ordered consumers); async-nats notices that only after
/// about 15 s of retries, so the subscription re-creates its consumer at its
/// cursor as soon as it sees a reconnection (within this period) instead.
const RECONNECT_POLL: Duration = Duration::from_millis(200);

/// Which events a subscription receives; every part given must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only this workspace.
    pub workspace: Option<String>,
    /// Only this token.
    pub token: Option<Uuid>,
    /// Only these types; every type when empty.
    pub types: Vec<EventType>,
}

impl EventFilter {
    /// Every event.
    pub fn all() -> EventFilter {
        EventFilter::default()
    }
    /// Only events of this workspace.
    pub fn workspace(mut self, workspace: impl Into<String>) -> EventFilter {
        self.workspace = Some(workspace.into());
        self
    }
    /// Only events of this token.
    pub fn token(mut self, token: Uuid) -> EventFilter {
        self.token = Some(token);
        self
    }
    /// Only events of these types.
    pub fn types(mut self, types: impl IntoIterator<Item = EventType>) -> EventFilter {
        self.types = types.into_iter().collect();
        self
    }

    /// True when the filter lets the event through.
    pub fn matches(&self, env: &Envelope) -> bool {
        self.workspace
            .as_deref()
            .is_none_or(|w| w == env.workspace_id)
            && self.token.is_none_or(|t| t == env.token_id)
            && (self.types.is_empty() || self.types.contains(&env.event_type()))
    }

    /// The consumer's one filter subject: `tokens.evt.{ws|*}.{token|*}.{type|*}`.
    ///
    /// One subject, so that the consumer's create request names it and NATS
    /// permissions can confine a user to its workspace (see [`open`]).
    /// Several types make the type token `*`; the subscription drops the
    /// other types itself ([`EventFilter::matches`]).
    pub fn subject(&self) -> Result<String, ClientError> {
        let workspace = match &self.workspace {
            Some(w) => {
                ledger_core::validate::workspace_id("workspace", w)
                    .map_err(ClientError::Invalid)?;
                w.clone()
            }
            None => "*".to_owned(),
        };
        let token = self.token.map_or_else(|| "*".to_owned(), |t| t.to_string());
        let ty = match self.types.first() {
            Some(first) if self.types.iter().all(|t| t == first) => first.as_str(),
            _ => "*",
        };
        Ok(format!(
            "{}.{workspace}.{token}.{ty}",
            ledger_core::event::EVENT_SUBJECT_PREFIX
        ))
    }

    fn is_everything(&self) -> bool {
        self.workspace.is_none() && self.token.is_none() && self.types.is_empty()
    }
}

/// Where a subscription starts.
///
/// (Not named `From`, which would shadow the prelude's `From` trait.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartFrom {
    /// The first event of the log.
    Start,
    /// The event at this position (stream sequence), inclusive: `last.position + 1` resumes.
    Position(u64),
    /// Events appended after [`crate::Client::subscribe`] returns.
    New,
}

/// A live stream of the ledger's events; see the [module docs](self).
///
/// Items are `Ok(envelope)` in position order, each event at most once, or
/// `Err` for a bad message or a consumer failure, after which it goes on.
pub struct Subscription {
    inner: BoxStream<'static, Result<Envelope, ClientError>>,
    next: Arc<AtomicU64>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("next_position", &self.next_position())
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// The first stream position not yet processed: subscribe with
    /// `StartFrom::Position(this)` to continue exactly after what was yielded.
    pub fn next_position(&self) -> u64 {
        self.next.load(Ordering::Acquire)
    }

    /// [`StartFrom::Position`] of [`Subscription::next_position`].
    pub fn resume_from(&self) -> StartFrom {
        StartFrom::Position(self.next_position())
    }
}

impl Stream for Subscription {
    type Item = Result<Envelope, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

/// Opens a subscription: the consumer is created before this returns, so
/// with [`StartFrom::New`] every event appended afterwards is delivered.
pub(crate) async fn subscribe(
    js: jetstream::Context,
    filter: EventFilter,
    from: StartFrom,
    name: String,
) -> Result<Subscription, ClientError> {
    let subject = filter.subject()?;
    let start = match from {
        StartFrom::Start => 1,
        StartFrom::Position(p) => p.max(1),
        StartFrom::New => {
            let stream = js.get_stream(STREAM_NAME).await.map_err(|e| {
                ClientError::JetStream(format!(
                    "stream {STREAM_NAME} (is a ledger server running?): {e}"
                ))
            })?;
            stream.cached_info().state.last_sequence + 1
        }
    };
    let stats = js.client().statistics();
    let connects = stats.connects.load(Ordering::Relaxed);
    let (ordered, first) = open(&js, &subject, start, name).await?;
    let next = Arc::new(AtomicU64::new(start));
    let mut state = State {
        js,
        stats,
        connects,
        subject,
        cursor: Cursor::new(start, filter.is_everything()),
        filter,
        ordered: Some(ordered),
        retry: None,
        next: next.clone(),
        gone: None,
        pending: None,
    };
    state.note_first(first);
    let inner = futures_util::stream::unfold(state, |mut state| async move {
        let item = state.next_item().await;
        Some((item, state))
    })
    .boxed();
    Ok(Subscription { inner, next })
}

/// A new consumer's name: random, so that no one can guess it to pull from it.
pub(crate) fn consumer_name() -> String {
    format!("tl-{}", Uuid::new_v4().simple())
}

/// Creates an ordered consumer on `TOKENS` starting at stream sequence
/// `start`; with the stream's first sequence once it exists, so that the
/// caller can tell whether events before it are gone.
async fn open(
    js: &jetstream::Context,
    subject: &str,
    start: u64,
    name: String,
) -> Result<(Ordered, u64), ClientError> {
    // Named, with one filter subject: async-nats then asks
    // `$JS.API.CONSUMER.CREATE.TOKENS.{name}.{filter}`, a subject NATS
    // permissions can match, so a user allowed only
    // `...TOKENS.*.tokens.evt.acme.>` reads acme's events and no one else's
    // (the server refuses a body whose filter differs from the subject's).
    // Recreations keep the name. The name is random, so no one else can
    // guess it to pull from this consumer.
    let config = OrderedConfig {
        name: Some(name),
        deliver_policy: DeliverPolicy::ByStartSequence {
            start_sequence: start,
        },
        filter_subject: subject.to_owned(),
        ..OrderedConfig::default()
    };
    let consumer = js
        .create_consumer_on_stream(config, STREAM_NAME)
        .await
        .map_err(|e| {
            ClientError::JetStream(format!("creating a consumer on {STREAM_NAME}: {e}"))
        })?;
    // Read after the consumer exists: anything removed before it started
    // shows here. (An empty stream's first sequence is its last + 1.) A
    // subscriber without the right to read the stream's state still gets
    // its events, without this check (the jump check still works unfiltered).
    let first = match js.get_stream(STREAM_NAME).await {
        Ok(stream) => stream.cached_info().state.first_sequence,
        Err(e) => {
            tracing::debug!(error = %e, "the stream's first sequence is unknown; gaps before the start go unreported");
            0
        }
    };
    let ordered = consumer
        .messages()
        .await
        .map_err(|e| ClientError::JetStream(format!("consuming {STREAM_NAME}: {e}")))?;
    Ok((ordered, first))
}

struct State {
    js: jetstream::Context,
    /// The connection's counters, for its reconnections.
    stats: Arc<async_nats::Statistics>,
    /// Connections made when the current consumer was created.
    connects: u64,
    /// The consumer's filter subject.
    subject: String,
    /// What to yield: the subject cannot say it for several types.
    filter: EventFilter,
    ordered: Option<Ordered>,
    /// Pause before the next attempt to create a consumer, after a failure.
    retry: Option<Duration>,
    cursor: Cursor,
    next: Arc<AtomicU64>,
    /// Positions found gone when the consumer started, to report first.
    gone: Option<(u64, u64)>,
    /// A message held back while the gap before it is reported.
    pending: Option<Message>,
}

impl State {
    /// Notes the stream's first sequence after a consumer (re)start: the
    /// positions from the cursor up to it are gone, and the cursor moves on.
    fn note_first(&mut self, first: u64) {
        if first > self.cursor.next {
            self.gone = Some((self.cursor.next, first - 1));
            self.cursor.skip_to(first);
            self.next.store(self.cursor.next, Ordering::Release);
        }
    }

    async fn next_item(&mut self) -> Result<Envelope, ClientError> {
        if let Some((from, to)) = self.gone.take() {
            return Err(ClientError::EventsGone { from, to });
        }
        if let Some(message) = self.pending.take() {
            let outcome = self.cursor.accept(&message);
            self.next.store(self.cursor.next, Ordering::Release);
            if let Some(item) = self.wanted(outcome) {
                return item;
            }
        }
        loop {
            let ordered = match &mut self.ordered {
                Some(o) => o,
                None => {
                    if let Some(pause) = self.retry {
                        tokio::time::sleep(pause).await;
                    }
                    let connects = self.stats.connects.load(Ordering::Relaxed);
                    match open(&self.js, &self.subject, self.cursor.next, consumer_name()).await {
                        Ok((o, first)) => {
                            self.retry = None;
                            self.connects = connects;
                            self.note_first(first);
                            if let Some((from, to)) = self.gone.take() {
                                self.ordered = Some(o);
                                return Err(ClientError::EventsGone { from, to });
                            }
                            self.ordered.insert(o)
                        }
                        Err(e) => {
                            self.backoff();
                            return Err(e);
                        }
                    }
                }
            };
            let reconnected = async {
                let mut tick = tokio::time::interval(RECONNECT_POLL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if self.stats.connects.load(Ordering::Relaxed) != self.connects {
                        return;
                    }
                }
            };
            let next = tokio::select! {
                biased;
                next = ordered.next() => next,
                () = reconnected => {
                    // Start over at the cursor; what the old consumer had
                    // in flight comes again and is dropped as seen.
                    self.ordered = None;
                    continue;
                }
            };
            let message = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    self.ordered = None;
                    self.backoff();
                    return Err(ClientError::JetStream(format!(
                        "consumer failed, resuming at position {}: {e}",
                        self.cursor.next
                    )));
                }
                None => {
                    // Ended without an error: start a new consumer where we are.
                    self.ordered = None;
                    continue;
                }
            };
            let outcome = self.cursor.accept(&message);
            self.next.store(self.cursor.next, Ordering::Release);
            if let Some(item) = self.wanted(outcome) {
                if matches!(item, Err(ClientError::EventsGone { .. })) {
                    // The message itself comes next, once the gap is told.
                    self.pending = Some(message);
                }
                return item;
            }
        }
    }

    /// Drops a good event the filter does not match (the subject lets every
    /// type through when several were asked for); errors always pass.
    fn wanted(
        &self,
        outcome: Option<Result<Envelope, ClientError>>,
    ) -> Option<Result<Envelope, ClientError>> {
        match outcome {
            Some(Ok(env)) if !self.filter.matches(&env) => None,
            other => other,
        }
    }

    fn backoff(&mut self) {
        self.retry = Some(
            self.retry
                .map_or(REOPEN_BACKOFF_MIN, |d| (d * 2).min(REOPEN_BACKOFF_MAX)),
        );
    }
}

/// What has been processed: the next stream sequence expected, the last
/// version yielded per token, and the hash of the previous message.
#[derive(Debug)]
pub(crate) struct Cursor {
    /// First stream sequence not processed yet.
    next: u64,
    /// Highest version yielded, per token.
    versions: HashMap<Uuid, u64>,
    /// Check `prevHash` links (only when nothing is filtered out).
    chain: bool,
    /// Stream sequence and `hash` of the last good message, for the link check.
    last: Option<(u64, String)>,
}

impl Cursor {
    pub(crate) fn new(start: u64, chain: bool) -> Cursor {
        Cursor {
            next: start,
            versions: HashMap::new(),
            chain,
            last: None,
        }
    }

    fn accept(&mut self, message: &Message) -> Option<Result<Envelope, ClientError>> {
        let sequence = match message.info() {
            Ok(info) => info.stream_sequence,
            Err(e) => {
                return Some(Err(ClientError::JetStream(format!(
                    "a message without JetStream metadata: {e}"
                ))))
            }
        };
        let msg_id = message
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str());
        self.check(sequence, message.subject.as_str(), msg_id, &message.payload)
    }

    /// Moves past positions that will never come.
    fn skip_to(&mut self, next: u64) {
        self.next = self.next.max(next);
        self.last = None;
    }

    /// `None`: a redelivery or a duplicate, skipped. Otherwise the event or
    /// why it is bad; either way the cursor moves past `sequence`. Without
    /// a filter a jump past `next` is [`ClientError::EventsGone`] instead,
    /// and the cursor moves up to `sequence` only: check it again.
    pub(crate) fn check(
        &mut self,
        sequence: u64,
        subject: &str,
        msg_id: Option<&str>,
        payload: &[u8],
    ) -> Option<Result<Envelope, ClientError>> {
        if sequence < self.next {
            return None;
        }
        if self.chain && sequence > self.next {
            let from = self.next;
            self.skip_to(sequence);
            return Some(Err(ClientError::EventsGone {
                from,
                to: sequence - 1,
            }));
        }
        let previous = self.last.take();
        self.next = sequence + 1;
        let bad = |reason: String| Some(Err(ClientError::BadEvent { sequence, reason }));
        let env = match Envelope::from_json(payload) {
            Ok(env) => env,
            Err(e) => return bad(format!("does not decode: {e}")),
        };
        let computed = env.computed_hash();
        if env.hash != computed {
            return bad(format!(
                "hash {:?} does not recompute (the body hashes to {computed})",
                env.hash
            ));
        }
        if env.position != sequence {
            return bad(format!("the event says position {}", env.position));
        }
        let expected = env.subject();
        if subject != expected {
            return bad(format!("published on {subject}, its body says {expected}"));
        }
        let event_id = env.event_id.to_string();
        if msg_id != Some(event_id.as_str()) {
            return bad(format!(
                "Nats-Msg-Id {msg_id:?} differs from eventId {event_id}"
            ));
        }
        if self.chain {
            if let Some((seq, hash)) = &previous {
                if *seq + 1 == sequence && env.prev_hash != *hash {
                    return bad(format!(
                        "prevHash {} does not link to the hash of position {seq}",
                        env.prev_hash
                    ));
                }
            }
        }
        self.last = Some((sequence, env.hash.clone()));
        let seen = self.versions.entry(env.token_id).or_insert(0);
        if env.version <= *seen {
            return None;
        }
        *seen = env.version;
        Some(Ok(env))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_testkit::trash_restore_chain;

    fn feed(c: &mut Cursor, seq: u64, e: &Envelope) -> Option<Result<Envelope, ClientError>> {
        c.check(
            seq,
            &e.subject(),
            Some(&e.event_id.to_string()),
            &e.to_json_bytes(),
        )
    }

    #[test]
    fn redeliveries_and_repeated_versions_are_dropped() {
        let events = trash_restore_chain(4);
        let mut c = Cursor::new(1, true);
        assert_eq!(feed(&mut c, 1, &events[0]).unwrap().unwrap(), events[0]);
        assert_eq!(feed(&mut c, 2, &events[1]).unwrap().unwrap(), events[1]);
        // A recreated consumer delivers 1 and 2 again: nothing comes out.
        assert!(feed(&mut c, 1, &events[0]).is_none());
        assert!(feed(&mut c, 2, &events[1]).is_none());
        assert_eq!(c.next, 3);
        assert_eq!(feed(&mut c, 3, &events[2]).unwrap().unwrap(), events[2]);
        // The same (token, version) at a later sequence is not yielded twice
        // (it is refused anyway: its position is not the sequence).
        assert!(feed(&mut c, 4, &events[2]).unwrap().is_err());
        let mut c = Cursor::new(1, false);
        let mut same_version = events[3].clone();
        same_version.version = 1;
        same_version.hash = same_version.computed_hash();
        feed(&mut c, 1, &events[0]).unwrap().unwrap();
        assert!(feed(&mut c, 4, &same_version).is_none());
    }

    #[test]
    fn a_jump_in_an_unfiltered_stream_is_events_gone_then_the_event() {
        let events = trash_restore_chain(4);
        let mut c = Cursor::new(1, true);
        assert_eq!(feed(&mut c, 1, &events[0]).unwrap().unwrap(), events[0]);
        // Positions 2 and 3 were removed from the stream.
        match feed(&mut c, 4, &events[3]) {
            Some(Err(ClientError::EventsGone { from: 2, to: 3 })) => {}
            other => panic!("{other:?}"),
        }
        // The same message again (the subscription holds it back) is the event.
        assert_eq!(feed(&mut c, 4, &events[3]).unwrap().unwrap(), events[3]);
        assert_eq!(c.next, 5);
        // With a filter, sequences jump by design: no gap is claimed.
        let mut c = Cursor::new(1, false);
        assert_eq!(feed(&mut c, 1, &events[0]).unwrap().unwrap(), events[0]);
        assert_eq!(feed(&mut c, 4, &events[3]).unwrap().unwrap(), events[3]);
    }

    #[test]
    fn a_start_position_drops_what_comes_before_it() {
        let events = trash_restore_chain(3);
        let mut c = Cursor::new(3, true);
        assert!(feed(&mut c, 1, &events[0]).is_none());
        assert!(feed(&mut c, 2, &events[1]).is_none());
        assert_eq!(feed(&mut c, 3, &events[2]).unwrap().unwrap(), events[2]);
    }

    #[test]
    fn bad_messages_become_one_error_item_each() {
        let events = trash_restore_chain(3);
        let code = |r: Option<Result<Envelope, ClientError>>| r.unwrap().unwrap_err().code();

        // A changed body whose hash was not recomputed.
        let mut v = events[0].to_json_value();
        v["data"]["reason"] = "tampered".into();
        let mut c = Cursor::new(1, true);
        let bytes = serde_json::to_vec(&v).unwrap();
        let r = c.check(
            1,
            &events[0].subject(),
            Some(&events[0].event_id.to_string()),
            &bytes,
        );
        assert!(
            matches!(&r, Some(Err(ClientError::BadEvent { sequence: 1, reason })) if reason.contains("recompute")),
            "{r:?}"
        );
        // The cursor moved on: the next event is fine.
        assert_eq!(feed(&mut c, 2, &events[1]).unwrap().unwrap(), events[1]);

        let mut c = Cursor::new(1, true);
        assert_eq!(code(c.check(1, "x", None, b"{}")), "bad_event");
        assert_eq!(
            code(feed(&mut c, 2, &events[0])),
            "bad_event",
            "position != sequence"
        );
        let mut c = Cursor::new(1, true);
        assert_eq!(
            code(c.check(
                1,
                "tokens.evt.other.x.y",
                Some(&events[0].event_id.to_string()),
                &events[0].to_json_bytes()
            )),
            "bad_event"
        );
        let mut c = Cursor::new(1, true);
        assert_eq!(
            code(c.check(
                1,
                &events[0].subject(),
                Some("other"),
                &events[0].to_json_bytes()
            )),
            "bad_event"
        );

        // A broken link: event 3 after a different event 2.
        let other = trash_restore_chain(3);
        let mut c = Cursor::new(1, true);
        feed(&mut c, 1, &events[0]).unwrap().unwrap();
        let mut c2 = Cursor::new(2, true);
        assert!(
            feed(&mut c2, 2, &other[1]).unwrap().is_ok(),
            "no link to check at the start"
        );
        feed(&mut c, 2, &events[1]).unwrap().unwrap();
        let mut forged = other[2].clone();
        forged.token_id = events[0].token_id;
        forged.hash = forged.computed_hash();
        let r = feed(&mut c, 3, &forged).unwrap().unwrap_err();
        assert!(r.to_string().contains("prevHash"), "{r}");
        // Unchecked when filtered (the previous event may be filtered out).
        let mut c = Cursor::new(1, false);
        feed(&mut c, 1, &events[0]).unwrap().unwrap();
        feed(&mut c, 2, &events[1]).unwrap().unwrap();
        assert!(feed(&mut c, 3, &forged).unwrap().is_ok());
    }

    #[test]
    fn a_filter_becomes_one_subject() {
        let t = Uuid::nil();
        assert_eq!(EventFilter::all().subject().unwrap(), "tokens.evt.*.*.*");
        assert_eq!(
            EventFilter::all()
                .workspace("acme")
                .token(t)
                .subject()
                .unwrap(),
            format!("tokens.evt.acme.{t}.*")
        );
        assert_eq!(
            EventFilter::all()
                .workspace("acme")
                .types([EventType::TokenRevoked, EventType::TokenRevoked])
                .subject()
                .unwrap(),
            "tokens.evt.acme.*.token_revoked"
        );
        // Several types: every type on the wire, the others dropped here.
        assert_eq!(
            EventFilter::all()
                .types([EventType::TokenRevoked, EventType::TokenTrashed])
                .subject()
                .unwrap(),
            "tokens.evt.*.*.*"
        );
        assert_eq!(
            EventFilter::all()
                .workspace("a.b")
                .subject()
                .unwrap_err()
                .code(),
            "invalid_input"
        );
        let e = &trash_restore_chain(1)[0];
        assert!(EventFilter::all().workspace("acme").matches(e));
        assert!(!EventFilter::all().workspace("other").matches(e));
        assert!(!EventFilter::all()
            .types([EventType::TokenPurged])
            .matches(e));
    }
}
