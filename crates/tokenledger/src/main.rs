//! `tokenledger`: the command line of the ledger.
//!
//! Thin by design: it parses arguments into the JSON bodies the wire carries,
//! calls `ledger-store` and `ledger-projector`, and formats their answers.
//! Every rule lives in the library crates.

/// mimalloc: glibc malloc's bookkeeping was a fifth of the audit's and the
/// replay's profile (many small, short-lived strings per event).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod app;
mod audit;
mod bench;
mod cli;
mod commands;
mod debug_load;
mod failure;
mod import;
mod input;
mod keys;
mod output;
mod queries;
mod recover;
mod remote;
mod serve;
mod status;
mod verify;
mod watch;

use app::Ctx;
use cli::{Cli, TopCommand};
use failure::{Failure, EXIT_OK};
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

/// Whether the global argument `id` took its value from the environment
/// (looked up at the deepest subcommand that has it: globals given after a
/// subcommand are recorded there).
fn from_env(matches: &clap::ArgMatches, id: &str) -> bool {
    let mut source = matches.value_source(id);
    let mut level = matches;
    while let Some((_, sub)) = level.subcommand() {
        if let Some(s) = sub.value_source(id) {
            source = Some(s);
        }
        level = sub;
    }
    source == Some(clap::parser::ValueSource::EnvVariable)
}

fn main() -> ExitCode {
    // Usage errors exit with 2, --help and --version with 0 (clap's own codes).
    let matches = match <Cli as clap::CommandFactory>::command().try_get_matches() {
        Ok(m) => m,
        Err(e) => usage_error(e),
    };
    let workspace_from_env = from_env(&matches, "workspace");
    let cli =
        <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    init_logging(matches!(cli.command, TopCommand::Serve(_)));
    let ctx = Ctx {
        data_dir: cli.global.data_dir,
        json: cli.global.json,
        workspace: cli.global.workspace,
        workspace_from_env,
        actor: cli.global.actor,
        nats: cli.global.nats,
        nats_access: ledger_nats::NatsAccess {
            creds: cli.global.nats_creds,
            nkey: cli.global.nats_nkey,
            tls_ca: cli.global.nats_tls_ca,
            tls_cert: cli.global.nats_tls_cert,
            tls_key: cli.global.nats_tls_key,
            inbox_prefix: cli.global.nats_inbox_prefix,
        },
        snapshot_min_events: cli.global.snapshot_min_events,
    };
    match run(cli.command, &ctx) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(failure) => {
            output::print_failure(&failure, ctx.json);
            ExitCode::from(failure.exit)
        }
    }
}

/// Exits on a usage error: as clap prints it, or, when `--json` was asked
/// for, as the one JSON error every other refusal prints (`invalid_input`,
/// the flag as its field), so that a script reads one format.
fn usage_error(e: clap::Error) -> ! {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    // `args_os`: `args` panics on an argument that is not UTF-8, which is
    // itself a usage error to report.
    let json = std::env::args_os()
        .take_while(|a| a != "--")
        .any(|a| a == "--json");
    // A missing subcommand is a usage error like any other once JSON is asked for.
    let shown_by_clap = matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
        || (e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand && !json);
    if shown_by_clap || !json {
        e.exit()
    }
    // An unknown argument is not a field; the message names it.
    let named = e.kind() != ErrorKind::UnknownArgument;
    let field = match e.get(ContextKind::InvalidArg).filter(|_| named) {
        Some(ContextValue::String(arg)) => Some(arg.as_str()),
        Some(ContextValue::Strings(args)) => args.first().map(String::as_str),
        _ => None,
    }
    .map(|arg| {
        // "--expected-version <N>" -> "expected-version"; "<TOKEN>" -> "TOKEN".
        let name = arg.split_whitespace().next().unwrap_or(arg);
        name.trim_start_matches('-')
            .trim_matches(|c| c == '<' || c == '>')
            .to_owned()
    });
    let rendered = e.render().to_string();
    let message = rendered
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_owned();
    let failure = Failure {
        field,
        ..Failure::invalid("", message)
    };
    output::print_failure(&failure, true);
    std::process::exit(i32::from(failure.exit))
}

fn run(command: TopCommand, ctx: &Ctx) -> Result<(), Failure> {
    match command {
        TopCommand::Token(c) => commands::run(c, ctx),
        TopCommand::Query(q) => queries::run(q, ctx),
        TopCommand::Import(a) => import::run(a, ctx),
        TopCommand::Audit(a) => audit::run(a, ctx),
        TopCommand::Bench(a) => bench::run(a, ctx),
        TopCommand::DebugLoad(a) => debug_load::run(a, ctx),
        TopCommand::Serve(a) => serve::run(a, ctx),
        TopCommand::Keys(a) => keys::run(a, ctx),
        TopCommand::Verify(a) => verify::run(a, ctx),
        TopCommand::Watch(a) => watch::run(a, ctx),
        TopCommand::Status => status::run(ctx),
        TopCommand::Recover(a) => recover::run(a, ctx),
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default: warnings and errors, and
/// for `serve` the audit records of [`ledger_store::AUDIT_LOG_TARGET`] too).
///
/// Nothing logged carries a secret or a token string: commands are logged by
/// name, id and positions only. async-nats logs every message's payload at
/// `trace` (commands with provider secrets, replies with token strings) and
/// the server's URL, password included, at `debug`, so its events below
/// `info` are dropped whatever `RUST_LOG` asks for. Outside `serve` all of
/// its events are: a CLI call reports its own connection trouble, once, and
/// with `--json` its stderr holds that one error object and nothing else.
fn init_logging(serving: bool) {
    use tracing_subscriber::filter::{filter_fn, FilterExt};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // PRODUCT.md: a refused string's reason "goes to the audit trail".
        if serving {
            EnvFilter::new(format!("warn,{}=info", ledger_store::AUDIT_LOG_TARGET))
        } else {
            EnvFilter::new("warn")
        }
    });
    let no_payloads = filter_fn(move |meta| {
        !(meta.target().starts_with("async_nats")
            && (!serving || *meta.level() > tracing::Level::INFO))
    });
    // Without a hint the pair would leave the global level at TRACE, and
    // every disabled callsite would be asked about.
    let no_payloads = match filter.max_level_hint() {
        Some(hint) => no_payloads.with_max_level_hint(hint),
        None => no_payloads,
    };
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colour codes only for a person at a terminal, not in a
                // log file or a collector.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_target(false)
                .with_filter(filter.and(no_payloads)),
        )
        .init();
}
