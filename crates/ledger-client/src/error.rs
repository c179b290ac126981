//! What can go wrong talking to the ledger: a typed refusal, or the transport.

use ledger_core::{ErrorCode, Rejection};

/// Why a call failed.
///
/// [`ClientError::Rejected`] is the ledger's own answer (`{"ok": false,
/// "error": ...}`): the command or query was understood and refused, and
/// nothing was appended. Every other variant is about reaching the ledger or
/// making sense of what came back; after [`ClientError::Timeout`] a command
/// may still have been applied, so retry it with the same `commandId` (see
/// [`crate::CommandOptions::command_id`]), which the ledger answers with the
/// first result and without appending again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The ledger refused: code, message, and `field` / `currentVersion` when given.
    #[error("rejected: {0}")]
    Rejected(Rejection),
    /// Refused by the client before anything was sent (e.g. a workspace id
    /// that is not a subject token); always `invalid_input`.
    #[error("invalid input: {0}")]
    Invalid(Rejection),
    /// Nobody serves this subject: no ledger server is running (or connected).
    #[error("no ledger server answers on {subject}")]
    NoResponders {
        /// The request subject.
        subject: String,
    },
    /// No reply in time. A command may or may not have been applied.
    #[error("no reply on {subject} in time")]
    Timeout {
        /// The request subject.
        subject: String,
    },
    /// Could not connect to NATS.
    #[error("cannot connect to NATS: {0}")]
    Connect(String),
    /// An authentication or TLS setting cannot work (a missing file, a seed
    /// that is not a user's, URLs with different passwords); it names the
    /// setting, and nothing was tried.
    #[error("NATS access: {0}")]
    Access(#[from] ledger_access::AccessError),
    /// Another transport failure of a request.
    #[error("request on {subject} failed: {message}")]
    Transport {
        /// The request subject.
        subject: String,
        /// What the NATS client said.
        message: String,
    },
    /// The NATS server refused this user the subject (a permissions
    /// violation): nothing was sent, and retrying with the same user cannot
    /// help. Reported as soon as the server says so, by clients made with
    /// [`crate::Client::connect`] or [`crate::Client::connect_with`] (a
    /// client on a connection of its own making waits for the timeout).
    #[error("NATS refused {subject}: {message}")]
    Forbidden {
        /// The subject refused.
        subject: String,
        /// What the server said.
        message: String,
    },
    /// The reply is not the documented shape.
    #[error("malformed reply on {subject}: {message}")]
    MalformedReply {
        /// The request subject.
        subject: String,
        /// What is wrong with it.
        message: String,
    },
    /// An event that cannot be trusted: it does not decode, its `hash` does
    /// not recompute, its `prevHash` does not link, or its subject, message id
    /// or position disagree with its body. A subscription yields it as one
    /// item and goes on with the next event.
    #[error("bad event at stream sequence {sequence}: {reason}")]
    BadEvent {
        /// Stream sequence of the message (= log position, for the ledger's stream);
        /// 0 in a `history` reply.
        sequence: u64,
        /// What is wrong.
        reason: String,
    },
    /// Events a subscription should have delivered are no longer in the
    /// stream (an operator set `max_age`, `max_msgs` or `max_bytes` on it):
    /// positions `from` to `to` were skipped, and some may have matched its
    /// filter. It goes on with the next event kept; whoever keeps state from
    /// the events must rebuild it (the local verifier takes a new snapshot).
    #[error("events at positions {from} to {to} are no longer in the stream")]
    EventsGone {
        /// First position missed.
        from: u64,
        /// Last position missed.
        to: u64,
    },
    /// JetStream failed (stream missing, consumer not created, delivery
    /// interrupted). A subscription yields it and keeps trying to resume.
    #[error("JetStream: {0}")]
    JetStream(String),
}

impl ClientError {
    /// A stable code: the ledger's error code for a rejection (`name_taken`,
    /// `conflict`, ...; `invalid_input` for [`ClientError::Invalid`]), else one of
    /// `no_responders`, `timeout`, `connect`, `access`, `forbidden`, `transport`, `malformed_reply`,
    /// `bad_event`, `events_gone`, `jetstream`.
    pub fn code(&self) -> &'static str {
        match self {
            ClientError::Rejected(r) | ClientError::Invalid(r) => r.code.as_str(),
            ClientError::NoResponders { .. } => "no_responders",
            ClientError::Timeout { .. } => "timeout",
            ClientError::Connect(_) => "connect",
            ClientError::Access(_) => "access",
            ClientError::Forbidden { .. } => "forbidden",
            ClientError::Transport { .. } => "transport",
            ClientError::MalformedReply { .. } => "malformed_reply",
            ClientError::BadEvent { .. } => "bad_event",
            ClientError::EventsGone { .. } => "events_gone",
            ClientError::JetStream(_) => "jetstream",
        }
    }

    /// The ledger's error code, for a refusal ([`ClientError::Rejected`] or
    /// [`ClientError::Invalid`]).
    pub fn error_code(&self) -> Option<ErrorCode> {
        self.rejection().map(|r| r.code)
    }

    /// The refusal, with its `field` and `currentVersion`.
    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            ClientError::Rejected(r) | ClientError::Invalid(r) => Some(r),
            _ => None,
        }
    }

    /// True when the ledger may not have seen the request at all, or its
    /// answer was lost: worth retrying (commands with the same `commandId`).
    pub fn is_transport(&self) -> bool {
        matches!(
            self,
            ClientError::NoResponders { .. }
                | ClientError::Timeout { .. }
                | ClientError::Connect(_)
                | ClientError::Transport { .. }
                | ClientError::JetStream(_)
        )
    }
}
