//! Reply bodies and headers, the same for every endpoint.
//!
//! * success: `{"ok": true, "result": ...}`, no headers;
//! * failure: `{"ok": false, "error": {"code", "message", "field"?, "currentVersion"?}}`
//!   with `Nats-Service-Error` (the message) and `Nats-Service-Error-Code`
//!   (the code's HTTP-like status, e.g. `409`).
//!
//! The micro API's `respond(Err(..))` would set the headers but send an empty
//! body, so failures go out through `respond_with_headers(Ok(body), headers)`:
//! the caller gets both. (The endpoint's `num_errors` statistic therefore
//! stays 0; each endpoint's `data.rejected` in `$SRV.STATS` counts its
//! error replies instead, and [`crate::Metrics::requests`] all of them.)

use async_nats::service::{Request, NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE};
use async_nats::HeaderMap;
use ledger_core::Rejection;
use serde::Serialize;
use serde_json::value::RawValue;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Longest `Nats-Service-Error` header value, in bytes; the body keeps the whole message.
pub const ERROR_HEADER_BYTES_MAX: usize = 1024;

#[derive(Serialize)]
struct Ok<'a, T: ?Sized> {
    ok: bool,
    result: &'a T,
}

#[derive(Serialize)]
struct Err<'a> {
    ok: bool,
    error: &'a Rejection,
}

/// The body of a success reply.
pub fn ok_body<T: Serialize + ?Sized>(result: &T) -> Vec<u8> {
    serde_json::to_vec(&Ok { ok: true, result }).expect("reply serialization cannot fail")
}

/// The body of a failure reply.
pub fn error_body(rejection: &Rejection) -> Vec<u8> {
    serde_json::to_vec(&Err {
        ok: false,
        error: rejection,
    })
    .expect("reply serialization cannot fail")
}

/// The headers of a failure reply.
pub fn error_headers(rejection: &Rejection) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(NATS_SERVICE_ERROR, header_text(&rejection.message).as_str());
    headers.insert(
        NATS_SERVICE_ERROR_CODE,
        rejection.code.status().to_string().as_str(),
    );
    headers
}

/// A header value must be one line: control characters become spaces, and
/// long messages are cut at a character boundary.
fn header_text(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(ERROR_HEADER_BYTES_MAX));
    for c in message.chars() {
        if out.len() + c.len_utf8() > ERROR_HEADER_BYTES_MAX {
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

async fn respond_error(
    request: &Request,
    rejection: &Rejection,
) -> Result<(), async_nats::PublishError> {
    request
        .respond_with_headers(
            Result::Ok(error_body(rejection).into()),
            error_headers(rejection),
        )
        .await
}

/// `max_payload` until the server says otherwise: NATS's default, 1 MiB.
const REPLY_BYTES_DEFAULT: usize = 1 << 20;
/// Room kept in a reply for what wraps a page (`ok`, `nextCursor`, …).
const PAGE_HEADROOM: usize = 4096;
/// What a success reply adds around its result: `{"ok":true,"result":` and `}`.
const OK_WRAPPER_BYTES: usize = r#"{"ok":true,"result":}"#.len();

/// The largest message the NATS server takes (its `max_payload`), learned
/// at connect and shared by every handler: NATS drops a larger reply, and
/// its caller would wait for nothing until its timeout.
#[derive(Clone, Debug)]
pub struct ReplyLimit(Arc<AtomicUsize>);

impl Default for ReplyLimit {
    fn default() -> Self {
        ReplyLimit(Arc::new(AtomicUsize::new(REPLY_BYTES_DEFAULT)))
    }
}

impl ReplyLimit {
    /// Records the server's `max_payload` (learned at connect: a failover
    /// to a server with a smaller one is not seen until the next start).
    pub fn set(&self, max_payload: usize) {
        if max_payload > 0 {
            self.0.store(max_payload, Ordering::Relaxed);
        }
    }

    /// The largest reply body the server takes.
    pub fn bytes_max(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Bytes a page's items may take so that its reply fits in one message.
    pub fn page_bytes_max(&self) -> usize {
        self.bytes_max()
            .saturating_sub(PAGE_HEADROOM)
            .max(PAGE_HEADROOM)
    }

    /// Whether the success reply carrying `result` fits, without building it.
    pub fn fits(&self, result: &RawValue) -> bool {
        result.get().len() + OK_WRAPPER_BYTES <= self.bytes_max()
    }
}

/// The body of a success reply, or the rejection to send instead when that
/// body does not fit `limit`: NATS would drop it, and the caller would wait
/// for nothing until its timeout.
pub fn ok_body_within(result: &RawValue, limit: &ReplyLimit) -> Result<Vec<u8>, Rejection> {
    if limit.fits(result) {
        return Result::Ok(ok_body(result));
    }
    Result::Err(Rejection::new(
        ledger_core::ErrorCode::Internal,
        format!(
            "the reply is {} bytes, more than the {} bytes the NATS server takes \
             in one message (its max_payload)",
            result.get().len() + OK_WRAPPER_BYTES,
            limit.bytes_max()
        ),
    ))
}

/// Whether the ledger may publish a reply on `reply`. nats-server checks a
/// requester's right to publish the request, not its reply subject, and the
/// ledger's connection may publish into its own stream (`tokens.evt.>`), its
/// writer lease (`$KV.TOKENS_WRITER.>`), the JetStream API and the
/// checkpoint subject. A reply sent there on a caller's say-so would put a
/// foreign message in the stream or overwrite the lease, and stop the
/// ledger. So replies never go to the ledger's own subjects (`tokens.`) nor
/// to system ones (`$JS`, `$KV`, `$SRV`, `$SYS`, `$O`, anything with `$`).
pub fn reply_allowed(reply: &str) -> bool {
    !(reply.starts_with('$') || reply.starts_with("tokens."))
}

/// Sends the reply for `outcome`, no larger than `limit`; a request
/// without a reply subject gets none.
pub async fn send(
    request: &Request,
    outcome: &Result<Box<RawValue>, Rejection>,
    limit: &ReplyLimit,
) {
    if request.message.reply.is_none() {
        return;
    }
    let sent = match outcome {
        Result::Ok(result) => match ok_body_within(result, limit) {
            Result::Ok(body) => request.respond(Result::Ok(body.into())).await,
            Result::Err(rejection) => respond_error(request, &rejection).await,
        },
        Result::Err(rejection) => respond_error(request, rejection).await,
    };
    if let Result::Err(e) = sent {
        tracing::warn!(subject = %request.message.subject, error = %e, "could not send a reply");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_core::ErrorCode;
    use serde_json::Value;

    #[test]
    fn a_reply_over_the_servers_limit_becomes_an_error_reply() {
        let result = serde_json::value::to_raw_value(&"x".repeat(100)).unwrap();
        let limit = ReplyLimit::default();
        limit.set(200);
        let fits = ok_body_within(&result, &limit).unwrap();
        assert_eq!(fits, ok_body(&result));
        limit.set(100);
        let refused = ok_body_within(&result, &limit).unwrap_err();
        assert_eq!(refused.code, ErrorCode::Internal);
        assert!(
            refused.message.contains("max_payload"),
            "{}",
            refused.message
        );
    }

    #[test]
    fn fits_measures_the_reply_without_building_it() {
        let result = serde_json::value::to_raw_value(&"x".repeat(100)).unwrap();
        let exact = ok_body(&result).len();
        let limit = ReplyLimit::default();
        limit.set(exact);
        assert!(limit.fits(&result));
        limit.set(exact - 1);
        assert!(!limit.fits(&result));
    }

    #[test]
    fn error_replies_carry_code_message_field_and_version() {
        let r = Rejection::conflict(3, 5);
        let body: Value = serde_json::from_slice(&error_body(&r)).unwrap();
        assert_eq!(body["ok"], false);
        assert_eq!(body["error"]["code"], "conflict");
        assert_eq!(body["error"]["field"], "expectedVersion");
        assert_eq!(body["error"]["currentVersion"], 5);
        let h = error_headers(&r);
        assert_eq!(h.get(NATS_SERVICE_ERROR_CODE).unwrap().as_str(), "409");
        assert_eq!(h.get(NATS_SERVICE_ERROR).unwrap().as_str(), r.message);

        let nf = Rejection::new(ErrorCode::NotFound, "no");
        let body: Value = serde_json::from_slice(&error_body(&nf)).unwrap();
        assert!(body["error"].get("field").is_none());
        assert!(body["error"].get("currentVersion").is_none());
    }

    #[test]
    fn header_text_is_one_bounded_line() {
        assert_eq!(header_text("a\r\nb"), "a  b");
        let long = "é".repeat(ERROR_HEADER_BYTES_MAX);
        let cut = header_text(&long);
        assert!(cut.len() <= ERROR_HEADER_BYTES_MAX);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
