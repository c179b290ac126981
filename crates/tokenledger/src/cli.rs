//! The command line: global flags and the subcommand tree.
//!
//! One module per command group handles its subcommands; to add a group
//! (`serve`, `watch`, `verify`, `audit`, `bench`, `keys`), add a variant here
//! and a module beside this one, then a match arm in `main.rs`.

use crate::commands::TokenCommand;
use crate::debug_load::DebugLoadArgs;
use crate::failure::EXIT_CODES_HELP;
use crate::import::ImportArgs;
use crate::queries::QueryCommand;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// An event-sourced ledger for access tokens.
///
/// Works directly on a data dir that no other process holds, or with
/// `--nats URL` on a running `tokenledger serve`. Every command is validated
/// exactly as on the wire, appended durably, and projected before the result
/// is printed.
#[derive(Parser, Debug)]
// A flag given twice takes its last value, so scripts can override defaults.
#[command(
    name = "tokenledger",
    version,
    after_help = EXIT_CODES_HELP,
    args_override_self = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: TopCommand,
}

/// Flags every subcommand takes.
#[derive(Args, Debug)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// The data dir (created when missing).
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "TOKENLEDGER_DATA_DIR",
        default_value = "./data"
    )]
    pub data_dir: PathBuf,
    /// Print results as JSON (errors too, on stderr).
    #[arg(long, global = true)]
    pub json: bool,
    /// The workspace (tenant); required by commands and queries.
    #[arg(long, global = true, value_name = "W", env = "TOKENLEDGER_WORKSPACE")]
    pub workspace: Option<String>,
    /// Who acts, as TYPE:ID (TYPE: user, client_token, service, system) [default: user:$USER]
    #[arg(long, global = true, value_name = "TYPE:ID")]
    pub actor: Option<String>,
    /// Talk to a running server over NATS instead of the data dir (URLs
    /// comma-separated); watch needs it, serve listens there [serve's default:
    /// nats://127.0.0.1:4222]
    #[arg(
        long,
        global = true,
        value_name = "URL[,URL]",
        env = "TOKENLEDGER_NATS",
        value_delimiter = ','
    )]
    pub nats: Option<Vec<String>>,
    /// NATS credentials file (user JWT and nkey seed, as nsc writes it)
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "TOKENLEDGER_NATS_CREDS"
    )]
    pub nats_creds: Option<PathBuf>,
    /// File holding a NATS user nkey seed (SU...) to authenticate with
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "TOKENLEDGER_NATS_NKEY"
    )]
    pub nats_nkey: Option<PathBuf>,
    /// PEM CA certificate(s) to trust for the NATS server's TLS certificate (TLS is then required)
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "TOKENLEDGER_NATS_TLS_CA"
    )]
    pub nats_tls_ca: Option<PathBuf>,
    /// PEM client certificate for NATS servers that verify clients (with --nats-tls-key)
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "TOKENLEDGER_NATS_TLS_CERT"
    )]
    pub nats_tls_cert: Option<PathBuf>,
    /// PEM private key of --nats-tls-cert
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "TOKENLEDGER_NATS_TLS_KEY"
    )]
    pub nats_tls_key: Option<PathBuf>,
    /// Subject prefix for replies instead of _INBOX (NATS permissions can then
    /// keep other users from reading them)
    #[arg(
        long,
        global = true,
        value_name = "PREFIX",
        env = "TOKENLEDGER_NATS_INBOX_PREFIX"
    )]
    pub nats_inbox_prefix: Option<String>,
    /// Write a state snapshot at a clean stop once the log grew by this many
    /// events since the last one, so the next open replays only what follows
    /// it (0: at every clean stop that appended; see docs/format.md)
    #[arg(
        long,
        global = true,
        value_name = "EVENTS",
        env = "TOKENLEDGER_SNAPSHOT_MIN_EVENTS",
        default_value_t = 10_000
    )]
    pub snapshot_min_events: u64,
}

/// Every subcommand.
#[derive(Subcommand, Debug)]
pub enum TopCommand {
    #[command(flatten)]
    Token(TokenCommand),
    #[command(flatten)]
    Query(QueryCommand),
    /// Import a record exported by primaERP (access token) or fimidara (client
    /// token), on the data dir only (not over --nats).
    Import(ImportArgs),
    /// Serve the ledger on NATS (commands, queries, publication) until SIGTERM.
    Serve(crate::serve::ServeArgs),
    /// Print token changes live from a server's stream, one line each (needs --nats).
    Watch(crate::watch::WatchArgs),
    /// Show a running ledger's state from NATS: its head, the stream's
    /// publication lag, the writer lease's holder (needs --nats).
    Status,
    /// Audit the log without trusting the server: verify, replay, history and
    /// export (a data dir, a file or the stream), checkpoints and proofs.
    Audit(crate::audit::AuditArgs),
    /// Rebuild a lost data dir from the stream TOKENS (needs --nats and the
    /// lost dir's key files): verified like `audit verify --nats`, then written.
    Recover(crate::recover::RecoverArgs),
    /// Manage the JWT signing keys: rotate, list, jwks, history.
    Keys(crate::keys::KeysArgs),
    /// Introspect a client token string: {"active": true, ...claims} or {"active": false}.
    Verify(crate::verify::VerifyArgs),
    /// Measure this machine: durable appends with 1, 16 and 256 writers and
    /// a rebuild of the views, on a fresh temporary data dir (never --data-dir).
    Bench(crate::bench::BenchArgs),
    /// Load generator for crash tests: prints one JSON line per acknowledged command.
    #[command(hide = true)]
    DebugLoad(DebugLoadArgs),
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }
}
