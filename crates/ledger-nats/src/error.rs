//! Why the NATS surface stopped, each reason with a stable code.
//!
//! Rejections of single requests are not errors of this kind: they are
//! replied to the caller (see [`crate::reply`]). A [`NatsError`] ends
//! [`crate::run`].

use ledger_store::StoreError;

/// Why [`crate::run`] could not start or had to stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NatsError {
    /// The configuration cannot work (no URL, a window out of bounds, ...).
    #[error("invalid NATS configuration: {0}")]
    Config(String),
    /// The client could not be set up (e.g. an unparseable URL); unreachable
    /// servers are retried, never reported here.
    #[error("cannot connect to NATS: {0}")]
    Connect(String),
    /// A NATS authentication or TLS setting cannot work (a missing file, a
    /// seed that is not a user's, a certificate without its key).
    #[error("NATS access: {0}")]
    Access(#[from] crate::access::AccessError),
    /// NATS refused the credentials, or the TLS handshake failed: retrying
    /// with the same settings cannot help.
    #[error("NATS refused the connection to {urls}: {reason}")]
    Refused {
        /// The servers, passwords redacted.
        urls: String,
        /// What NATS or TLS said.
        reason: String,
    },
    /// The stream `TOKENS` could not be created, read or brought to our config.
    #[error("JetStream stream TOKENS: {0}")]
    Stream(String),
    /// The micro service or one of its endpoints could not be started.
    #[error("NATS micro service: {0}")]
    Service(String),
    /// The stream holds more messages than the log has events: something else
    /// wrote to it, or it belongs to another log. Publishing would interleave
    /// two histories, so the ledger refuses.
    #[error(
        "the stream TOKENS is ahead of the log (stream last sequence {stream_last}, log head \
         {log_head}): it was written by something else or belongs to another data dir; refusing \
         to publish. If this data dir's log is the one the stream must hold, delete the stream \
         (nats stream rm TOKENS) and start again: it is recreated and refilled from the log, \
         position 1 to {log_head}"
    )]
    StreamAhead {
        /// Last sequence of the stream.
        stream_last: u64,
        /// Last position of the log.
        log_head: u64,
    },
    /// The message at a sequence is not the log's event at that position.
    #[error(
        "the stream TOKENS diverged from the log at sequence {sequence}: message id {found:?}, the \
         log's event there is {expected}; refusing to publish (events from position {sequence} \
         on stay in the log, unpublished). If this data dir's log is the one the stream must \
         hold, delete the stream (nats stream rm TOKENS) and start again: it is recreated and \
         refilled from the log"
    )]
    StreamDiverged {
        /// The sequence (= position) checked.
        sequence: u64,
        /// `eventId` of the log's event at that position.
        expected: String,
        /// `Nats-Msg-Id` found in the stream, if any.
        found: Option<String>,
    },
    /// Another instance took the writer lease while this one held it: it
    /// must stop appending, or two logs would be acknowledged.
    #[error(
        "the writer lease was taken over by {holder}; this instance stopped appending. Run one \
         ledger per stream TOKENS (see the README, \"One writer\")"
    )]
    LeaseLost {
        /// Who holds it now, as far as the bucket says.
        holder: String,
    },
    /// The views (the projector's tree) could not be opened.
    #[error("views: {0}")]
    Views(String),
    /// The log could not be read or shut down.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A task of the server panicked or was cancelled.
    #[error("internal task failed: {0}")]
    Task(String),
}

impl NatsError {
    /// Stable code for logs and exit reasons.
    pub fn code(&self) -> &'static str {
        match self {
            NatsError::Config(_) => "config",
            NatsError::Connect(_) => "connect",
            NatsError::Access(_) => "access",
            NatsError::Refused { .. } => "refused",
            NatsError::Stream(_) => "stream",
            NatsError::Service(_) => "service",
            NatsError::StreamAhead { .. } => "stream_ahead",
            NatsError::StreamDiverged { .. } => "stream_diverged",
            NatsError::LeaseLost { .. } => "lease_lost",
            NatsError::Views(_) => "views",
            NatsError::Store(_) => "store",
            NatsError::Task(_) => "task",
        }
    }
}
