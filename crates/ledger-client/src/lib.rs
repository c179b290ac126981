//! A client of tokenledger over NATS.
//!
//! * **Commands**, request/reply on `tokens.cmd.{workspaceId}.{command}`: one
//!   typed method per command (e.g. [`Client::issue_client_token`]), answering
//!   a [`CommandResult`] or a [`ClientError`]: [`ClientError::Rejected`]
//!   carries the ledger's [`Rejection`] (code, message, `field`,
//!   `currentVersion`), the other variants are transport trouble.
//! * **Queries** on `tokens.query.{workspaceId}.{get|list|history|reveal}`:
//!   [`Client::get`], [`Client::list`], [`Client::history`], [`Client::reveal`].
//! * **Subscriptions** on the JetStream stream `TOKENS`: [`Client::subscribe`]
//!   yields checked [`Envelope`]s in log order, each once, from any position
//!   (see [`subscribe`]).
//! * **Verification**: [`Client::verify`] asks the ledger (`tokens.verify`);
//!   a [`LocalVerifier`] answers in memory from the JWKS and a cache of token
//!   states fed by the stream (see [`local`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), ledger_client::ClientError> {
//! use futures_util::StreamExt;
//! use ledger_client::{Client, EventFilter, IssueClientToken, StartFrom};
//!
//! let client = Client::connect("nats://127.0.0.1:4222").await?;
//! let issued = client
//!     .issue_client_token("acme", IssueClientToken { name: Some("ci".into()), ..Default::default() })
//!     .await?;
//! println!("{:?}", issued.token.and_then(|t| t.token_str));
//!
//! let mut events = client.subscribe(EventFilter::all().workspace("acme"), StartFrom::Start).await?;
//! while let Some(event) = events.next().await {
//!     let event = event?;
//!     println!("{} {} v{}", event.position, event.event_type(), event.version);
//! }
//! # Ok(()) }
//! ```

mod commands;
mod error;
pub mod local;
mod queries;
pub mod subscribe;
pub mod verify;

pub use commands::{
    AssignPermissionGroups, Cmd, CommandOptions, CommandResult, IssueClientToken, Patch,
    PurgeToken, RefreshAccessToken, RegisterAccessToken, RestoreToken, RevokeToken,
    RotateClientToken, TrashToken, TypedCommand, UnassignPermissionGroups, UpdateAccessToken,
    UpdateClientToken,
};
pub use error::ClientError;
pub use ledger_access::{AccessError, NatsAccess};
pub use ledger_core::command::IfExists;
pub use ledger_core::{
    Agent, AgentType, CommandName, Envelope, ErrorCode, EventType, Rejection, Timestamp, TokenKind,
    TokenView,
};
pub use ledger_verify::{Active, Introspection, Reason, TokenStatus};
pub use local::{LocalVerifier, VerifierOptions};
pub use queries::{AsOf, GetBy, ListQuery, Page, Trashed};
pub use subscribe::{EventFilter, StartFrom, Subscription, STREAM_NAME};
pub use verify::SnapshotPage;

use async_nats::jetstream;
use async_nats::{RequestErrorKind, ToServerAddrs};
use ledger_core::validate;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use uuid::Uuid;

/// A connection to the ledger; cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    nats: async_nats::Client,
    js: jetstream::Context,
    actor: Agent,
    /// The server's permissions violations on this connection, when they
    /// are listened for ([`Client::connect_with`], [`Client::with_refusals`]).
    refusals: Option<Refusals>,
}

/// Permissions violations a client keeps for its calls to look at (more
/// at once than calls in flight is unusual; a call that misses one waits
/// for its timeout).
const REFUSALS_KEPT: usize = 64;

/// What NATS refused a connection, as its `-ERR` texts.
///
/// NATS answers a denied publish or subscribe with an asynchronous `-ERR`
/// and nothing else: without listening for it, a request to a subject the
/// user may not use would only time out, as if no server ran.
/// [`Client::connect_with`] listens; a program that makes its own
/// connection does it with [`Refusals::listen`] and [`Client::with_refusals`].
#[derive(Clone, Debug)]
pub struct Refusals {
    /// Every refusal, to the calls in flight.
    heard: tokio::sync::broadcast::Sender<String>,
    /// The refusal of the reply subscription (under the inbox prefix), kept:
    /// NATS says it once, and no request on this connection can get a reply after it.
    inbox: std::sync::Arc<std::sync::OnceLock<String>>,
    /// `Subscription to "{inbox prefix}.`: how that refusal reads.
    inbox_needle: String,
}

impl Refusals {
    /// Sets `options`' event callback (replacing any) to hear the
    /// connection's permissions violations; `inbox_prefix` is the one the
    /// connection uses (`_INBOX` when `None`).
    pub fn listen(
        options: async_nats::ConnectOptions,
        inbox_prefix: Option<&str>,
    ) -> (async_nats::ConnectOptions, Refusals) {
        let (heard, _) = tokio::sync::broadcast::channel(REFUSALS_KEPT);
        let refusals = Refusals {
            heard,
            inbox: std::sync::Arc::new(std::sync::OnceLock::new()),
            inbox_needle: format!("subscription to \"{}.", inbox_prefix.unwrap_or("_INBOX")),
        };
        let listening = refusals.clone();
        let options = options.event_callback(move |event| {
            let refusals = listening.clone();
            async move {
                if let async_nats::Event::ServerError(async_nats::ServerError::Other(said)) = event
                {
                    let lower = said.to_ascii_lowercase();
                    if lower.contains("permissions violation") {
                        if lower.contains(&refusals.inbox_needle.to_ascii_lowercase()) {
                            let _ = refusals.inbox.set(said.clone());
                        }
                        let _ = refusals.heard.send(said);
                    }
                }
            }
        });
        (options, refusals)
    }

    /// Every refusal heard from now on, as the server worded it.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.heard.subscribe()
    }
}

impl Client {
    /// Connects to NATS (one URL, a comma-separated list, or a `Vec` of
    /// them), with the user and password (or token) the URLs carry, as
    /// `nats://gateway:PASSWORD@host:4222`.
    pub async fn connect(urls: impl ToServerAddrs) -> Result<Client, ClientError> {
        let urls: Vec<String> = urls
            .to_server_addrs()
            .map_err(|e| ClientError::Connect(e.to_string()))?
            .map(|addr| addr.into_inner().to_string())
            .collect();
        Client::connect_with(&urls, &NatsAccess::default()).await
    }

    /// Connects with authentication and TLS settings: a credentials file,
    /// an nkey seed, a CA, a client certificate, an inbox prefix (give a
    /// restricted user its own, as `deploy/nats-auth.conf` does), the same
    /// settings `tokenledger` takes. A setting that cannot work is
    /// [`ClientError::Access`], before any connection; passwords never show
    /// in an error.
    pub async fn connect_with(urls: &[String], access: &NatsAccess) -> Result<Client, ClientError> {
        let (options, refusals) = Refusals::listen(
            async_nats::ConnectOptions::new().name("ledger-client"),
            access.inbox_prefix.as_deref(),
        );
        let options = access.apply(options, urls).await?;
        let nats = options
            .connect(urls)
            .await
            .map_err(|e| ClientError::Connect(format!("{} ({e})", ledger_access::shown(urls))))?;
        Ok(Client::with_refusals(nats, refusals))
    }

    /// [`Client::new`] on a connection whose options [`Refusals::listen`]
    /// set: a subject NATS refuses is [`ClientError::Forbidden`] at once.
    pub fn with_refusals(nats: async_nats::Client, refusals: Refusals) -> Client {
        Client {
            refusals: Some(refusals),
            ..Client::new(nats)
        }
    }

    /// Runs `work`, unless the server refuses this connection its replies
    /// (before or meanwhile) or refuses a subject whose text is `needle`:
    /// then [`ClientError::Forbidden`] naming `subject`.
    async fn unless_refused<T>(
        &self,
        needle: String,
        subject: &str,
        work: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        let Some(refusals) = &self.refusals else {
            return work.await;
        };
        let forbidden = |said: String| ClientError::Forbidden {
            subject: subject.to_owned(),
            message: said,
        };
        // Subscribed before the work sends anything, so no refusal of it is missed.
        let mut heard = refusals.heard.subscribe();
        if let Some(said) = refusals.inbox.get() {
            return Err(forbidden(said.clone()));
        }
        let inbox = refusals.inbox_needle.to_ascii_lowercase();
        let refused = async move {
            loop {
                match heard.recv().await {
                    Ok(said) if said.contains(&needle) => return said,
                    Ok(said) if said.to_ascii_lowercase().contains(&inbox) => return said,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await
                    }
                }
            }
        };
        tokio::select! {
            done = work => done,
            said = refused => Err(forbidden(said)),
        }
    }

    /// Uses an existing NATS connection (its request timeout applies).
    ///
    /// The actor of commands is `{"agentId": "ledger-client", "agentType":
    /// "service"}` until [`Client::with_actor`] sets another.
    pub fn new(nats: async_nats::Client) -> Client {
        Client {
            js: jetstream::new(nats.clone()),
            nats,
            actor: Agent {
                agent_id: "ledger-client".to_owned(),
                agent_type: AgentType::Service,
            },
            refusals: None,
        }
    }

    /// The same client acting as `actor` (recorded in events as `createdBy`, ...).
    pub fn with_actor(mut self, actor: Agent) -> Client {
        self.actor = actor;
        self
    }

    /// The actor commands carry by default.
    pub fn actor(&self) -> &Agent {
        &self.actor
    }

    /// The underlying NATS connection.
    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    /// Sends a typed command (with its options, if any).
    pub async fn execute<C: TypedCommand>(
        &self,
        workspace: &str,
        command: impl Into<Cmd<C>>,
    ) -> Result<CommandResult, ClientError> {
        let Cmd { command, options } = command.into();
        let body = serde_json::to_value(&command).map_err(|e| {
            ClientError::Invalid(Rejection::invalid("body", format!("cannot serialize: {e}")))
        })?;
        self.execute_json(workspace, C::NAME, body, &options).await
    }

    /// Sends a command given as a JSON object of its own fields; `commandId`,
    /// `workspaceId`, `actor`, `expectedVersion` and `correlationId` are
    /// filled from `options` (and the defaults) unless the object has them.
    pub async fn execute_json(
        &self,
        workspace: &str,
        name: CommandName,
        body: Value,
        options: &CommandOptions,
    ) -> Result<CommandResult, ClientError> {
        check_workspace(workspace)?;
        let Value::Object(mut body) = body else {
            return Err(ClientError::Invalid(Rejection::invalid(
                "body",
                "a command is a JSON object",
            )));
        };
        let put = |b: &mut Map<String, Value>, k: &str, v: Value| {
            b.entry(k).or_insert(v);
        };
        put(
            &mut body,
            "commandId",
            Value::String(options.command_id.unwrap_or_else(Uuid::new_v4).to_string()),
        );
        put(
            &mut body,
            "workspaceId",
            Value::String(workspace.to_owned()),
        );
        let actor = options.actor.as_ref().unwrap_or(&self.actor);
        put(&mut body, "actor", to_value(actor));
        if let Some(v) = options.expected_version {
            put(&mut body, "expectedVersion", Value::from(v));
        }
        if let Some(c) = &options.correlation_id {
            put(&mut body, "correlationId", Value::String(c.clone()));
        }
        let subject = format!("tokens.cmd.{workspace}.{name}");
        self.request(subject, &Value::Object(body)).await
    }

    /// A token's current view, or its view at an earlier point (`as_of`; a
    /// name or provided id names the token that holds it now). A token that
    /// does not exist (or not in this workspace, or not yet / no longer at
    /// that point) is `not_found`.
    pub async fn get(
        &self,
        workspace: &str,
        by: GetBy,
        as_of: Option<AsOf>,
    ) -> Result<TokenView, ClientError> {
        check_workspace(workspace)?;
        #[derive(Deserialize)]
        struct Got {
            token: TokenView,
        }
        let body = queries::GetQuery { by: &by, as_of };
        let got: Got = self
            .request(format!("tokens.query.{workspace}.get"), &body)
            .await?;
        Ok(got.token)
    }

    /// A live token's current view with its secrets in plaintext: a client
    /// token's `token_str`, an access token's `access_token` and
    /// `refresh_token`. The server logs who asked (this client's actor) and
    /// for which token. A trashed token is `trashed`, a revoked one
    /// `revoked`; an unknown or purged one `not_found`.
    pub async fn reveal(&self, workspace: &str, by: GetBy) -> Result<TokenView, ClientError> {
        check_workspace(workspace)?;
        #[derive(Deserialize)]
        struct Got {
            token: TokenView,
        }
        let body = queries::RevealQuery {
            by: &by,
            actor: &self.actor,
        };
        let got: Got = self
            .request(format!("tokens.query.{workspace}.reveal"), &body)
            .await?;
        Ok(got.token)
    }

    /// One page of the workspace's tokens; follow [`Page::next_cursor`].
    pub async fn list(&self, workspace: &str, query: &ListQuery) -> Result<Page, ClientError> {
        check_workspace(workspace)?;
        self.request(format!("tokens.query.{workspace}.list"), query)
            .await
    }

    /// A token's events in version order, each checked: an event whose
    /// `hash` does not recompute fails the call with [`ClientError::BadEvent`].
    ///
    /// A long history comes in several replies (each fits in one NATS
    /// message), which this follows.
    pub async fn history(
        &self,
        workspace: &str,
        token: Uuid,
    ) -> Result<Vec<Envelope>, ClientError> {
        check_workspace(workspace)?;
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct History {
            events: Vec<Box<RawValue>>,
            next_version: Option<u64>,
        }
        let subject = format!("tokens.query.{workspace}.history");
        let mut raw_events = Vec::new();
        let mut from = 1u64;
        loop {
            let asked = self
                .request::<History>(
                    subject.clone(),
                    &serde_json::json!({ "tokenId": token.to_string(), "fromVersion": from }),
                )
                .await;
            let page = match asked {
                // A server from before paging refuses the field: ask it for
                // the whole history at once, as it answers.
                Err(e) if from == 1 && refuses_unknown_field(&e, "fromVersion") => {
                    self.request::<History>(
                        subject.clone(),
                        &serde_json::json!({ "tokenId": token.to_string() }),
                    )
                    .await?
                }
                other => other?,
            };
            raw_events.extend(page.events);
            match page.next_version {
                // Versions only go up: anything else would loop for ever.
                Some(next) if next > from => from = next,
                Some(next) => {
                    return Err(ClientError::MalformedReply {
                        subject,
                        message: format!("the page from version {from} says next {next}"),
                    })
                }
                None => break,
            }
        }
        raw_events
            .iter()
            .map(|raw| {
                let bad = |reason: String| ClientError::BadEvent {
                    sequence: 0,
                    reason,
                };
                let env = Envelope::from_json(raw.get().as_bytes())
                    .map_err(|e| bad(format!("does not decode: {e}")))?;
                if env.hash != env.computed_hash() {
                    return Err(bad(format!(
                        "hash of position {} does not recompute",
                        env.position
                    )));
                }
                Ok(env)
            })
            .collect()
    }

    /// The ledger's events matching `filter`, from `from` on; see [`subscribe`].
    ///
    /// The consumer exists when this returns: with [`StartFrom::New`], every
    /// event appended afterwards is delivered. Fails when the stream `TOKENS`
    /// does not exist yet (no ledger server has run) or the filter is invalid.
    pub async fn subscribe(
        &self,
        filter: EventFilter,
        from: StartFrom,
    ) -> Result<Subscription, ClientError> {
        let name = subscribe::consumer_name();
        // The create subject goes on with the filter: a prefix.
        let create = format!("$JS.API.CONSUMER.CREATE.{STREAM_NAME}.{name}.");
        let needs_head = matches!(from, StartFrom::New);
        let work = self.unless_refused(
            format!("\"{create}"),
            &create,
            subscribe::subscribe(self.js.clone(), filter, from, name),
        );
        if needs_head {
            // `New` starts after the stream's last sequence, which it must read.
            // (Otherwise the stream's state is optional: see `subscribe`.)
            let stream_info = format!("$JS.API.STREAM.INFO.{STREAM_NAME}");
            return self
                .unless_refused(format!("\"{stream_info}\""), &stream_info, work)
                .await;
        }
        work.await
    }

    /// One request: sends `body` as JSON, decodes `{"ok": true, "result": T}`,
    /// or turns `{"ok": false, "error": ...}` into [`ClientError::Rejected`].
    async fn request<T: DeserializeOwned>(
        &self,
        subject: String,
        body: &impl serde::Serialize,
    ) -> Result<T, ClientError> {
        let payload = serde_json::to_vec(body).map_err(|e| {
            ClientError::Invalid(Rejection::invalid("body", format!("cannot serialize: {e}")))
        })?;
        let sent = self
            .unless_refused(format!("\"{subject}\""), &subject, async {
                Ok(self.nats.request(subject.clone(), payload.into()).await)
            })
            .await?;
        let reply = match sent {
            Ok(reply) => reply,
            Err(e) => {
                return Err(match e.kind() {
                    RequestErrorKind::NoResponders => ClientError::NoResponders { subject },
                    RequestErrorKind::TimedOut => ClientError::Timeout { subject },
                    _ => ClientError::Transport {
                        subject,
                        message: e.to_string(),
                    },
                })
            }
        };
        decode_reply(&subject, &reply.payload)
    }
}

/// The two shapes of a reply.
#[derive(Deserialize)]
struct Reply<'a> {
    ok: bool,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(default)]
    error: Option<Rejection>,
}

fn decode_reply<T: DeserializeOwned>(subject: &str, payload: &[u8]) -> Result<T, ClientError> {
    let malformed = |message: String| ClientError::MalformedReply {
        subject: subject.to_owned(),
        message,
    };
    // Neither the payload nor the value serde quotes: a reply can carry a
    // revealed secret or a token string.
    let reply: Reply<'_> = serde_json::from_slice(payload).map_err(|e| {
        malformed(format!(
            "{} ({} bytes)",
            ledger_core::json::error_text(&e),
            payload.len()
        ))
    })?;
    match reply {
        Reply {
            ok: true,
            result: Some(result),
            ..
        } => serde_json::from_str(result.get())
            .map_err(|e| malformed(format!("result: {}", ledger_core::json::error_text(&e)))),
        Reply {
            ok: false,
            error: Some(rejection),
            ..
        } => Err(ClientError::Rejected(rejection)),
        Reply { ok, .. } => Err(malformed(format!(
            "\"ok\": {ok} without {}",
            if ok { "\"result\"" } else { "\"error\"" }
        ))),
    }
}

/// Whether `e` is a server refusing `field` as unknown (it predates it).
fn refuses_unknown_field(e: &ClientError, field: &str) -> bool {
    e.rejection().is_some_and(|r| {
        r.code == ErrorCode::InvalidInput
            && r.field.as_deref() == Some(field)
            && r.message.contains("unknown field")
    })
}

fn check_workspace(workspace: &str) -> Result<(), ClientError> {
    validate::workspace_id("workspaceId", workspace).map_err(ClientError::Invalid)
}

fn to_value(v: &impl serde::Serialize) -> Value {
    serde_json::to_value(v).expect("plain data serializes")
}

macro_rules! command_methods {
    ($($method:ident($ty:ident) = $wire:literal,)*) => {
        impl Client {$(
            #[doc = concat!("`", $wire, "`; options (`expectedVersion`, `commandId`, ...) through [`TypedCommand`]'s helpers.")]
            pub async fn $method(
                &self,
                workspace: &str,
                command: impl Into<Cmd<$ty>>,
            ) -> Result<CommandResult, ClientError> {
                self.execute(workspace, command).await
            }
        )*}
    };
}

command_methods! {
    issue_client_token(IssueClientToken) = "issue_client_token",
    update_client_token(UpdateClientToken) = "update_client_token",
    assign_permission_groups(AssignPermissionGroups) = "assign_permission_groups",
    unassign_permission_groups(UnassignPermissionGroups) = "unassign_permission_groups",
    rotate_client_token(RotateClientToken) = "rotate_client_token",
    register_access_token(RegisterAccessToken) = "register_access_token",
    refresh_access_token(RefreshAccessToken) = "refresh_access_token",
    update_access_token(UpdateAccessToken) = "update_access_token",
    trash_token(TrashToken) = "trash_token",
    restore_token(RestoreToken) = "restore_token",
    revoke_token(RevokeToken) = "revoke_token",
    purge_token(PurgeToken) = "purge_token",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_from_before_history_pages_is_recognised_by_its_refusal() {
        // What such a server answers (its strict query decoding).
        let old = decode_reply::<Value>(
            "s",
            br#"{"ok":false,"error":{"code":"invalid_input","field":"fromVersion","message":"invalid query: unknown field `fromVersion`, expected `tokenId`"}}"#,
        )
        .unwrap_err();
        assert!(refuses_unknown_field(&old, "fromVersion"));
        // The current server's "ask in pages" is no such refusal.
        let paged = decode_reply::<Value>(
            "s",
            br#"{"ok":false,"error":{"code":"invalid_input","field":"fromVersion","message":"this history is larger than one reply"}}"#,
        )
        .unwrap_err();
        assert!(!refuses_unknown_field(&paged, "fromVersion"));
    }

    #[test]
    fn replies_decode_into_results_or_typed_rejections() {
        let ok: Value = decode_reply("s", br#"{"ok":true,"result":{"a":1}}"#).unwrap();
        assert_eq!(ok["a"], 1);
        let err = decode_reply::<Value>(
            "s",
            br#"{"ok":false,"error":{"code":"conflict","message":"m","field":"expectedVersion","currentVersion":4}}"#,
        )
        .unwrap_err();
        assert_eq!(err.code(), "conflict");
        let r = err.rejection().unwrap();
        assert_eq!(r.current_version, Some(4));
        assert_eq!(r.field.as_deref(), Some("expectedVersion"));
        assert!(!err.is_transport());
        for bad in [&b"nope"[..], br#"{"ok":true}"#, br#"{"ok":false}"#] {
            let e = decode_reply::<Value>("s", bad).unwrap_err();
            assert_eq!(e.code(), "malformed_reply", "{e}");
        }
    }

    #[test]
    fn workspaces_are_checked_before_sending() {
        for bad in ["", "a.b", "a*", ">", "a b"] {
            let e = check_workspace(bad).unwrap_err();
            assert_eq!(e.code(), "invalid_input");
        }
        check_workspace("acme_1-x").unwrap();
    }
}
