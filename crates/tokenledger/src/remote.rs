//! The CLI over NATS (`--nats URL[,URL]`): commands and queries sent to a
//! running `tokenledger serve` through `ledger-client` instead of the data dir.
//!
//! The body of a command is the one [`crate::commands`] builds and validates
//! for the data dir; only where it goes differs. The reply (`{"token",
//! "positions"}`, or an error object) is printed and mapped to exit codes
//! exactly as in local mode. Not reaching a server (no NATS, no ledger
//! behind the subject, no reply in time) is `unavailable`, exit 3.
//!
//! One difference remains: the wire's reply does not say whether a
//! `commandId` was replayed, so a retried command prints its first result
//! as if it had just been applied (nothing is appended either way).

use crate::app::Ctx;
use crate::failure::Failure;
use crate::output::Reply;
use crate::queries::{self, GetArgs, GetParts, HistoryArgs, ListArgs, QueryCommand};
use async_nats::ServerAddr;
use ledger_client::{
    AsOf, Client, ClientError, CommandOptions, GetBy, ListQuery, Refusals, Trashed,
};
use ledger_core::{validate, CommandName, ErrorCode, Rejection, TokenKind, TokenView};
use ledger_nats::NatsAccess;
use ledger_projector::{Lookup, ProjectorError, TrashedFilter, LIST_LIMIT_MAX};
use serde_json::{Map, Value};
use std::future::Future;
use std::time::Duration;
use uuid::Uuid;

/// How long connecting to a NATS server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a command or query waits for its reply.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A single-threaded runtime for one CLI call.
pub fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::internal(format!("tokio runtime: {e}")))
}

/// Runs one CLI call's NATS work to its end, or until the NATS server
/// refuses this user a subject the work needs (`forbidden`, exit 1).
///
/// NATS answers a denied publish or subscribe with an asynchronous `-ERR`
/// and nothing else: without this, a request to a workspace the user may
/// not reach would only time out, ten seconds later, as if no server ran.
pub fn run<T>(work: impl Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
    let refusals = refusals().subscribe();
    runtime()?.block_on(async move {
        let mut refusals = refusals;
        tokio::select! {
            done = work => done,
            Ok(()) = refusals.changed() => {
                let said = refusals.borrow().clone().unwrap_or_default();
                Err(forbidden(&said))
            }
        }
    })
}

/// Where [`connect`]'s connection reports permission refusals to [`run`].
/// One per process: a CLI call makes one connection.
fn refusals() -> &'static tokio::sync::watch::Sender<Option<String>> {
    static REFUSALS: std::sync::OnceLock<tokio::sync::watch::Sender<Option<String>>> =
        std::sync::OnceLock::new();
    REFUSALS.get_or_init(|| tokio::sync::watch::channel(None).0)
}

/// `forbidden` for a NATS permissions violation (`said` is the server's text,
/// which names the subject).
fn forbidden(said: &str) -> Failure {
    let publish = said.to_ascii_lowercase().contains("for publish");
    Failure::from(Rejection::new(
        ErrorCode::Forbidden,
        format!(
            "the NATS server refused this user: {said}; {}",
            if publish {
                "nothing was sent (ask the operator for the permission, or use another user)"
            } else {
                "no reply can arrive, and a command may have been applied: check with get or \
                 history once the permission is granted"
            }
        ),
    ))
}

/// `--nats` as server addresses; a malformed URL is invalid input.
fn addresses(urls: &[String]) -> Result<Vec<ServerAddr>, Failure> {
    if urls.is_empty() {
        return Err(Failure::invalid("nats", "give at least one NATS URL"));
    }
    urls.iter()
        .map(|u| {
            u.trim().parse::<ServerAddr>().map_err(|e| {
                Failure::invalid(
                    "nats",
                    format!(
                        "{:?} is not a NATS URL (e.g. nats://127.0.0.1:4222): {e}",
                        ledger_nats::access::redact(u)
                    ),
                )
            })
        })
        .collect()
}

/// The URLs as one string, for messages (passwords redacted).
fn shown(urls: &[String]) -> String {
    ledger_nats::access::shown(urls)
}

/// `unavailable` (exit 3): no ledger server could be reached.
fn unavailable(urls: &[String], why: impl std::fmt::Display) -> Failure {
    Failure::from(Rejection::new(
        ErrorCode::Unavailable,
        format!("no tokenledger server answers on {}: {why}", shown(urls)),
    ))
}

/// Connects to NATS with the CLI's access settings. The client reports a
/// refused subject of its own requests as `ClientError::Forbidden`; every
/// refusal also reaches [`run`], for the work that uses the connection
/// directly (the stream's state, the lease).
pub async fn connect(urls: &[String], access: &NatsAccess) -> Result<Client, Failure> {
    let options = async_nats::ConnectOptions::new()
        .name("tokenledger-cli")
        .connection_timeout(CONNECT_TIMEOUT)
        .request_timeout(Some(REQUEST_TIMEOUT));
    let (options, heard) = Refusals::listen(options, access.inbox_prefix.as_deref());
    let mut said = heard.subscribe();
    tokio::spawn(async move {
        loop {
            match said.recv().await {
                Ok(refusal) => {
                    refusals().send_replace(Some(refusal));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let nats = open(urls, access, options, |e| {
        unavailable(urls, format!("cannot connect to NATS ({e})"))
    })
    .await?;
    Ok(Client::with_refusals(nats, heard))
}

/// Connects to `urls` with `options` and the access settings, as every
/// CLI command that reaches NATS does: a malformed URL or a setting that
/// cannot work is `invalid_input` naming it, refused credentials or TLS are [`refused`], anything else
/// is `unreachable`'s to say.
pub async fn open(
    urls: &[String],
    access: &NatsAccess,
    options: async_nats::ConnectOptions,
    unreachable: impl FnOnce(&async_nats::ConnectError) -> Failure,
) -> Result<async_nats::Client, Failure> {
    let addrs = addresses(urls)?;
    let options = access
        .apply(options, urls)
        .await
        .map_err(|e| Failure::invalid(e.field, e.message))?;
    options
        .connect(addrs)
        .await
        .map_err(|e| refused(urls, &e).unwrap_or_else(|| unreachable(&e)))
}

/// `unauthorized` (exit 1) when NATS refused the credentials or TLS failed:
/// trying again later cannot help, unlike a server that is not there.
fn refused(urls: &[String], e: &async_nats::ConnectError) -> Option<Failure> {
    use async_nats::ConnectErrorKind as Kind;
    if !ledger_nats::access::is_refusal(e) {
        return None;
    }
    let what = match e.kind() {
        Kind::AuthorizationViolation | Kind::Authentication => {
            "NATS refused the credentials (--nats-creds, --nats-nkey, or the URL's user and password)"
        }
        _ => "the TLS connection to NATS failed (--nats-tls-ca, --nats-tls-cert, --nats-tls-key)",
    };
    Some(Failure::from(Rejection::new(
        ErrorCode::Unauthorized,
        format!("{what} on {}: {e}", shown(urls)),
    )))
}

/// A client error as the CLI reports it. A ledger refusal keeps its code,
/// field and exit code; transport trouble is `unavailable`, exit 3.
/// `command_id` is named after a timeout, when retrying with it is safe.
pub fn failure(e: ClientError, urls: &[String], command_id: Option<&str>) -> Failure {
    match e {
        ClientError::Rejected(r) | ClientError::Invalid(r) => Failure::from(r),
        ClientError::NoResponders { subject } => unavailable(
            urls,
            format!(
                "nothing serves {subject} (start one with `tokenledger serve` or `bash scripts/up.sh`)"
            ),
        ),
        ClientError::Timeout { subject } => unavailable(
            urls,
            match command_id {
                Some(id) => format!(
                    "no reply on {subject} within {}s; the command may have been applied: \
                     retry with --command-id {id} to apply it at most once",
                    REQUEST_TIMEOUT.as_secs()
                ),
                None => format!(
                    "no reply on {subject} within {}s",
                    REQUEST_TIMEOUT.as_secs()
                ),
            },
        ),
        ClientError::Connect(m) => unavailable(urls, m),
        ClientError::Forbidden { message, .. } => forbidden(&message),
        e @ (ClientError::Transport { .. } | ClientError::JetStream(_)) => unavailable(urls, e),
        other => Failure::internal(other.to_string()),
    }
}

/// Sends a command body (built and validated by [`crate::commands`]) and prints the reply.
pub fn execute(
    ctx: &Ctx,
    urls: &[String],
    name: CommandName,
    body: Map<String, Value>,
) -> Result<(), Failure> {
    let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
    // Validated already: the body's workspace is the subject's.
    let workspace = text("workspaceId").unwrap_or_default();
    let command_id = text("commandId").unwrap_or_default();
    let target = text("tokenId").and_then(|t| Uuid::parse_str(&t).ok());
    let result = run(async {
        let client = connect(urls, &ctx.nats_access).await?;
        client
            .execute_json(
                &workspace,
                name,
                Value::Object(body),
                &CommandOptions::default(),
            )
            .await
            .map_err(|e| failure(e, urls, Some(&command_id)))
    })?;
    let now = ctx.now();
    let view = result.token.map(|v| v.with_expired(now));
    // Older servers send no `tokenId`; then only the body's target is known.
    let token_id = view
        .as_ref()
        .map(TokenView::token_id)
        .or(result.token_id)
        .or(target)
        .unwrap_or_default();
    Reply {
        name,
        token_id,
        view: view.as_ref(),
        positions: &result.positions,
        replayed: false,
        notes: &[],
    }
    .print(ctx.json, now)
}

/// Runs a query over NATS and prints it as local mode would.
pub fn query(cmd: QueryCommand, ctx: &Ctx, urls: &[String], ws: &str) -> Result<(), Failure> {
    match cmd {
        QueryCommand::Get(a) => get(a, ctx, urls, ws),
        QueryCommand::List(a) => list(a, ctx, urls, ws),
        QueryCommand::History(a) => history(a, ctx, urls, ws),
    }
}

fn get_by(lookup: &Lookup) -> GetBy {
    match lookup {
        Lookup::Id(id) => GetBy::Id(*id),
        Lookup::Name(n) => GetBy::Name(n.clone()),
        Lookup::ProvidedId(p) => GetBy::ProvidedId(p.clone()),
    }
}

fn get(args: GetArgs, ctx: &Ctx, urls: &[String], ws: &str) -> Result<(), Failure> {
    let parts = GetParts::of(&args)?;
    let as_of = parts.as_of.map(|a| match a {
        ledger_projector::AsOf::Version(v) => AsOf::Version(v),
        ledger_projector::AsOf::Position(p) => AsOf::Position(p),
        ledger_projector::AsOf::Time(t) => AsOf::Time(t),
    });
    if args.show_token_str && as_of.is_some() {
        return Err(Failure::invalid(
            "showTokenStr",
            "over NATS --show-token-str shows the current string only (the reveal query); \
             an earlier version's string is re-minted by get on the data dir while no server \
             holds it",
        ));
    }
    let actor = if args.reveal || args.show_token_str {
        Some(queries::actor_agent(ctx)?)
    } else {
        None
    };
    // `None`: with --as-of-*, no token holds the name or provided id now.
    let got = run(async {
        let client = connect(urls, &ctx.nats_access).await?;
        let asked = async {
            if let Some(actor) = actor {
                if !args.reveal {
                    // --show-token-str: an access token has no string, so
                    // its view is the answer, without reading its secrets.
                    let view = client.get(ws, get_by(&parts.lookup), None).await?;
                    if view.kind != TokenKind::Client {
                        return Ok(Some(view));
                    }
                }
                let mut view = client
                    .with_actor(actor)
                    .reveal(ws, get_by(&parts.lookup))
                    .await?;
                if !args.reveal {
                    // --show-token-str asks for the string alone.
                    view.access_token = None;
                    view.refresh_token = None;
                }
                return Ok(Some(view));
            }
            match as_of {
                None => client.get(ws, get_by(&parts.lookup), None).await.map(Some),
                Some(as_of) => {
                    // A name or provided id names the token that holds it now.
                    let id = match &parts.lookup {
                        Lookup::Id(id) => *id,
                        other => match client.get(ws, get_by(other), None).await {
                            Ok(holder) => holder.token_id(),
                            Err(e) if e.error_code() == Some(ErrorCode::NotFound) => {
                                return Ok(None)
                            }
                            Err(e) => return Err(e),
                        },
                    };
                    client.get(ws, GetBy::Id(id), Some(as_of)).await.map(Some)
                }
            }
        };
        Ok::<_, Failure>(asked.await)
    })?;
    let now = ctx.now();
    match got {
        Ok(Some(view)) => queries::print_view(ctx, &view.with_expired(now), now),
        Ok(None) => Err(parts.no_holder(ws)),
        Err(e) if e.error_code() == Some(ErrorCode::NotFound) => Err(parts.not_found(ws)),
        Err(e) => Err(failure(e, urls, None)),
    }
}

fn list(args: ListArgs, ctx: &Ctx, urls: &[String], ws: &str) -> Result<(), Failure> {
    let filter = queries::list_filter(&args)?;
    // Refused as the local views refuse it, with the same message.
    if !(1..=LIST_LIMIT_MAX).contains(&filter.limit) {
        return Err(ProjectorError::InvalidLimit(filter.limit).into());
    }
    let query = ListQuery {
        kind: filter.kind,
        user_id: filter.user_id,
        provider: filter.provider,
        trashed: Some(match filter.trashed {
            TrashedFilter::Exclude => Trashed::Exclude,
            TrashedFilter::Include => Trashed::Include,
            TrashedFilter::Only => Trashed::Only,
        }),
        revoked: filter.revoked,
        expired: filter.expired,
        limit: Some(filter.limit),
        cursor: filter.cursor,
    };
    let page = run(async {
        let client = connect(urls, &ctx.nats_access).await?;
        client
            .list(ws, &query)
            .await
            .map_err(|e| failure(e, urls, None))
    })?;
    queries::print_page(ctx, &page.items, page.next_cursor.as_deref(), ctx.now())
}

fn history(args: HistoryArgs, ctx: &Ctx, urls: &[String], ws: &str) -> Result<(), Failure> {
    let id: Uuid = validate::uuid("tokenId", &args.token)?;
    let got = run(async {
        let client = connect(urls, &ctx.nats_access).await?;
        Ok::<_, Failure>(client.history(ws, id).await)
    })?;
    match got {
        Ok(events) => queries::print_history(ctx, ws, id, &events),
        Err(e) if e.error_code() == Some(ErrorCode::NotFound) => {
            Err(queries::history_not_found(ws, id))
        }
        Err(e) => Err(failure(e, urls, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::{EXIT_INVALID, EXIT_RULE, EXIT_UNAVAILABLE};

    #[test]
    fn urls_are_checked() {
        assert!(addresses(&["nats://127.0.0.1:4222".into(), "localhost:4223".into()]).is_ok());
        let f = addresses(&["nats://a b".into()]).unwrap_err();
        assert_eq!((f.field.as_deref(), f.exit), (Some("nats"), EXIT_INVALID));
        assert_eq!(addresses(&[]).unwrap_err().exit, EXIT_INVALID);
    }

    #[test]
    fn transport_errors_are_unavailable_and_refusals_keep_their_code() {
        let urls = ["nats://127.0.0.1:1".to_owned()];
        let f = failure(
            ClientError::NoResponders {
                subject: "tokens.cmd.acme.trash_token".into(),
            },
            &urls,
            None,
        );
        assert_eq!((f.code, f.exit), ("unavailable", EXIT_UNAVAILABLE));
        assert!(f
            .message
            .starts_with("no tokenledger server answers on nats://127.0.0.1:1"));
        let f = failure(
            ClientError::Timeout {
                subject: "s".into(),
            },
            &urls,
            Some("abc"),
        );
        assert!(f.message.contains("--command-id abc"), "{}", f.message);
        let f = failure(
            ClientError::Rejected(Rejection::conflict(1, 3)),
            &urls,
            None,
        );
        assert_eq!(
            (f.code, f.exit, f.current_version),
            ("conflict", EXIT_RULE, Some(3))
        );
    }
}
