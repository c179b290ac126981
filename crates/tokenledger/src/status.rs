//! `tokenledger status`: what an operator asks first of a running ledger,
//! read from NATS alone: does a ledger answer, and at which log position;
//! how far the stream `TOKENS` is behind it (events acknowledged but not
//! yet seen by any subscriber); and which instance holds the writer lease.
//!
//! Each part is reported on its own, so a ledger that is down still shows
//! the stream and the lease (an instance waiting for it, a crashed holder
//! whose lease has not expired yet).

use crate::app::Ctx;
use crate::failure::Failure;
use crate::output::{print_json, print_text};
use crate::remote;
use async_nats::jetstream;
use ledger_nats::lease::BUCKET;
use serde_json::{json, Value};
use std::time::Duration;

/// How long `status` waits for the ledger's head.
const HEAD_WAIT: Duration = Duration::from_secs(2);

/// Runs `status` (needs `--nats`).
pub fn run(ctx: &Ctx) -> Result<(), Failure> {
    let Some(urls) = &ctx.nats else {
        return Err(Failure::invalid(
            "nats",
            "status reads a running ledger's NATS: give --nats URL (or set TOKENLEDGER_NATS)",
        ));
    };
    let access = ctx.nats_access.clone();
    let report = remote::run(async {
        let client = remote::connect(urls, &access).await?;
        let js = jetstream::new(client.nats().clone());
        let head = match tokio::time::timeout(HEAD_WAIT, client.snapshot(None, None, Some(1))).await
        {
            Ok(Ok(page)) => Ok(page.position),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {HEAD_WAIT:?}")),
        };
        let stream = match js.get_stream(ledger_client::subscribe::STREAM_NAME).await {
            Ok(s) => Ok(s.cached_info().state.clone()),
            Err(e) => Err(e.to_string()),
        };
        let lease = match js.get_key_value(BUCKET).await {
            Ok(kv) => match kv.entry("writer").await {
                Ok(Some(e)) if e.operation == jetstream::kv::Operation::Put => {
                    Ok(serde_json::from_slice::<Value>(&e.value).ok())
                }
                Ok(_) => Ok(None),
                Err(e) => Err(e.to_string()),
            },
            Err(_) => Ok(None),
        };
        Ok::<_, Failure>(report(head, stream, lease))
    })?;
    if ctx.json {
        print_json(&report)
    } else {
        print_text(&human(&report))
    }
}

/// The JSON report: `ledger`, `stream`, `publicationLag`, `writerLease`.
fn report(
    head: Result<u64, String>,
    stream: Result<jetstream::stream::State, String>,
    lease: Result<Option<Value>, String>,
) -> Value {
    let lag = match (&head, &stream) {
        (Ok(h), Ok(s)) => json!(h.saturating_sub(s.last_sequence)),
        _ => Value::Null,
    };
    json!({
        "ledger": match &head {
            Ok(h) => json!({ "answers": true, "head": h }),
            Err(e) => json!({ "answers": false, "error": e }),
        },
        "stream": match &stream {
            Ok(s) => json!({
                "exists": true,
                "firstSequence": s.first_sequence,
                "lastSequence": s.last_sequence,
                "messages": s.messages,
            }),
            Err(e) => json!({ "exists": false, "error": e }),
        },
        "publicationLag": lag,
        "writerLease": match &lease {
            Ok(Some(holder)) => json!({ "held": true, "holder": holder }),
            Ok(None) => json!({ "held": false }),
            Err(e) => json!({ "held": null, "error": e }),
        },
    })
}

fn human(r: &Value) -> String {
    let ledger = match r["ledger"]["head"].as_u64() {
        Some(h) => format!("answers; log head at position {h}"),
        None => format!("does not answer ({})", text(&r["ledger"]["error"])),
    };
    let stream = match r["stream"]["lastSequence"].as_u64() {
        Some(last) => {
            let lag = match r["publicationLag"].as_u64() {
                Some(0) => "; publication is up to date".to_owned(),
                Some(n) => format!("; {n} acknowledged events not published yet"),
                None => String::new(),
            };
            format!(
                "{} events (positions {}..{last}){lag}",
                r["stream"]["messages"], r["stream"]["firstSequence"]
            )
        }
        None => format!("missing ({})", text(&r["stream"]["error"])),
    };
    let h = &r["writerLease"]["holder"];
    let lease = match r["writerLease"]["held"].as_bool() {
        Some(true) => format!(
            "held by instance {} (pid {}, data dir {}, since {})",
            text(&h["instance"]),
            h["pid"],
            text(&h["dataDir"]),
            text(&h["since"])
        ),
        Some(false) => "free: no instance serves".to_owned(),
        None => format!("unknown ({})", text(&r["writerLease"]["error"])),
    };
    format!("ledger        {ledger}\nstream TOKENS {stream}\nwriter lease  {lease}")
}

fn text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}
