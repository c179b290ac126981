//! Queries: `get`, `list`, `history`.
//!
//! Each catches the views up with the log first, so it sees every command
//! acknowledged before it started, including ones from a process that crashed
//! before projecting them. A token of another workspace is `not_found`, never
//! shown.

use crate::app::{Ctx, Ledger};
use crate::failure::Failure;
use crate::input;
use crate::output::{self, print_json, print_text, view_json};
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use ledger_core::{validate, Envelope, Timestamp, TokenKind, TokenView};
use ledger_projector::{AsOf, ListFilter, Lookup, TrashedFilter, LIST_LIMIT_DEFAULT};
use serde_json::json;
use uuid::Uuid;

/// `get`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("which").required(true).args(["token", "name", "provided_id"])))]
#[command(group(ArgGroup::new("as_of").args(["as_of_version", "as_of_position", "as_of_time"])))]
pub struct GetArgs {
    /// The token id.
    #[arg(value_name = "TOKEN")]
    pub token: Option<String>,
    /// Find a client token by name (case-insensitive).
    #[arg(long, value_name = "N")]
    pub name: Option<String>,
    /// Find a client token by its provided resource id.
    #[arg(long, value_name = "P")]
    pub provided_id: Option<String>,
    /// The token as it was at this version.
    #[arg(long, value_name = "N")]
    pub as_of_version: Option<u64>,
    /// The token as it was when the log ended at this position.
    #[arg(long, value_name = "N")]
    pub as_of_position: Option<u64>,
    /// The token as it was at this time (RFC 3339).
    #[arg(long, value_name = "T")]
    pub as_of_time: Option<String>,
    /// Show the client token's string: the current one of a live token (a
    /// reveal: logged, with --actor), or, on the data dir only, an earlier
    /// version's (with --as-of-*). An access token has none: its view.
    #[arg(long)]
    pub show_token_str: bool,
    /// Show the token's secrets in plaintext: a client token's string, an
    /// access token's access and refresh tokens. Live tokens only (trashed
    /// and revoked ones are refused); the ledger logs who asked (--actor).
    #[arg(long, conflicts_with_all = ["as_of_version", "as_of_position", "as_of_time", "show_token_str"])]
    pub reveal: bool,
}

/// `--kind`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum KindArg {
    /// Client tokens.
    Client,
    /// Provider access tokens.
    Access,
}

/// `--trashed`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TrashedArg {
    /// Hide trashed tokens (default).
    Exclude,
    /// Show trashed tokens too.
    Include,
    /// Show only trashed tokens.
    Only,
}

/// `list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only this kind.
    #[arg(long, value_enum)]
    pub kind: Option<KindArg>,
    /// Only access tokens of this user.
    #[arg(long, value_name = "UUID")]
    pub user: Option<String>,
    /// Only access tokens of this provider.
    #[arg(long, value_name = "P")]
    pub provider: Option<String>,
    /// Trashed tokens: hide, include, or show only them.
    #[arg(long, value_enum, default_value = "exclude")]
    pub trashed: TrashedArg,
    /// Only revoked (true) or not revoked (false) tokens.
    #[arg(long, value_name = "BOOL")]
    pub revoked: Option<bool>,
    /// Only expired (true) or unexpired (false) tokens.
    #[arg(long, value_name = "BOOL")]
    pub expired: Option<bool>,
    /// At most this many tokens per page (1 to 1000) [default: 100]
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
    /// Continue after the page that returned this cursor.
    #[arg(long, value_name = "C")]
    pub cursor: Option<String>,
}

/// `history`.
#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// The token id.
    #[arg(value_name = "TOKEN")]
    pub token: String,
}

/// The queries.
#[derive(Subcommand, Debug)]
pub enum QueryCommand {
    /// Show one token (now, or as it was at a version, position or time).
    Get(GetArgs),
    /// List the workspace's tokens (trashed ones hidden unless asked for).
    List(ListArgs),
    /// Show a token's events in version order.
    History(HistoryArgs),
}

/// Runs a query: on the data dir, or over NATS with `--nats`.
pub fn run(cmd: QueryCommand, ctx: &Ctx) -> Result<(), Failure> {
    let ws = ctx.workspace()?.to_owned();
    if let Some(urls) = &ctx.nats {
        return crate::remote::query(cmd, ctx, urls, &ws);
    }
    match cmd {
        QueryCommand::Get(a) => get(a, ctx, &ws),
        QueryCommand::List(a) => list(a, ctx, &ws),
        QueryCommand::History(a) => history(a, ctx, &ws),
    }
}

/// What `get` asks for: the lookup, the point in time, and how to name the token in `not_found`.
pub struct GetParts {
    /// Which token.
    pub lookup: Lookup,
    /// When, if not now.
    pub as_of: Option<AsOf>,
    /// "token 1234…", "token named \"ci\"", for messages.
    pub describe: String,
}

impl GetParts {
    /// Checks and converts `get`'s flags.
    pub fn of(args: &GetArgs) -> Result<GetParts, Failure> {
        let lookup = match (&args.token, &args.name, &args.provided_id) {
            (Some(t), _, _) => Lookup::Id(validate::uuid("tokenId", t)?),
            (_, Some(n), _) => Lookup::Name(n.clone()),
            (_, _, Some(p)) => Lookup::ProvidedId(p.clone()),
            _ => unreachable!("clap requires one of them"),
        };
        let as_of = match (args.as_of_version, args.as_of_position, &args.as_of_time) {
            (Some(v), _, _) => Some(AsOf::Version(v)),
            (_, Some(p), _) => Some(AsOf::Position(p)),
            (_, _, Some(t)) => Some(AsOf::Time(input::timestamp("asOf.time", t)?)),
            _ => None,
        };
        if let Some(as_of) = &as_of {
            as_of.check()?;
        }
        let describe = match &lookup {
            Lookup::Id(id) => format!("token {id}"),
            Lookup::Name(n) => format!("token named {n:?}"),
            Lookup::ProvidedId(p) => format!("token with providedResourceId {p:?}"),
        };
        Ok(GetParts {
            lookup,
            as_of,
            describe,
        })
    }

    /// `not_found` for this lookup in `ws`.
    pub fn not_found(&self, ws: &str) -> Failure {
        let message = format!(
            "no {} in workspace {ws}{}",
            self.describe,
            if self.as_of.is_some() {
                " at that point"
            } else {
                ""
            }
        );
        Failure::not_found_by(self.lookup.field(), message)
    }

    /// `not_found` when a name or provided id with `--as-of-*` names no
    /// token now: it names the token that holds it now.
    pub fn no_holder(&self, ws: &str) -> Failure {
        Failure::not_found_by(
            self.lookup.field(),
            format!(
                "no {} now in workspace {ws}: with --as-of-*, a name or provided id names \
                 the token that holds it now (audit replay --as-of shows the names as they were)",
                self.describe
            ),
        )
    }
}

/// Prints `get`'s result.
pub fn print_view(ctx: &Ctx, view: &TokenView, now: Timestamp) -> Result<(), Failure> {
    if ctx.json {
        print_json(&json!({ "token": view_json(view)? }))
    } else {
        print_text(&output::view_detail(view, now))
    }
}

/// Who asks for a `get --reveal` or a key rotation: `--actor`, or the
/// default actor, checked as a command's actor is.
pub fn actor_agent(ctx: &Ctx) -> Result<ledger_core::Agent, Failure> {
    let actor = ctx.actor_json()?;
    let agent: ledger_core::Agent = serde_json::from_value(actor)
        .map_err(|e| Failure::invalid("actor", format!("--actor: {e}")))?;
    ledger_core::validate::actor(&agent)?;
    Ok(agent)
}

/// The audit record of a reveal on the data dir, as `serve` writes one.
fn log_reveal(ws: &str, view: &TokenView, actor: &ledger_core::Agent) {
    tracing::info!(
        target: ledger_store::AUDIT_LOG_TARGET,
        workspace = ws,
        token_id = %view.token_id(),
        kind = view.kind.as_str(),
        agent_id = %actor.agent_id,
        agent_type = actor.agent_type.as_str(),
        "audit: token secrets revealed"
    );
}

/// Prints one page of `list`.
pub fn print_page(
    ctx: &Ctx,
    items: &[TokenView],
    next_cursor: Option<&str>,
    now: Timestamp,
) -> Result<(), Failure> {
    if ctx.json {
        let items = items.iter().map(view_json).collect::<Result<Vec<_>, _>>()?;
        return print_json(&json!({ "items": items, "nextCursor": next_cursor }));
    }
    let mut text = if items.is_empty() {
        "no tokens".to_owned()
    } else {
        output::token_table(items, now)
    };
    if let Some(c) = next_cursor {
        text.push_str(&format!("\nmore: --cursor {c}"));
    }
    print_text(&text)
}

/// Prints `history`'s events, or `not_found` when there are none in `ws`.
pub fn print_history(ctx: &Ctx, ws: &str, id: Uuid, events: &[Envelope]) -> Result<(), Failure> {
    if events.is_empty() || events.iter().any(|e| e.workspace_id != ws) {
        return Err(history_not_found(ws, id));
    }
    if ctx.json {
        let events: Vec<_> = events.iter().map(|e| e.to_json_value()).collect();
        print_json(&json!({ "events": events }))
    } else {
        print_text(&output::history_table(events))
    }
}

/// `not_found` for `history`.
pub fn history_not_found(ws: &str, id: Uuid) -> Failure {
    Failure::not_found_by("tokenId", format!("no token {id} in workspace {ws}"))
}

/// `list`'s flags as the projector's filter.
pub fn list_filter(args: &ListArgs) -> Result<ListFilter, Failure> {
    let user_id = match &args.user {
        Some(u) => Some(validate::uuid("userId", u)?),
        None => None,
    };
    Ok(ListFilter {
        kind: args.kind.map(|k| match k {
            KindArg::Client => TokenKind::Client,
            KindArg::Access => TokenKind::Access,
        }),
        user_id,
        provider: args.provider.clone(),
        trashed: match args.trashed {
            TrashedArg::Exclude => TrashedFilter::Exclude,
            TrashedArg::Include => TrashedFilter::Include,
            TrashedArg::Only => TrashedFilter::Only,
        },
        revoked: args.revoked,
        expired: args.expired,
        limit: args.limit.unwrap_or(LIST_LIMIT_DEFAULT),
        cursor: args.cursor.clone(),
        // On the data dir nothing caps a page but its limit.
        max_bytes: None,
    })
}

fn get(args: GetArgs, ctx: &Ctx, ws: &str) -> Result<(), Failure> {
    let parts = GetParts::of(&args)?;
    let now = ctx.now();
    Ledger::with(ctx, |ledger| {
        ledger.catch_up()?;
        let view = match parts.as_of {
            None => ledger.projector.get(ws, parts.lookup.clone(), now)?,
            Some(as_of) => {
                // A name or provided id names the token that holds it now.
                let id = match &parts.lookup {
                    Lookup::Id(id) => *id,
                    other => match ledger.projector.get(ws, other.clone(), now)? {
                        Some(holder) => holder.token_id(),
                        None => return Err(parts.no_holder(ws)),
                    },
                };
                // `expired` as at that point (get_as_of's), as over NATS
                // and in `audit replay`, not as now.
                ledger_projector::get_as_of(&ledger.store, id, as_of)?
                    .filter(|v| v.workspace_id == ws)
            }
        };
        let Some(mut view) = view else {
            return Err(parts.not_found(ws));
        };
        // An access token has no string: --show-token-str shows its view.
        let show_token_str = args.show_token_str && view.kind == TokenKind::Client;
        if args.reveal || (show_token_str && parts.as_of.is_none()) {
            // The current string is a reveal, with its rule and its audit
            // record, as over NATS.
            let actor = actor_agent(ctx)?;
            view = ledger.store.reveal(ws, &view.token_id())?.with_expired(now);
            log_reveal(ws, &view, &actor);
            if !args.reveal {
                view.access_token = None;
                view.refresh_token = None;
            }
        } else if show_token_str {
            // An earlier version's string, for an investigation (which
            // string did the token carry then?): re-minted from the data
            // dir only, whatever the token's state now, and recorded too.
            let actor = actor_agent(ctx)?;
            view.token_str = ledger.store.token_str(&view)?;
            log_reveal(ws, &view, &actor);
        }
        print_view(ctx, &view, now)
    })
}

fn list(args: ListArgs, ctx: &Ctx, ws: &str) -> Result<(), Failure> {
    let filter = list_filter(&args)?;
    let now = ctx.now();
    Ledger::with(ctx, |ledger| {
        ledger.catch_up()?;
        let page = ledger.projector.list(ws, &filter, now)?;
        print_page(ctx, &page.items, page.next_cursor.as_deref(), now)
    })
}

fn history(args: HistoryArgs, ctx: &Ctx, ws: &str) -> Result<(), Failure> {
    let id: Uuid = validate::uuid("tokenId", &args.token)?;
    Ledger::with(ctx, |ledger| {
        let events = ledger.store.token_events(&id, None)?;
        print_history(ctx, ws, id, &events)
    })
}
