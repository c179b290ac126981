//! `tokenledger watch`: token changes as they happen, from a server's
//! JetStream stream `TOKENS` (through `ledger-client`'s subscriptions: each
//! event once, in log order, checked against its hash).
//!
//! Once subscribed it says `watching ... from position P` on stderr (so a
//! script knows nothing after P will be missed), then prints one line per
//! event on stdout (or, with `--json`, the envelope as one JSON line) until
//! SIGINT or SIGTERM (exit 0), or after `--count N` events. Provider secrets
//! never appear: sealed secrets are shown by their fingerprints only.

use crate::app::Ctx;
use crate::failure::Failure;
use crate::output::agent;
use crate::remote;
use clap::Args;
use futures_util::StreamExt;
use ledger_client::{EventFilter, LocalVerifier, StartFrom, VerifierOptions};
use ledger_core::event::AssignedPermissionGroup;
use ledger_core::{validate, Envelope, EventData, EventType, SealedSecret};
use serde_json::{json, Value};
use std::io::Write;

/// `watch`.
#[derive(Args, Debug)]
#[command(after_help = "\
Each line: POSITION  OCCURRED AT  WORKSPACE  TOKEN  TYPE  vVERSION  ACTOR  SUMMARY.
To resume after a stop, start again with --from <last position + 1>.")]
pub struct WatchArgs {
    /// Only events of this token.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Only events of this type (repeat for several), e.g. token_revoked.
    #[arg(long = "type", value_name = "TYPE", value_parser = event_type)]
    pub types: Vec<EventType>,
    /// Start at this log position, inclusive [default: only changes made from now on]
    #[arg(long, value_name = "POS", value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "from_start")]
    pub from: Option<u64>,
    /// Start at the first event of the log.
    #[arg(long)]
    pub from_start: bool,
    /// Stop after N events (exit 0).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Also run a local verifier (as a gateway would) on the token string in
    /// FILE ("-": stdin) and print its verdict whenever it changes: shows a
    /// revoked, trashed or rotated string going inactive as the event arrives.
    #[arg(long, value_name = "FILE")]
    pub verify_file: Option<std::path::PathBuf>,
    /// With --verify-file: the verifier accepts no string once it has gone
    /// this many seconds without proving it holds every event (a cut link,
    /// a stalled publication); the verdict becomes "stale" without waiting
    /// for an event.
    #[arg(long, value_name = "SECS", requires = "verify_file",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_staleness: Option<u64>,
}

/// Parses `--type`, listing the known types when it is none of them.
fn event_type(raw: &str) -> Result<EventType, String> {
    EventType::parse(raw).ok_or_else(|| {
        let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        format!("unknown event type; known: {}", known.join(", "))
    })
}

/// How often the local verifier's verdict is looked at between events (it
/// can change without one: going stale, or a string's `exp` passing).
const VERDICT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs `watch` until a signal or `--count` events.
pub fn run(args: WatchArgs, ctx: &Ctx) -> Result<(), Failure> {
    let Some(urls) = &ctx.nats else {
        return Err(Failure::invalid(
            "nats",
            "watch follows a running server's stream: give --nats URL (or set TOKENLEDGER_NATS)",
        ));
    };
    let mut filter = EventFilter::all();
    if let Some(ws) = &ctx.workspace {
        validate::workspace_id("workspaceId", ws)?;
        filter = filter.workspace(ws.clone());
    }
    if let Some(t) = &args.token {
        filter = filter.token(validate::uuid("tokenId", t)?);
    }
    filter = filter.types(args.types.iter().copied());
    let from = match (args.from, args.from_start) {
        (Some(p), _) => StartFrom::Position(p),
        (None, true) => StartFrom::Start,
        (None, false) => StartFrom::New,
    };
    let json_out = ctx.json;
    let verifier_options = VerifierOptions {
        max_staleness: args.max_staleness.map(std::time::Duration::from_secs),
        ..VerifierOptions::default()
    };
    let token_str = match &args.verify_file {
        None => None,
        Some(path) => Some(read_token_str(path)?),
    };
    let workspace = ctx.workspace.clone();
    let access = ctx.nats_access.clone();
    remote::runtime()?.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        // Installed before subscribing: a signal after "watching" is a clean stop.
        let signal_failed = |e: std::io::Error| Failure::internal(format!("signal handler: {e}"));
        let mut term = signal(SignalKind::terminate()).map_err(signal_failed)?;
        let mut int = signal(SignalKind::interrupt()).map_err(signal_failed)?;
        // Not under `remote::run`'s refusal guard as a whole: a watcher may
        // lack the right to `tokens.snapshot` (a workspace's service, see
        // deploy/nats-auth.conf) and still watch.
        let client = remote::connect(urls, &access).await?;
        let from = match from {
            // "From now on" is past the log's head, which the stream may not
            // have reached yet (a publication catching up, a stream being
            // refilled). The stream's end is the fallback when the ledger
            // does not say (down, or no right to `tokens.snapshot`).
            StartFrom::New => match client.head().await {
                Ok(head) => StartFrom::Position(head + 1),
                Err(_) => StartFrom::New,
            },
            other => other,
        };
        // A consumer on events this user may not read is `forbidden` at
        // once (the client hears the refusal), not a timeout.
        let mut events = client
            .subscribe(filter.clone(), from)
            .await
            .map_err(|e| remote::failure(e, urls, None))?;
        let verifier = match &token_str {
            None => None,
            Some(_) => Some(
                LocalVerifier::start_with(client.clone(), workspace.as_deref(), verifier_options)
                    .await
                    .map_err(|e| remote::failure(e, urls, None))?,
            ),
        };
        eprintln!(
            "watching {} from position {}",
            describe(&filter),
            events.next_position()
        );
        let mut verdict = None;
        if let (Some(v), Some(t)) = (&verifier, &token_str) {
            verdict = Some(verifier_verdict(v, t));
            emit(&verdict_line(
                verdict.as_ref().expect("set"),
                None,
                json_out,
            ))?;
        }
        let mut printed = 0u64;
        let mut recheck = tokio::time::interval(VERDICT_EVERY);
        // With a filter, the event behind a change of verdict may never be
        // printed (a revocation under `--type token_trashed`): the periodic
        // look then reports every change.
        let filtered = !args.types.is_empty() || args.token.is_some();
        while args.count.is_none_or(|n| printed < n) {
            let item = tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = recheck.tick(), if verifier.is_some() => {
                    if let (Some(v), Some(t)) = (&verifier, &token_str) {
                        let now = verifier_verdict(v, t);
                        if verdict.as_ref() != Some(&now)
                            && (filtered || without_event(verdict.as_ref(), &now))
                        {
                            emit(&verdict_line(&now, None, json_out))?;
                            verdict = Some(now);
                        }
                    }
                    continue;
                }
                item = events.next() => item,
            };
            match item {
                Some(Ok(env)) => {
                    let line = if json_out {
                        redacted_json(&env).to_string()
                    } else {
                        line(&env)
                    };
                    if !emit(&line)? {
                        break;
                    }
                    printed += 1;
                    if let (Some(v), Some(t)) = (&verifier, &token_str) {
                        // The verifier follows its own subscription; give it a
                        // moment to apply this event (it never receives events
                        // of other workspaces, hence the bound).
                        let _ = tokio::time::timeout(
                            std::time::Duration::from_millis(500),
                            v.wait_for(env.position),
                        )
                        .await;
                        let now = verifier_verdict(v, t);
                        if verdict.as_ref() != Some(&now) {
                            emit(&verdict_line(&now, Some(env.position), json_out))?;
                            verdict = Some(now);
                        }
                    }
                }
                // Never terminal: the subscription resumes by itself.
                Some(Err(e)) => eprintln!("warning: {}: {e}", e.code()),
                None => break,
            }
        }
        Ok(())
    })
}

/// The token string to watch, from a file or stdin (never from argv, where
/// `ps` and shell history would show it).
fn read_token_str(path: &std::path::Path) -> Result<String, Failure> {
    let raw = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|e| {
        Failure::invalid(
            "verify-file",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let token = raw.trim().to_owned();
    if token.is_empty() {
        return Err(Failure::invalid(
            "verify-file",
            "no token string in the file",
        ));
    }
    Ok(token)
}

/// Whether a change of verdict is one no event explains (the verifier going
/// stale or fresh again, an expiry passing): the periodic look reports
/// those; the others come with the event that caused them (the verifier
/// follows its own subscription, and may apply an event before `watch`
/// prints it).
fn without_event(
    before: Option<&Result<(), &'static str>>,
    now: &Result<(), &'static str>,
) -> bool {
    matches!(now, Err("stale" | "jwt_expired" | "expired")) || matches!(before, Some(Err("stale")))
}

/// `Ok(())` when active, else the refusal's stable reason code.
fn verifier_verdict(v: &LocalVerifier, token: &str) -> Result<(), &'static str> {
    v.check(token).map(|_| ()).map_err(|r| r.code())
}

/// "-- local verifier: active" / "-- local verifier: inactive (revoked) after position P".
fn verdict_line(verdict: &Result<(), &'static str>, after: Option<u64>, json_out: bool) -> String {
    if json_out {
        let mut v = json!({ "localVerifier": { "active": verdict.is_ok() } });
        if let Err(reason) = verdict {
            v["localVerifier"]["reason"] = json!(reason);
        }
        if let Some(p) = after {
            v["localVerifier"]["afterPosition"] = json!(p);
        }
        return v.to_string();
    }
    let state = match verdict {
        Ok(()) => "active".to_owned(),
        Err(reason) => format!("inactive ({reason})"),
    };
    match after {
        Some(p) => format!("-- local verifier: {state} after position {p}"),
        None => format!("-- local verifier: {state}"),
    }
}

/// Writes one line and flushes; `false` when stdout was closed (e.g. `| head`).
fn emit(line: &str) -> Result<bool, Failure> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{line}").and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(Failure::internal(format!("cannot write to stdout: {e}"))),
    }
}

/// "workspace acme, token T, types a, b" or "every workspace".
fn describe(filter: &EventFilter) -> String {
    let mut parts = vec![match &filter.workspace {
        Some(w) => format!("workspace {w}"),
        None => "every workspace".to_owned(),
    }];
    if let Some(t) = filter.token {
        parts.push(format!("token {t}"));
    }
    if !filter.types.is_empty() {
        let types: Vec<&str> = filter.types.iter().map(|t| t.as_str()).collect();
        parts.push(format!("types {}", types.join(" ")));
    }
    parts.join(", ")
}

/// The envelope as JSON, each sealed secret replaced by `{"fingerprint"}`.
///
/// (The ciphertexts are useless without the master key, but a watcher has
/// no use for them either; the event's `hash` covers the original bytes.)
pub fn redacted_json(env: &Envelope) -> Value {
    let mut v = env.to_json_value();
    let mut hide = |key: &str, secret: Option<&SealedSecret>| {
        if let Some(s) = secret {
            v["data"][key] = json!({ "fingerprint": s.fingerprint });
        }
    };
    match &env.data {
        EventData::AccessTokenRegistered(d) => {
            hide("accessToken", Some(&d.access_token));
            hide("refreshToken", d.refresh_token.as_ref());
        }
        EventData::AccessTokenRefreshed(d) => {
            hide("accessToken", Some(&d.access_token));
            hide("refreshToken", d.refresh_token.as_ref());
        }
        _ => {}
    }
    v
}

/// One line: position, time, workspace, token, type, version, actor, summary.
pub fn line(env: &Envelope) -> String {
    let mut line = format!(
        "{}  {}  {}  {}  {}  v{}  {}",
        env.position,
        env.occurred_at,
        env.workspace_id,
        env.token_id,
        env.event_type(),
        env.version,
        agent(&env.actor)
    );
    let summary = summary(&env.data);
    if !summary.is_empty() {
        line.push_str("  ");
        line.push_str(&summary);
    }
    line
}

fn groups(gs: &[AssignedPermissionGroup]) -> String {
    gs.iter()
        .map(|g| g.permission_group_id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn quoted(s: &str) -> String {
    format!("{s:?}")
}

/// What changed, in a few words; never a secret (fingerprints only).
pub fn summary(data: &EventData) -> String {
    let mut parts: Vec<String> = Vec::new();
    match data {
        EventData::ClientTokenIssued(d) => {
            parts.push(match &d.name {
                Some(n) => format!("name {}", quoted(n)),
                None => "no name".to_owned(),
            });
            if let Some(p) = &d.provided_resource_id {
                parts.push(format!("provided id {}", quoted(p)));
            }
            if !d.permission_groups.is_empty() {
                parts.push(format!("groups {}", groups(&d.permission_groups)));
            }
            if let Some(e) = d.expires {
                parts.push(format!("expires {}", millis(e)));
            }
            if let Some(i) = &d.import {
                parts.push(format!("imported from {}", i.source));
            }
        }
        EventData::ClientTokenUpdated(d) => {
            match &d.name {
                Some(Some(n)) => parts.push(format!("name -> {}", quoted(n))),
                Some(None) => parts.push("name cleared".to_owned()),
                None => {}
            }
            match d.expires {
                Some(Some(e)) => parts.push(format!("expires -> {}", millis(e))),
                Some(None) => parts.push("never expires".to_owned()),
                None => {}
            }
            if let Some(g) = &d.permission_groups {
                parts.push(if g.is_empty() {
                    "groups -> none".to_owned()
                } else {
                    format!("groups -> {}", groups(g))
                });
            }
        }
        EventData::PermissionGroupsAssigned(d) => {
            parts.push(format!("+ {}", groups(&d.permission_groups)));
        }
        EventData::PermissionGroupsUnassigned(d) => {
            parts.push(format!("- {}", d.permission_group_ids.join(", ")));
        }
        EventData::ClientTokenRotated(d) => {
            parts.push(format!("new string (key {})", d.jwt.kid));
        }
        EventData::AccessTokenRegistered(d) => {
            parts.push(format!(
                "{} ({}) of user {}",
                d.account_name, d.provider, d.user.id
            ));
            parts.push(format!("access token {}", d.access_token.fingerprint));
            if let Some(r) = &d.refresh_token {
                parts.push(format!("refresh token {}", r.fingerprint));
            }
            if let Some(i) = &d.import {
                parts.push(format!("imported from {}", i.source));
            }
        }
        EventData::AccessTokenRefreshed(d) => {
            parts.push(format!("access token {}", d.access_token.fingerprint));
            if let Some(r) = &d.refresh_token {
                parts.push(format!("refresh token {}", r.fingerprint));
            }
        }
        EventData::AccessTokenUpdated(d) => {
            if let Some(a) = &d.account_name {
                parts.push(format!("account -> {a}"));
            }
            if let Some(p) = &d.provider {
                parts.push(format!("provider -> {p}"));
            }
        }
        EventData::TokenTrashed(d) => parts.push(with_reason("trashed", d.reason.as_deref())),
        EventData::TokenRestored(_) => parts.push("restored".to_owned()),
        EventData::TokenRevoked(d) => parts.push(with_reason("revoked", d.reason.as_deref())),
        EventData::TokenPurged(d) => parts.push(if d.forced {
            "purged (forced, not from the trash)".to_owned()
        } else {
            "purged".to_owned()
        }),
    }
    parts.join("; ")
}

fn with_reason(what: &str, reason: Option<&str>) -> String {
    match reason {
        Some(r) => format!("{what}: {r}"),
        None => what.to_owned(),
    }
}

fn millis(ms: i64) -> String {
    ledger_core::Timestamp::from_millis(ms).map_or_else(|| ms.to_string(), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ledger_core::event::{AccessTokenRegistered, TokenRevoked, UserRef, GENESIS_HASH};
    use ledger_core::{Agent, EventDraft, StampMeta, Timestamp, TokenKind};
    use uuid::Uuid;

    fn sealed(fp: &str) -> SealedSecret {
        SealedSecret {
            alg: "xchacha20poly1305".into(),
            ciphertext: "CIPHERTEXT".into(),
            fingerprint: fp.into(),
            key_id: "k1".into(),
            nonce: "NONCE".into(),
        }
    }

    fn envelope(data: EventData, kind: TokenKind) -> Envelope {
        EventDraft {
            token_id: Uuid::nil(),
            token_kind: kind,
            workspace_id: "acme".into(),
            version: 2,
            data,
        }
        .stamp(StampMeta {
            event_id: Uuid::now_v7(),
            position: 7,
            occurred_at: Timestamp::from_millis(1_700_000_000_000).unwrap(),
            actor: Agent::system(),
            command_id: Uuid::new_v4(),
            correlation_id: None,
            prev_hash: GENESIS_HASH.to_owned(),
        })
        .0
    }

    #[test]
    fn sealed_secrets_show_only_fingerprints() {
        let env = envelope(
            EventData::AccessTokenRegistered(AccessTokenRegistered {
                access_token: sealed("hmac-sha256:aaaa"),
                account_name: "j@example.com".into(),
                import: None,
                provider: "google".into(),
                refresh_token: Some(sealed("hmac-sha256:bbbb")),
                user: UserRef { id: Uuid::nil() },
            }),
            TokenKind::Access,
        );
        let json = redacted_json(&env).to_string();
        let text = line(&env);
        for out in [&json, &text] {
            assert!(
                !out.contains("CIPHERTEXT") && !out.contains("NONCE"),
                "{out}"
            );
            assert!(out.contains("hmac-sha256:aaaa") && out.contains("hmac-sha256:bbbb"));
        }
        assert_eq!(
            redacted_json(&env)["data"]["accessToken"],
            json!({"fingerprint": "hmac-sha256:aaaa"})
        );
    }

    #[test]
    fn a_line_has_every_column() {
        let env = envelope(
            EventData::TokenRevoked(TokenRevoked {
                reason: Some("leaked".into()),
            }),
            TokenKind::Client,
        );
        assert_eq!(
            line(&env),
            format!(
                "7  2023-11-14T22:13:20.000Z  acme  {}  token_revoked  v2  system:ledger  revoked: leaked",
                Uuid::nil()
            )
            .replace("system:ledger", &agent(&Agent::system()))
        );
    }

    #[test]
    fn unknown_types_are_refused_with_the_list() {
        assert_eq!(event_type("token_trashed"), Ok(EventType::TokenTrashed));
        assert!(event_type("nope").unwrap_err().contains("token_revoked"));
    }
}
