//! Queries over request/reply: `tokens.query.{workspaceId}.{get|list|history|reveal}`.
//!
//! `reveal` is `get` with the token's secrets in plaintext (a client
//! token's `tokenStr`, an access token's `accessToken` and `refreshToken`):
//! the "explicit request" of PRODUCT.md. It has a subject of its own so that
//! a NATS permission can grant `get` without it, and it names its `actor`,
//! whom the audit log records with the token (never the secrets).

use crate::commands::subject_workspace;
use crate::reply::ReplyLimit;
use crate::subjects::{request_parts, QUERY_NAMES};
use crate::NatsError;
use chrono::Utc;
use ledger_core::{validate, Agent, ErrorCode, Rejection, Timestamp};
use ledger_projector::{
    AsOf, ListFilter, Lookup, PageBudget, Projector, ProjectorError, Views, LIST_LIMIT_MAX,
};
use ledger_store::Store;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::watch;
use uuid::Uuid;

/// The four queries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Query {
    Get,
    List,
    History,
    Reveal,
}

impl Query {
    pub const ALL: [Query; 4] = [Query::Get, Query::List, Query::History, Query::Reveal];

    pub fn name(self) -> &'static str {
        match self {
            Query::Get => QUERY_NAMES[0],
            Query::List => QUERY_NAMES[1],
            Query::History => QUERY_NAMES[2],
            Query::Reveal => QUERY_NAMES[3],
        }
    }

    pub fn parse(name: &str) -> Option<Query> {
        Query::ALL.into_iter().find(|q| q.name() == name)
    }
}

/// What query handlers need.
///
/// The projector is owned here: one writer of the `views` tree per process
/// (nothing else may run a projector on the same data dir while [`crate::run`]
/// serves). Queries catch it up to the log's head before reading, so a caller
/// reads its own writes. That is done lazily, on queries only: keeping the
/// views current after every commit costs as much as the commits themselves
/// (measured: 14k commands/s over NATS without, 6k/s with a follower on 2
/// cores), and lazily the work comes in large, cheaper batches.
pub(crate) struct QueryContext {
    store: Store,
    projector: Arc<tokio::sync::Mutex<Projector>>,
    /// The projector's checkpoint, readable without its lock.
    applied: watch::Receiver<u64>,
    views: Views,
    /// Pages are cut to fit in a reply.
    pub(crate) reply_limit: ReplyLimit,
}

impl QueryContext {
    pub fn new(store: Store, reply_limit: ReplyLimit) -> Result<QueryContext, NatsError> {
        let projector = Projector::open(store.db())
            .map_err(|e| NatsError::Views(format!("opening the views: {e}")))?;
        Ok(QueryContext {
            store,
            applied: projector.subscribe(),
            views: projector.views(),
            projector: Arc::new(tokio::sync::Mutex::new(projector)),
            reply_limit,
        })
    }

    /// Catches the views up to the head (as it is now), off the async runtime.
    async fn catch_up(&self) -> Result<(), Rejection> {
        let head = self.store.head_position();
        if *self.applied.borrow() >= head {
            return Ok(());
        }
        // Queries arriving meanwhile wait here, not in the blocking pool.
        let mut projector = self.projector.clone().lock_owned().await;
        if projector.checkpoint() >= head {
            return Ok(());
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || projector.catch_up(&store))
            .await
            .map_err(|e| Rejection::new(ErrorCode::Internal, e.to_string()))?
            .map_err(|e| projector_rejection(&e))?;
        Ok(())
    }

    /// Runs `f` on the views caught up to the head and the position they
    /// cover, holding the projector still so that both agree.
    pub(crate) async fn at_head<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Views, u64) -> Result<T, ProjectorError> + Send + 'static,
    ) -> Result<T, Rejection> {
        let mut projector = self.projector.clone().lock_owned().await;
        let store = self.store.clone();
        let views = self.views.clone();
        tokio::task::spawn_blocking(move || {
            let position = projector.catch_up(&store)?;
            f(&views, position)
        })
        .await
        .map_err(|e| Rejection::new(ErrorCode::Internal, e.to_string()))?
        .map_err(|e| projector_rejection(&e))
    }
}

/// Handles one query request; the reply's `result` or the rejection.
pub(crate) async fn handle(
    ctx: &QueryContext,
    query: Query,
    subject: &str,
    payload: &[u8],
) -> Result<Value, Rejection> {
    let workspace = subject_workspace(subject)?.to_owned();
    match query {
        Query::Get => get(ctx, workspace, body(payload)?).await,
        Query::Reveal => reveal(ctx, workspace, body(payload)?).await,
        Query::List => {
            let mut filter: ListFilter = body(payload)?;
            filter.max_bytes = Some(ctx.reply_limit.page_bytes_max());
            if !(1..=LIST_LIMIT_MAX).contains(&filter.limit) {
                return Err(Rejection::invalid(
                    "limit",
                    format!("limit must be between 1 and {LIST_LIMIT_MAX}"),
                ));
            }
            ctx.catch_up().await?;
            let views = ctx.views.clone();
            let page = blocking_views(move || views.list(&workspace, &filter, now())).await?;
            Ok(serde_json::to_value(page).expect("a page serializes"))
        }
        Query::History => {
            let q: HistoryQuery = body(payload)?;
            let token_id = validate::uuid("tokenId", &q.token_id)?;
            let from = q.from_version.unwrap_or(1);
            if from == 0 {
                return Err(Rejection::invalid("fromVersion", "versions start at 1"));
            }
            let store = ctx.store.clone();
            let events = blocking(move || store.token_events(&token_id, None)).await?;
            if events.is_empty() || events.iter().any(|e| e.workspace_id != workspace) {
                return Err(not_found(&token_id.to_string()).with_field("tokenId"));
            }
            // A long history goes out in pages that each fit in a reply, to
            // a caller that asks for pages (`fromVersion`). One that does not
            // would take the first page for the whole history: it gets all,
            // or an error that says to page.
            let mut budget = PageBudget::new(Some(ctx.reply_limit.page_bytes_max()));
            let mut page = Vec::new();
            let mut next_version = None;
            for event in events.iter().filter(|e| e.version >= from) {
                if !budget.admits(event, page.is_empty()) {
                    next_version = Some(event.version);
                    break;
                }
                page.push(event);
            }
            if q.from_version.is_none() {
                if next_version.is_some() {
                    return Err(Rejection::invalid(
                        "fromVersion",
                        "this history is larger than one reply: ask for it in pages, \
                         with fromVersion (1 for the first page; each reply's nextVersion \
                         for the next)",
                    ));
                }
                return Ok(json!({ "events": page }));
            }
            Ok(json!({ "events": page, "nextVersion": next_version }))
        }
    }
}

/// `get`: exactly one of `tokenId`, `name`, `providedResourceId`, and an optional `asOf`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GetQuery {
    token_id: Option<String>,
    name: Option<String>,
    provided_resource_id: Option<String>,
    as_of: Option<AsOf>,
}

/// The one lookup a `get` or `reveal` names, and how a `not_found` describes it.
fn lookup_of(
    token_id: Option<String>,
    name: Option<String>,
    provided_resource_id: Option<String>,
) -> Result<(Lookup, String), Rejection> {
    let lookup = match (token_id, name, provided_resource_id) {
        (Some(id), None, None) => Lookup::Id(validate::uuid("tokenId", &id)?),
        (None, Some(name), None) => Lookup::Name(name),
        (None, None, Some(provided)) => Lookup::ProvidedId(provided),
        _ => {
            return Err(Rejection::invalid(
                "body",
                "give exactly one of tokenId, name and providedResourceId",
            ))
        }
    };
    let described = match &lookup {
        Lookup::Id(id) => id.to_string(),
        Lookup::Name(n) => format!("named {n:?}"),
        Lookup::ProvidedId(p) => format!("with providedResourceId {p:?}"),
    };
    Ok((lookup, described))
}

async fn get(ctx: &QueryContext, workspace: String, q: GetQuery) -> Result<Value, Rejection> {
    let (lookup, described) = lookup_of(q.token_id, q.name, q.provided_resource_id)?;
    let field = lookup.field();
    let view = match q.as_of {
        Some(as_of) => {
            as_of.check()?;
            let id = holder(ctx, &workspace, lookup, || {
                Rejection::new(ErrorCode::NotFound, as_of_holder(&described))
            })
            .await?;
            let store = ctx.store.clone();
            blocking_views(move || Projector::get_as_of(&store, id, as_of))
                .await?
                .filter(|v| v.workspace_id == workspace)
        }
        None => {
            ctx.catch_up().await?;
            let views = ctx.views.clone();
            blocking_views(move || views.get(&workspace, lookup, now())).await?
        }
    };
    match view {
        Some(view) => Ok(json!({ "token": view })),
        None => Err(not_found(&described).with_field(field)),
    }
}

/// The id of the token a lookup names: a name or provided id names the token
/// that holds it now (it may have changed hands since), as the CLI resolves
/// it; `missing()` on the lookup's field when none does.
async fn holder(
    ctx: &QueryContext,
    workspace: &str,
    lookup: Lookup,
    missing: impl FnOnce() -> Rejection,
) -> Result<Uuid, Rejection> {
    let field = lookup.field();
    if let Lookup::Id(id) = lookup {
        return Ok(id);
    }
    ctx.catch_up().await?;
    let views = ctx.views.clone();
    let ws = workspace.to_owned();
    Ok(blocking_views(move || views.get(&ws, lookup, now()))
        .await?
        .ok_or_else(|| missing().with_field(field))?
        .token_id())
}

/// `reveal`: exactly one of `tokenId`, `name`, `providedResourceId`, and who asks.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RevealQuery {
    token_id: Option<String>,
    name: Option<String>,
    provided_resource_id: Option<String>,
    actor: Agent,
}

async fn reveal(ctx: &QueryContext, workspace: String, q: RevealQuery) -> Result<Value, Rejection> {
    validate::actor(&q.actor)?;
    let (lookup, described) = lookup_of(q.token_id, q.name, q.provided_resource_id)?;
    let field = lookup.field();
    let token_id = holder(ctx, &workspace, lookup, || not_found(&described)).await?;
    let store = ctx.store.clone();
    let ws = workspace.clone();
    let view = tokio::task::spawn_blocking(move || store.reveal(&ws, &token_id))
        .await
        .map_err(|e| Rejection::new(ErrorCode::Internal, e.to_string()))?
        .map_err(|e| match e.code {
            ErrorCode::NotFound => not_found(&described).with_field(field),
            _ => e,
        })?;
    // The audit trail of who read which token's secrets; never the secrets.
    tracing::info!(
        target: ledger_store::AUDIT_LOG_TARGET,
        workspace = %workspace,
        token_id = %token_id,
        kind = view.kind.as_str(),
        agent_id = %q.actor.agent_id,
        agent_type = q.actor.agent_type.as_str(),
        "audit: token secrets revealed"
    );
    Ok(json!({ "token": view.with_expired(now()) }))
}

fn now() -> Timestamp {
    Timestamp::new(Utc::now())
}

/// Bad paging input is the caller's; storage trouble is `unavailable`; the rest `internal`.
fn projector_rejection(e: &ProjectorError) -> Rejection {
    match e {
        ProjectorError::InvalidCursor(_) => Rejection::invalid("cursor", e.to_string()),
        ProjectorError::InvalidLimit(_) => Rejection::invalid("limit", e.to_string()),
        ProjectorError::Sled(_) => Rejection::new(ErrorCode::Unavailable, e.to_string()),
        ProjectorError::Store(s) => s.to_rejection(),
        _ => Rejection::new(ErrorCode::Internal, e.to_string()),
    }
}

/// Runs views work off the async runtime.
async fn blocking_views<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ProjectorError> + Send + 'static,
) -> Result<T, Rejection> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Rejection::new(ErrorCode::Internal, e.to_string()))?
        .map_err(|e| projector_rejection(&e))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HistoryQuery {
    token_id: String,
    /// The first version wanted (default 1): the previous page's `nextVersion`.
    from_version: Option<u64>,
}

/// Decodes a query body strictly; an empty body is `{}`.
pub(crate) fn body<T: DeserializeOwned>(payload: &[u8]) -> Result<T, Rejection> {
    let payload: &[u8] = if payload.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        payload
    };
    let value = ledger_core::json::parse_strict(payload).map_err(|e| {
        Rejection::invalid(
            "body",
            format!("malformed JSON: {}", ledger_core::json::error_text(&e)),
        )
    })?;
    if !value.is_object() {
        return Err(Rejection::invalid("body", "a query is a JSON object"));
    }
    decode(value)
}

/// Decodes, naming the offending field (as a JSON path) in the rejection.
fn decode<T: DeserializeOwned>(value: Value) -> Result<T, Rejection> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().to_string();
        let field = if path != "." {
            path
        } else {
            // serde names an unknown or missing field in backticks.
            message
                .split('`')
                .nth(1)
                .map_or_else(|| "body".to_owned(), str::to_owned)
        };
        let shown = ledger_core::json::error_text(e.inner());
        Rejection::invalid(field, format!("invalid query: {shown}"))
    })
}

/// Why a name or provided id with `asOf` found nothing: it names the token
/// that holds it now, and none does.
fn as_of_holder(described: &str) -> String {
    format!(
        "no token {described} now in this workspace: with asOf, a name or provided id \
         names the token that holds it now (audit replay shows the names as they were)"
    )
}

fn not_found(described: &str) -> Rejection {
    Rejection::new(
        ErrorCode::NotFound,
        format!("no token {described} in this workspace"),
    )
}

/// Runs storage work off the async runtime; storage trouble becomes `unavailable`.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ledger_store::StoreError> + Send + 'static,
) -> Result<T, Rejection> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Rejection::new(ErrorCode::Internal, e.to_string()))?
        .map_err(|e| e.to_rejection())
}

/// The rejection for a subject naming no known query.
pub(crate) fn unknown_query(subject: &str) -> Rejection {
    let op = request_parts(subject).map_or(subject, |(_, op)| op);
    Rejection::new(
        ErrorCode::InvalidInput,
        format!(
            "unknown query {op:?} (subject {subject}); queries are: {}",
            QUERY_NAMES.join(", ")
        ),
    )
    .with_field("query")
}
