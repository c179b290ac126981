//! `keys rotate | list | jwks | history`: the JWT signing key ring.
//!
//! On the data dir (when no server holds it), or with `--nats` on a running
//! server (`tokens.admin.keys.*`, `tokens.jwks`): a server holds the data
//! dir, so rotation while serving goes through it. Private keys never leave
//! the data dir's `jwt-keys.json` (0600); these commands show public facts
//! only. Every rotation is recorded with its actor and time in the key
//! history.

use crate::app::Ctx;
use crate::failure::Failure;
use crate::output::{print_json, print_text};
use clap::{Args, Subcommand, ValueEnum};
use ledger_crypto::jwt::SigningAlg;
use ledger_store::Store;
use serde_json::{json, Value};

/// `--alg`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum AlgArg {
    /// Ed25519 signatures, published in the JWKS (default).
    #[value(name = "EdDSA")]
    EdDsa,
    /// HMAC-SHA256; never published, so only the ledger can verify its strings.
    #[value(name = "HS256")]
    Hs256,
}

impl AlgArg {
    fn alg(self) -> SigningAlg {
        match self {
            AlgArg::EdDsa => SigningAlg::EdDSA,
            AlgArg::Hs256 => SigningAlg::HS256,
        }
    }
}

/// `keys rotate`.
#[derive(Args, Debug)]
pub struct RotateArgs {
    /// Algorithm of the new key.
    #[arg(long, value_enum, default_value = "EdDSA")]
    pub alg: AlgArg,
}

/// The `keys` subcommands.
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Make a new key the active one; the old one keeps verifying what it signed.
    Rotate(RotateArgs),
    /// List the keys (kid, algorithm, created, retired).
    List,
    /// Print the public keys as a JWKS (EdDSA only; HMAC keys are never published).
    Jwks,
    /// Show who created and rotated keys, and when (hash-chained record).
    History,
}

/// `keys`.
#[derive(Args, Debug)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// Runs a `keys` subcommand.
pub fn run(args: KeysArgs, ctx: &Ctx) -> Result<(), Failure> {
    let result = match &ctx.nats {
        Some(urls) => remote(&args.command, ctx, urls)?,
        None => local(&args.command, ctx)?,
    };
    print(&args.command, &result, ctx.json)
}

/// The answer as JSON: `{"event", "keys"}` for rotate, `{"activeKid", "keys"}`,
/// the JWKS, `{"history"}`.
fn local(cmd: &KeysCommand, ctx: &Ctx) -> Result<Value, Failure> {
    let actor = crate::queries::actor_agent(ctx)?;
    let store = Store::open(&ctx.data_dir, ctx.store_config())?;
    let result = (|| -> Result<Value, Failure> {
        let ring = || store.key_ring().read().expect("key ring lock");
        Ok(match cmd {
            KeysCommand::Rotate(a) => {
                let event = store.rotate_key(a.alg.alg(), actor)?;
                json!({ "event": event, "keys": ring().keys() })
            }
            KeysCommand::List => json!({ "activeKid": ring().active_kid(), "keys": ring().keys() }),
            KeysCommand::Jwks => ring().jwks(),
            KeysCommand::History => json!({ "history": store.key_history()? }),
        })
    })();
    let closed = store.shutdown();
    let value = result?;
    closed?;
    Ok(value)
}

fn remote(cmd: &KeysCommand, ctx: &Ctx, urls: &[String]) -> Result<Value, Failure> {
    let actor = crate::queries::actor_agent(ctx)?;
    crate::remote::run(async {
        let client = crate::remote::connect(urls, &ctx.nats_access)
            .await?
            .with_actor(actor);
        let answer = match cmd {
            KeysCommand::Rotate(a) => client.rotate_key(Some(a.alg.alg().as_str())).await,
            KeysCommand::List => client.keys().await.map(|mut v| {
                if let Some(o) = v.as_object_mut() {
                    o.remove("history");
                }
                v
            }),
            KeysCommand::Jwks => client.jwks().await,
            KeysCommand::History => client
                .keys()
                .await
                .map(|v| json!({ "history": v["history"] })),
        };
        answer.map_err(|e| crate::remote::failure(e, urls, None))
    })
}

fn print(cmd: &KeysCommand, v: &Value, json: bool) -> Result<(), Failure> {
    if json || matches!(cmd, KeysCommand::Jwks) {
        return print_json(v);
    }
    let text = match cmd {
        KeysCommand::Rotate(_) => format!(
            "rotated: {} ({}) is active, {} retired\n\n{}",
            s(&v["event"]["kid"]),
            s(&v["event"]["alg"]),
            s(&v["event"]["previousKid"]),
            key_table(&v["keys"])
        ),
        KeysCommand::List => key_table(&v["keys"]),
        KeysCommand::History => {
            let mut out = format!(
                "{:<4} {:<12} {:<17} {:<6} {:<25} actor",
                "seq", "type", "kid", "alg", "at"
            );
            for e in v["history"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "\n{:<4} {:<12} {:<17} {:<6} {:<25} {}:{}{}",
                    e["seq"].as_u64().unwrap_or(0),
                    s(&e["type"]),
                    s(&e["kid"]),
                    s(&e["alg"]),
                    s(&e["at"]),
                    s(&e["actor"]["agentType"]),
                    s(&e["actor"]["agentId"]),
                    if e["recovered"] == true {
                        " (recovered)"
                    } else {
                        ""
                    }
                ));
            }
            out
        }
        KeysCommand::Jwks => unreachable!("printed as JSON"),
    };
    print_text(&text)
}

fn key_table(keys: &Value) -> String {
    let rows: Vec<[&str; 4]> = keys
        .as_array()
        .into_iter()
        .flatten()
        .map(|k| {
            [
                s(&k["kid"]),
                s(&k["alg"]),
                s(&k["createdAt"]),
                k["retiredAt"].as_str().unwrap_or("- (active)"),
            ]
        })
        .collect();
    // Columns as wide as their widest cell (times carry nanoseconds).
    let width = |i: usize, head: &str| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([head.len()])
            .max()
            .unwrap_or(0)
    };
    let (w0, w1, w2) = (width(0, "kid"), width(1, "alg"), width(2, "created"));
    let mut out = format!(
        "{:<w0$}  {:<w1$}  {:<w2$}  retired",
        "kid", "alg", "created"
    );
    for r in &rows {
        out.push_str(&format!(
            "\n{:<w0$}  {:<w1$}  {:<w2$}  {}",
            r[0], r[1], r[2], r[3]
        ));
    }
    out
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}
