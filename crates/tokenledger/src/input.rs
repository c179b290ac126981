//! Turning flags, files and the environment into command fields.
//!
//! Nothing here decides whether a value is valid for the ledger: the values
//! go into a JSON body that `ledger_core::command::parse_value` checks, so the
//! CLI refuses exactly what the wire refuses. What is checked here is only what
//! the wire never sees: the shorthand forms of `--expires`, `--actor TYPE:ID`,
//! and readable files.

use crate::failure::Failure;
use ledger_core::Timestamp;
use serde_json::{json, Map, Value};
use std::io::Read;
use std::path::Path;

/// Largest file the CLI reads (a command body, a secret, an import record).
///
/// Commands are at most 64 KiB on the wire; an import record with extra
/// fields may be larger, but nothing sensible is bigger than this.
pub const INPUT_BYTES_MAX: u64 = 1024 * 1024;

/// Parses `--expires`: RFC 3339, `+30d` / `+2h` / `+15m` / `+45s` / `+2w`, or epoch ms.
pub fn expires_ms(raw: &str, now: Timestamp) -> Result<i64, Failure> {
    let bad = || {
        Failure::invalid(
            "expires",
            format!(
                "cannot read {raw:?}: give RFC 3339 (2030-01-31T12:00:00Z), a duration from now \
                 (+30d, +2h, +15m, +45s, +2w) or epoch milliseconds"
            ),
        )
    };
    let raw = raw.trim();
    if let Some(rest) = raw.strip_prefix('+') {
        let split = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (amount, unit) = rest.split_at(split);
        let amount: i64 = amount.parse().map_err(|_| bad())?;
        let unit_ms: i64 = match unit {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            _ => return Err(bad()),
        };
        return amount
            .checked_mul(unit_ms)
            .and_then(|d| now.millis().checked_add(d))
            .ok_or_else(bad);
    }
    if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        return raw.parse().map_err(|_| bad());
    }
    Timestamp::parse(raw).map(Timestamp::millis).ok_or_else(bad)
}

/// Parses an RFC 3339 instant given as a flag.
pub fn timestamp(field: &str, raw: &str) -> Result<Timestamp, Failure> {
    Timestamp::parse(raw.trim()).ok_or_else(|| {
        Failure::invalid(
            field,
            format!("cannot read {raw:?}: give an RFC 3339 time such as 2030-01-31T12:00:00Z"),
        )
    })
}

/// `--actor TYPE:ID` as the JSON agent the wire expects; the type is checked by the parser.
pub fn actor(raw: Option<&str>) -> Result<Value, Failure> {
    let raw = match raw {
        Some(r) => r.to_owned(),
        None => default_actor(),
    };
    let (agent_type, agent_id) = raw.split_once(':').ok_or_else(|| {
        Failure::invalid(
            "actor",
            format!("--actor {raw:?} must be TYPE:ID, e.g. user:alice (TYPE: user, client_token, service, system)"),
        )
    })?;
    Ok(json!({ "agentId": agent_id, "agentType": agent_type }))
}

/// `user:$USER`, or `user:cli` when the login name is unknown.
fn default_actor() -> String {
    match std::env::var("USER") {
        Ok(u) if !u.trim().is_empty() => format!("user:{u}"),
        _ => "user:cli".to_owned(),
    }
}

/// Reads a file, or stdin for `-`, refusing anything larger than [`INPUT_BYTES_MAX`].
pub fn read_source(field: &str, path: &str) -> Result<String, Failure> {
    let mut buf = Vec::new();
    let result = if path == "-" {
        std::io::stdin()
            .lock()
            .take(INPUT_BYTES_MAX + 1)
            .read_to_end(&mut buf)
    } else {
        std::fs::File::open(Path::new(path))
            .and_then(|f| f.take(INPUT_BYTES_MAX + 1).read_to_end(&mut buf))
    };
    let what = if path == "-" { "stdin" } else { path };
    result.map_err(|e| Failure::invalid(field, format!("cannot read {what}: {e}")))?;
    if buf.len() as u64 > INPUT_BYTES_MAX {
        return Err(Failure::invalid(
            field,
            format!("{what} is larger than {INPUT_BYTES_MAX} bytes"),
        ));
    }
    let text = String::from_utf8(buf)
        .map_err(|_| Failure::invalid(field, format!("{what} is not UTF-8")))?;
    // Editors on some systems start UTF-8 files with a byte order mark,
    // which is no JSON; it carries nothing, so it is dropped.
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_owned(),
        None => text,
    })
}

/// `--body JSON|@FILE|@-`: a JSON object. A provider secret in a body given
/// inline is refused, as a secret flag would be: see [`SecretSource`].
pub fn body(raw: &str) -> Result<Map<String, Value>, Failure> {
    let (text, inline) = match raw.strip_prefix('@') {
        Some(path) => (read_source("body", path)?, false),
        None => (raw.to_owned(), true),
    };
    let map = match ledger_core::json::parse_strict(text.as_bytes()) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(Failure::invalid("body", "a command body is a JSON object")),
        Err(e) => {
            let shown = ledger_core::json::error_text(&e);
            return Err(Failure::invalid("body", format!("malformed JSON: {shown}")));
        }
    };
    if inline {
        for field in ["accessToken", "refreshToken"] {
            if map.get(field).is_some_and(|v| !v.is_null()) {
                return Err(Failure::invalid(
                    field,
                    "a secret on the command line shows in `ps` and in shell history: give \
                     the body as @FILE or @-, or the secret from a file, stdin or the \
                     environment",
                ));
            }
        }
    }
    Ok(map)
}

/// Where a secret comes from. Secrets are never flags: flags end up in shell
/// history and in `ps` output.
pub enum SecretSource<'a> {
    /// A file, its one trailing newline dropped.
    File(&'a str),
    /// Standard input, its one trailing newline dropped.
    Stdin,
    /// An environment variable, if set.
    Env(&'static str),
}

/// Reads the first available secret of `sources`, for `field`.
pub fn secret(field: &str, sources: &[SecretSource<'_>]) -> Result<Option<String>, Failure> {
    for source in sources {
        let raw = match source {
            SecretSource::File(path) => read_source(field, path)?,
            SecretSource::Stdin => read_source(field, "-")?,
            SecretSource::Env(var) => match std::env::var(var) {
                Ok(v) => v,
                Err(std::env::VarError::NotPresent) => continue,
                Err(std::env::VarError::NotUnicode(_)) => {
                    return Err(Failure::invalid(field, format!("{var} is not UTF-8")))
                }
            },
        };
        let trimmed = raw
            .strip_suffix("\r\n")
            .or_else(|| raw.strip_suffix('\n'))
            .unwrap_or(&raw);
        return Ok(Some(trimmed.to_owned()));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        Timestamp::parse("2030-01-01T00:00:00Z").unwrap()
    }

    #[test]
    fn expires_forms() {
        let base = now().millis();
        assert_eq!(expires_ms("+30d", now()).unwrap(), base + 30 * 86_400_000);
        assert_eq!(expires_ms("+2h", now()).unwrap(), base + 2 * 3_600_000);
        assert_eq!(expires_ms("+15m", now()).unwrap(), base + 15 * 60_000);
        assert_eq!(expires_ms("+1w", now()).unwrap(), base + 7 * 86_400_000);
        assert_eq!(
            expires_ms("1900000000000", now()).unwrap(),
            1_900_000_000_000
        );
        assert_eq!(
            expires_ms("2030-01-02T00:00:00+01:00", now()).unwrap(),
            base + 23 * 3_600_000
        );
        for bad in [
            "",
            "+",
            "+3",
            "+3y",
            "+-3d",
            "tomorrow",
            "+99999999999999999w",
        ] {
            let f = expires_ms(bad, now()).unwrap_err();
            assert_eq!(f.field.as_deref(), Some("expires"), "{bad}");
            assert_eq!(f.exit, crate::failure::EXIT_INVALID);
        }
    }

    #[test]
    fn actor_forms() {
        let a = actor(Some("service:billing")).unwrap();
        assert_eq!(a, json!({"agentId": "billing", "agentType": "service"}));
        // The id may contain colons; only the first one splits.
        let a = actor(Some("user:a:b")).unwrap();
        assert_eq!(a["agentId"], "a:b");
        assert_eq!(
            actor(Some("alice")).unwrap_err().field.as_deref(),
            Some("actor")
        );
    }

    #[test]
    fn bodies_must_be_objects() {
        assert!(body(r#"{"name": "x"}"#).is_ok());
        assert_eq!(body("[1]").unwrap_err().field.as_deref(), Some("body"));
        assert_eq!(body("{").unwrap_err().field.as_deref(), Some("body"));
    }
}
