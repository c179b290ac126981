//! `verify TOKEN_STR`: RFC 7662-style introspection of a client token string.
//!
//! On the data dir (the ledger's own key ring and log), or with `--nats`
//! through a running server's `tokens.verify`. Prints `{"active": true,
//! ...claims}` or exactly `{"active": false}` with `--json`, a line
//! otherwise; either way the exit code is 0, since an inactive string is an
//! answer, not a failure. The reason of a refusal goes to the log
//! (`RUST_LOG=info`), as on the server.

use crate::app::Ctx;
use crate::failure::Failure;
use crate::output::{print_json, print_text};
use clap::Args;
use ledger_store::{Store, Verifier};
use ledger_verify::Introspection;

/// `verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// `-` to read the token string (a JWT) from stdin, or the string itself
    /// (then it shows in `ps` and in shell history).
    #[arg(value_name = "TOKEN_STR")]
    pub token_str: String,
}

/// Runs `verify`.
pub fn run(args: VerifyArgs, ctx: &Ctx) -> Result<(), Failure> {
    let token = if args.token_str == "-" {
        crate::input::read_source("tokenStr", "-")?
            .trim()
            .to_owned()
    } else {
        args.token_str
    };
    let answer = match &ctx.nats {
        Some(urls) => crate::remote::run(async {
            let client = crate::remote::connect(urls, &ctx.nats_access).await?;
            client
                .verify(&token)
                .await
                .map_err(|e| crate::remote::failure(e, urls, None))
        })?,
        None => {
            let store = Store::open(&ctx.data_dir, ctx.store_config())?;
            let answer = Verifier::new(store.clone()).introspect(&token, chrono::Utc::now());
            store.shutdown()?;
            answer
        }
    };
    if ctx.json {
        let value = serde_json::to_value(&answer)
            .map_err(|e| Failure::internal(format!("cannot encode the answer: {e}")))?;
        return print_json(&value);
    }
    print_text(&match answer {
        Introspection::Inactive => "inactive".to_owned(),
        Introspection::Active(a) => format!(
            "active: token {} in workspace {}{}, key {}, groups [{}]{}",
            a.token_id,
            a.workspace_id,
            a.name.as_ref().map_or(String::new(), |n| format!(" ({n})")),
            a.kid,
            a.permission_groups.join(", "),
            a.expires
                .and_then(ledger_core::Timestamp::from_millis)
                .map_or(String::new(), |t| format!(", expires {t}")),
        ),
    })
}
