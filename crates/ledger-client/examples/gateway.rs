//! A gateway's token check, as `deploy/nats-auth.conf`'s `gateway` role
//! runs it: connect with the gateway's user and inbox prefix, verify token
//! strings in memory, refuse every acceptance once the verifier cannot
//! prove it holds every event, and report staleness for a health check.
//!
//! ```sh
//! TOKENLEDGER_NATS='nats://gateway:PASSWORD@127.0.0.1:4222' \
//!   cargo run -p ledger-client --example gateway -- token.jwt
//! ```
//!
//! It checks the string in `token.jwt` every second and prints the verdict
//! when it changes, with the verifier's staleness.

use ledger_client::{Client, LocalVerifier, NatsAccess, VerifierOptions};
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("TOKENLEDGER_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let path = std::env::args().nth(1).ok_or("usage: gateway TOKEN_FILE")?;
    let token = std::fs::read_to_string(path)?.trim().to_owned();

    // Replies under the gateway's own prefix: it may read no one else's.
    let access = NatsAccess {
        inbox_prefix: Some("_INBOX.gateway".into()),
        ..NatsAccess::default()
    };
    let client = Client::connect_with(&[url], &access).await?;
    let options = VerifierOptions {
        // Past 30 s without proof of holding every event, accept nothing:
        // a revocation may be waiting behind a cut link.
        max_staleness: Some(Duration::from_secs(30)),
        ..VerifierOptions::default()
    };
    let verifier = LocalVerifier::start_with(client, None, options).await?;

    let mut last = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let verdict = verifier.check(&token).map(|active| active.token_id);
        if last.as_ref() != Some(&verdict) {
            match &verdict {
                Ok(id) => println!("active: token {id}"),
                Err(reason) => println!("inactive: {reason}"),
            }
            last = Some(verdict);
        }
        if verifier.staleness() > Duration::from_secs(5) {
            eprintln!(
                "health: behind for {:?} (position {})",
                verifier.staleness(),
                verifier.position()
            );
        }
    }
}
