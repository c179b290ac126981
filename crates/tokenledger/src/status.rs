//! `tokenledger status`: what an operator asks first of a running ledger,
//! read from NATS alone: does a ledger answer, and at which log position;
//! how far the stream `TOKENS` is behind it (events acknowledged but not
//! yet seen by any subscriber); and which instance holds the writer lease.
//!
//! Each part is reported on its own, so a ledger that is down still shows
//! the stream and the lease (an instance waiting for it, a crashed holder
//! whose lease has not expired yet); the exit code is then 3.

use crate::app::Ctx;
use crate::failure::Failure;
use crate::output::{print_json, print_text};
use crate::remote;
use async_nats::jetstream;
use ledger_nats::lease;
use serde_json::{json, Value};

/// Runs `status` (needs `--nats`).
pub fn run(ctx: &Ctx) -> Result<(), Failure> {
    let Some(urls) = &ctx.nats else {
        return Err(Failure::invalid(
            "nats",
            "status reads a running ledger's NATS: give --nats URL (or set TOKENLEDGER_NATS)",
        ));
    };
    let access = ctx.nats_access.clone();
    let parts = remote::run(async {
        let client = remote::connect(urls, &access).await?;
        let js = jetstream::new(client.nats().clone());
        Ok::<_, Failure>(Parts {
            head: client.head().await.map_err(|e| e.to_string()),
            stream: match js.get_stream(ledger_client::subscribe::STREAM_NAME).await {
                Ok(s) => Ok(s.cached_info().state.clone()),
                Err(e) => Err(e.to_string()),
            },
            lease: lease::holder(&js).await,
        })
    })?;
    if ctx.json {
        print_json(&parts.report())?;
    } else {
        print_text(&parts.human())?;
    }
    // The report is printed either way; the exit code tells a health check
    // whether the ledger can be used (3 when it does not answer or its
    // stream is missing).
    let down = match (&parts.head, &parts.stream) {
        (Err(_), _) => Some("the ledger does not answer"),
        (_, Err(_)) => Some("the stream TOKENS is missing or unreadable"),
        _ => None,
    };
    match down {
        Some(why) => Err(Failure::from(ledger_core::Rejection::new(
            ledger_core::ErrorCode::Unavailable,
            why,
        ))),
        None => Ok(()),
    }
}

/// What `status` found, each part or why it could not be read.
struct Parts {
    head: Result<u64, String>,
    stream: Result<jetstream::stream::State, String>,
    lease: Result<Option<lease::Holder>, String>,
}

impl Parts {
    fn lag(&self) -> Option<u64> {
        match (&self.head, &self.stream) {
            (Ok(h), Ok(s)) => Some(h.saturating_sub(s.last_sequence)),
            _ => None,
        }
    }

    /// The JSON report: `ledger`, `stream`, `publicationLag`, `writerLease`.
    fn report(&self) -> Value {
        json!({
            "ledger": match &self.head {
                Ok(h) => json!({ "answers": true, "head": h }),
                Err(e) => json!({ "answers": false, "error": e }),
            },
            "stream": match &self.stream {
                Ok(s) => json!({
                    "exists": true,
                    "firstSequence": s.first_sequence,
                    "lastSequence": s.last_sequence,
                    "messages": s.messages,
                }),
                Err(e) => json!({ "exists": false, "error": e }),
            },
            "publicationLag": self.lag(),
            "writerLease": match &self.lease {
                Ok(Some(holder)) => json!({ "held": true, "holder": holder }),
                Ok(None) => json!({ "held": false }),
                Err(e) => json!({ "held": null, "error": e }),
            },
        })
    }

    fn human(&self) -> String {
        let ledger = match &self.head {
            Ok(h) => format!("answers; log head at position {h}"),
            Err(e) => format!("does not answer ({e})"),
        };
        let stream = match &self.stream {
            Ok(s) => {
                let lag = match self.lag() {
                    Some(0) => "; publication is up to date".to_owned(),
                    Some(n) => format!("; {n} acknowledged events not published yet"),
                    None => String::new(),
                };
                format!(
                    "{} events (positions {}..{}){lag}",
                    s.messages, s.first_sequence, s.last_sequence
                )
            }
            Err(e) => format!("missing ({e})"),
        };
        let lease = match &self.lease {
            Ok(Some(holder)) => format!("held by {holder}"),
            Ok(None) => "free: no instance serves".to_owned(),
            Err(e) => format!("unknown ({e})"),
        };
        format!("ledger        {ledger}\nstream TOKENS {stream}\nwriter lease  {lease}")
    }
}
