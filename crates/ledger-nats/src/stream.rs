//! The JetStream stream `TOKENS`: created when missing, brought to our
//! settings when present, other settings left as an operator made them.

use crate::subjects::{STREAM_NAME, STREAM_SUBJECTS};
use crate::NatsError;
use async_nats::jetstream::context::{CreateStreamError, CreateStreamErrorKind};
use async_nats::jetstream::{self, stream};
use std::time::Duration;

/// The settings the ledger owns on the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamSettings {
    /// Replicas (1 on a single server).
    pub replicas: usize,
    /// JetStream's `Nats-Msg-Id` deduplication window.
    pub duplicate_window: Duration,
}

impl Default for StreamSettings {
    /// One replica and JetStream's own two-minute deduplication window.
    fn default() -> Self {
        StreamSettings {
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
        }
    }
}

impl StreamSettings {
    /// The full config of a new stream.
    pub fn config(&self) -> stream::Config {
        stream::Config {
            name: STREAM_NAME.to_owned(),
            description: Some(
                "tokenledger events, sequence = log position (published from the sled log)"
                    .to_owned(),
            ),
            subjects: vec![STREAM_SUBJECTS.to_owned()],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            num_replicas: self.replicas,
            duplicate_window: self.duplicate_window,
            // Sequences must stay equal to positions: nobody may remove a message.
            deny_delete: true,
            deny_purge: true,
            ..Default::default()
        }
    }

    /// Applies our settings to an existing config; `true` when something changed.
    fn apply(&self, config: &mut stream::Config) -> bool {
        let before = config.clone();
        // Exactly the event subjects: any other subject would let messages
        // that are not ledger events (the server's own checkpoint notes,
        // anyone's) take stream sequences that belong to log positions.
        if config.subjects != [STREAM_SUBJECTS] {
            config.subjects = vec![STREAM_SUBJECTS.to_owned()];
        }
        config.num_replicas = self.replicas;
        config.duplicate_window = self.duplicate_window;
        config.deny_delete = true;
        config.deny_purge = true;
        // A per-subject cap (subjects carry the token and the event type)
        // removes messages from the middle of the stream: a subscriber that
        // follows one token would meet holes it cannot tell from loss.
        // Limits on the whole stream (age, count, bytes) remove its oldest
        // events only, which subscribers report as gone; those stay the
        // operator's.
        if config.max_messages_per_subject > 0 {
            config.max_messages_per_subject = -1;
        }
        *config != before
    }
}

/// Why [`ensure`] failed.
#[derive(Debug)]
pub(crate) enum EnsureError {
    /// JetStream did not answer (yet): retry later.
    Transient(String),
    /// JetStream refused, or the stream cannot serve the ledger.
    Permanent(NatsError),
}

fn classify(what: &str, e: CreateStreamError) -> EnsureError {
    match e.kind() {
        CreateStreamErrorKind::TimedOut
        | CreateStreamErrorKind::JetStreamUnavailable
        | CreateStreamErrorKind::Response => EnsureError::Transient(format!("{what}: {e}")),
        _ => EnsureError::Permanent(NatsError::Stream(format!("{what}: {e}"))),
    }
}

/// Creates `TOKENS` or updates the settings we own; returns its last sequence.
pub(crate) async fn ensure(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<u64, EnsureError> {
    // One round trip: the info comes with the lookup (or the creation).
    let stream = js
        .get_or_create_stream(settings.config())
        .await
        .map_err(|e| classify("create or look up", e))?;
    let info = stream.cached_info();
    if info.config.storage != stream::StorageType::File {
        return Err(EnsureError::Permanent(NatsError::Stream(
            "the existing stream uses memory storage; the ledger needs file storage (JetStream \
             cannot change it: recreate the stream, the publisher refills it from the log)"
                .into(),
        )));
    }
    let mut config = info.config.clone();
    if settings.apply(&mut config) {
        tracing::info!(stream = STREAM_NAME, "updating the stream's settings");
        js.update_stream(&config)
            .await
            .map_err(|e| classify("update", e))?;
    }
    Ok(info.state.last_sequence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_changes_only_what_the_ledger_owns() {
        let s = StreamSettings::default();
        let mut c = s.config();
        c.max_age = Duration::from_secs(3600);
        assert!(!s.apply(&mut c));
        c.deny_purge = false;
        c.duplicate_window = Duration::from_secs(1);
        assert!(s.apply(&mut c));
        assert!(c.deny_purge);
        assert_eq!(c.duplicate_window, Duration::from_secs(120));
        assert_eq!(c.max_age, Duration::from_secs(3600));
        c.subjects.push("tokens.checkpoint".into());
        assert!(s.apply(&mut c), "an extra subject is taken off");
        assert_eq!(c.subjects, [STREAM_SUBJECTS]);
        c.max_messages_per_subject = 1;
        assert!(s.apply(&mut c), "a per-subject cap is lifted");
        assert_eq!(c.max_messages_per_subject, -1);
        assert!(!s.apply(&mut c));
    }
}
