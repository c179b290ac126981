//! Test helpers for tokenledger.
//!
//! * [`NatsServer`] runs a real `nats-server` with JetStream on a free
//!   loopback port and a private, temporary store directory. It can be
//!   stopped, killed and restarted on the same port and store, and it is
//!   killed (and its directory removed) when dropped.
//! * [`free_port`], [`wait_for`] and [`wait_for_async`] are small polling
//!   helpers for tests that must wait for something without fixed sleeps.
//! * [`renamed_chain`] crafts a legal, hash-chained history to verify or
//!   tamper with; [`trash_restore_chain`] a chain for tests of stream
//!   readers; [`stamp_chain`] chains any drafts, [`issued`] makes the data
//!   of an issue.
//!
//! The `nats-server` binary is looked up, in order, through the environment
//! variable [`NATS_SERVER_BIN_ENV`] (`NATS_SERVER_BIN`), then at
//! `<repo>/.tools/nats/bin/nats-server` (where `scripts/install-nats.sh`
//! installs it), then as `nats-server` on `PATH`. Run
//! `bash scripts/install-nats.sh` once to get one.
//!
//! The server runs with Go's `GOGC` at [`NATS_GOGC`] unless the environment
//! sets one, as the project deploys it (README, "Tuning nats-server").
//!
//! This crate is meant for Unix-like systems (it signals processes).

#![warn(missing_docs)]

mod chain;

pub use chain::{issued, renamed_chain, stamp_chain, trash_restore_chain};

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::future::Future;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

/// Go's `GOGC` for nats-server, as `scripts/up.sh` and docker-compose.yml
/// set it: the stream keeps an index entry per subject (one per token and
/// event type), and with Go's default of 100 each collection of that heap
/// took most of a core for tens of milliseconds, the largest source of the
/// ledger's p99 on two shared cores (BENCHMARKS.md, 2026-11-25, fifth).
pub const NATS_GOGC: &str = "800";

/// Name of the environment variable that, when set, gives the path of the
/// `nats-server` binary to run. It takes precedence over every other lookup.
pub const NATS_SERVER_BIN_ENV: &str = "NATS_SERVER_BIN";

/// How long [`NatsServer::start`] and [`NatsServer::restart`] wait for the
/// server to accept connections and report JetStream as ready.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`NatsServer::stop`] waits after `SIGTERM` before it sends
/// `SIGKILL`.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Name of the file, inside [`NatsServer::store_dir`], that receives the
/// server's stdout and stderr.
pub const LOG_FILE_NAME: &str = "nats-server.log";

/// Name of the config file, inside [`NatsServer::store_dir`], that
/// [`NatsServer::start_with_max_payload`] writes; every start of that
/// server (restarts too) passes it with `-c`.
pub const CONFIG_FILE_NAME: &str = "nats-server.conf";

/// How many times [`NatsServer::start`] picks fresh ports when the chosen
/// ones turn out to be taken by the time the server binds them.
const START_ATTEMPTS: usize = 8;

const FIRST_BACKOFF: Duration = Duration::from_millis(2);
const MAX_BACKOFF: Duration = Duration::from_millis(100);
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
const HEALTHZ_REQUEST: &str =
    "GET /healthz?js-enabled-only=true HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";

/// A running (or stopped) `nats-server -js` owned by a test.
///
/// The server listens on `127.0.0.1` only, on a port chosen by
/// [`NatsServer::start`], with its HTTP monitoring endpoint on a second
/// free port and its JetStream store in a temporary directory. The port
/// and the store directory stay the same across [`NatsServer::restart`],
/// so JetStream data written before a restart is there after it.
///
/// Dropping the value kills the process (`SIGKILL`) and removes the
/// temporary directory.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    monitor_port: u16,
    child: Option<Child>,
    // Declared last so that it is dropped after `Drop::drop` has killed the
    // process that may still be writing into it.
    dir: TempDir,
}

impl NatsServer {
    /// Starts `nats-server -js -a 127.0.0.1 -p <port> -m <monitor port>
    /// -sd <temporary dir>` and waits (up to [`START_TIMEOUT`]) until it
    /// accepts client connections, sends an `INFO` line announcing
    /// JetStream, and answers `200` on `/healthz?js-enabled-only=true`.
    ///
    /// Free ports are found by binding `127.0.0.1:0`; if another process
    /// grabs one before the server binds it, the spawn is retried with new
    /// ports.
    ///
    /// # Errors
    ///
    /// Fails if no `nats-server` binary is found (the message names
    /// `scripts/install-nats.sh`), if the temporary directory cannot be
    /// created, if the server exits early or is not ready in time (the
    /// message includes its log), or if every attempt found its port taken.
    pub fn start() -> Result<Self> {
        Self::start_configured(None)
    }

    /// [`NatsServer::start`] with `max_payload` (the largest message the
    /// server takes) set to `bytes`, through a config file in its store dir.
    ///
    /// # Errors
    ///
    /// As [`NatsServer::start`], or if the config file cannot be written.
    pub fn start_with_max_payload(bytes: usize) -> Result<Self> {
        Self::start_with_config(&format!("max_payload: {bytes}\n"))
    }

    /// [`NatsServer::start`] with `config` as its config file (`-c`): for
    /// authorization, TLS and the like. The command line's `-js`, `-a`, `-p`,
    /// `-m` and `-sd` still apply over it.
    ///
    /// # Errors
    ///
    /// As [`NatsServer::start`]; a config the server refuses fails the start,
    /// with the server's log in the message.
    pub fn start_with_config(config: &str) -> Result<Self> {
        Self::start_configured(Some(config.to_owned()))
    }

    fn start_configured(config: Option<String>) -> Result<Self> {
        let binary = nats_server_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("ledger-testkit-nats-")
            .tempdir()
            .context("creating a temporary store directory for nats-server")?;
        if let Some(config) = config {
            std::fs::write(dir.path().join(CONFIG_FILE_NAME), config)
                .context("writing the nats-server config file")?;
        }
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let [port, monitor_port] = free_ports();
            let deadline = Instant::now() + START_TIMEOUT;
            match spawn_until_ready(&binary, dir.path(), port, monitor_port, deadline)? {
                Attempt::Ready(child) => {
                    return Ok(Self {
                        binary,
                        port,
                        monitor_port,
                        child: Some(child),
                        dir,
                    })
                }
                Attempt::AddrInUse(log) => last_log = log,
            }
        }
        bail!(
            "nats-server could not bind a free port in {START_ATTEMPTS} attempts; last log:\n{last_log}"
        )
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port. It does not change across [`NatsServer::restart`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The HTTP monitoring port (`/healthz`, `/varz`, `/jsz`, ...). A new
    /// one is chosen on each [`NatsServer::restart`].
    pub fn monitor_port(&self) -> u16 {
        self.monitor_port
    }

    /// The JetStream store directory given to `-sd` (the server keeps its
    /// data under `jetstream/` inside it). It does not change across
    /// [`NatsServer::restart`] and is removed when the value is dropped.
    pub fn store_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The file that collects the server's stdout and stderr, across
    /// restarts (each start appends a `--- ledger-testkit:` marker line).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join(LOG_FILE_NAME)
    }

    /// The `nats-server` binary this server runs.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The process id of the running server, or `None` after
    /// [`NatsServer::stop`] or [`NatsServer::kill`].
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the server process is still alive (it may have exited by
    /// itself, e.g. after a fatal error).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Stops the server gracefully: sends `SIGTERM` and waits for the
    /// process to exit. Does nothing if it is not running.
    ///
    /// # Errors
    ///
    /// Fails if the signal cannot be sent, or if the process has not exited
    /// within [`STOP_TIMEOUT`]; in both cases the process is killed with
    /// `SIGKILL` before returning, so it never outlives the call.
    pub fn stop(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        if let Err(err) = send_sigterm(child.id()) {
            kill_and_reap(&mut child);
            return Err(err);
        }
        let exited = wait_for(STOP_TIMEOUT, || !matches!(child.try_wait(), Ok(None)));
        if !exited {
            kill_and_reap(&mut child);
            bail!(
                "nats-server (pid {}) did not exit within {STOP_TIMEOUT:?} of SIGTERM; killed it",
                child.id()
            );
        }
        child.wait().context("reaping nats-server")?;
        Ok(())
    }

    /// Kills the server abruptly with `SIGKILL` (a crash, as far as the
    /// server can tell) and reaps it. Does nothing if it is not running.
    ///
    /// # Errors
    ///
    /// Fails only if the operating system refuses to signal or reap the
    /// process.
    pub fn kill(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if child.try_wait()?.is_none() {
            child.kill().context("sending SIGKILL to nats-server")?;
        }
        child.wait().context("reaping nats-server")?;
        Ok(())
    }

    /// Starts the server again on the same client port and the same store
    /// directory, so JetStream streams and messages survive. If it is still
    /// running it is first stopped gracefully with [`NatsServer::stop`].
    /// Waits for readiness like [`NatsServer::start`]; if the port is
    /// momentarily busy, it retries until [`START_TIMEOUT`] has passed.
    ///
    /// # Errors
    ///
    /// Fails if stopping fails, if the server exits early (other than for a
    /// busy port) or is not ready in time, or if the port stays busy.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        let deadline = Instant::now() + START_TIMEOUT;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let monitor_port = free_port_other_than(self.port);
            match spawn_until_ready(
                &self.binary,
                self.dir.path(),
                self.port,
                monitor_port,
                deadline,
            )? {
                Attempt::Ready(child) => {
                    self.child = Some(child);
                    self.monitor_port = monitor_port;
                    return Ok(());
                }
                Attempt::AddrInUse(log) => {
                    let now = Instant::now();
                    if now >= deadline {
                        bail!(
                            "nats-server could not bind port {} again within {START_TIMEOUT:?}; last log:\n{log}",
                            self.port
                        );
                    }
                    std::thread::sleep(backoff.min(deadline - now));
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_and_reap(&mut child);
        }
    }
}

/// Returns the path of the `nats-server` binary that [`NatsServer::start`]
/// would run: `$NATS_SERVER_BIN` if set, else
/// `<repo>/.tools/nats/bin/nats-server` if present, else `nats-server` on
/// `PATH`.
///
/// # Errors
///
/// Fails if `NATS_SERVER_BIN` is set but is not an executable file, or if
/// no binary is found at all; the message says to run
/// `bash scripts/install-nats.sh`.
pub fn nats_server_binary() -> Result<PathBuf> {
    resolve_binary(
        std::env::var_os(NATS_SERVER_BIN_ENV),
        &repo_local_binary(),
        std::env::var_os("PATH"),
    )
}

/// Returns a TCP port on `127.0.0.1` that was free a moment ago (found by
/// binding port 0 and releasing it). Another process may take it before you
/// bind it, so be ready to retry.
///
/// # Panics
///
/// Panics if `127.0.0.1:0` cannot be bound, which means the loopback
/// interface is unusable.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("binding 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("reading the address of a bound listener")
        .port()
}

/// Calls `cond` until it returns `true` or `deadline` (a duration from now)
/// has passed, sleeping between calls with a short exponential backoff
/// (2 ms doubling up to 100 ms, never past the deadline). `cond` is always
/// called at least once, and once more at the deadline.
///
/// Returns whether `cond` returned `true`. This blocks the thread: from async
/// code use [`wait_for_async`].
pub fn wait_for(deadline: Duration, cond: impl FnMut() -> bool) -> bool {
    wait_until(Instant::now() + deadline, cond)
}

/// Async version of [`wait_for`]: awaits `cond()` until it yields `true` or
/// `deadline` (a duration from now) has passed, sleeping with
/// [`tokio::time::sleep`] and the same backoff between tries. Must run
/// inside a Tokio runtime with the time driver enabled (as
/// `#[tokio::test]` provides).
///
/// Returns whether `cond` yielded `true`.
pub async fn wait_for_async<F, Fut>(deadline: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    let mut backoff = FIRST_BACKOFF;
    loop {
        if cond().await {
            return true;
        }
        let now = Instant::now();
        if now >= end {
            return false;
        }
        tokio::time::sleep(backoff.min(end - now)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn wait_until(end: Instant, mut cond: impl FnMut() -> bool) -> bool {
    let mut backoff = FIRST_BACKOFF;
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= end {
            return false;
        }
        std::thread::sleep(backoff.min(end - now));
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Two distinct free ports, found while both listeners are held.
fn free_ports() -> [u16; 2] {
    let bind =
        || TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding 127.0.0.1:0 to find a port");
    let (a, b) = (bind(), bind());
    let port = |l: &TcpListener| l.local_addr().expect("local address").port();
    [port(&a), port(&b)]
}

fn free_port_other_than(taken: u16) -> u16 {
    loop {
        let port = free_port();
        if port != taken {
            return port;
        }
    }
}

/// `<repo>/.tools/nats/bin/nats-server`, where `scripts/install-nats.sh`
/// installs the binary; the repository root is two levels above this crate.
fn repo_local_binary() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let repo_root = manifest_dir.ancestors().nth(2).unwrap_or(manifest_dir);
    repo_root.join(".tools/nats/bin/nats-server")
}

fn resolve_binary(
    from_env: Option<OsString>,
    repo_local: &Path,
    path: Option<OsString>,
) -> Result<PathBuf> {
    if let Some(bin) = from_env.filter(|value| !value.is_empty()) {
        let bin = PathBuf::from(bin);
        if is_executable_file(&bin) {
            return Ok(bin);
        }
        bail!(
            "{NATS_SERVER_BIN_ENV}={} is not an executable file: unset it, or run \
             `bash scripts/install-nats.sh` and set it to the path that prints",
            bin.display()
        );
    }
    if is_executable_file(repo_local) {
        return Ok(repo_local.to_path_buf());
    }
    if let Some(path) = path {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("nats-server");
            if is_executable_file(&candidate) {
                return Ok(candidate);
            }
        }
    }
    bail!(
        "nats-server not found: run `bash scripts/install-nats.sh` (it installs nats-server >= 2.12 \
         at {}), or set {NATS_SERVER_BIN_ENV} to a nats-server binary, or put one on PATH",
        repo_local.display()
    )
}

#[cfg(unix)]
fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable_file(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| meta.is_file())
}

enum Attempt {
    /// The server is up and JetStream is ready.
    Ready(Child),
    /// The server exited because a port was taken; holds its log.
    AddrInUse(String),
}

/// Spawns one server and waits until it is ready, it exits, or `deadline`.
fn spawn_until_ready(
    binary: &Path,
    store_dir: &Path,
    port: u16,
    monitor_port: u16,
    deadline: Instant,
) -> Result<Attempt> {
    let log_path = store_dir.join(LOG_FILE_NAME);
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let log_start = log.metadata()?.len();
    writeln!(
        log,
        "--- ledger-testkit: starting {} on port {port} (monitor {monitor_port})",
        binary.display()
    )?;
    let stderr = log.try_clone()?;

    let mut command = Command::new(binary);
    if std::env::var_os("GOGC").is_none() {
        // As `scripts/up.sh` and docker-compose.yml run it, so that the
        // benchmarks measure the deployed setting (GOGC=100 is a run away).
        command.env("GOGC", NATS_GOGC);
    }
    let config = store_dir.join(CONFIG_FILE_NAME);
    if config.exists() {
        command.arg("-c").arg(&config);
    }
    let mut child = command
        .arg("-js")
        .args(["-a", "127.0.0.1"])
        .args(["-p", &port.to_string()])
        .args(["-m", &monitor_port.to_string()])
        .arg("-sd")
        .arg(store_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(stderr))
        .spawn()
        .with_context(|| format!("spawning {}", binary.display()))?;

    let mut exited: Option<ExitStatus> = None;
    let ready = wait_until(deadline, || {
        if let Ok(Some(status)) = child.try_wait() {
            exited = Some(status);
            return true;
        }
        is_ready(port, monitor_port)
    });
    // A server that lost its port to another process exits right away; make
    // sure we did not mistake that other process for ours.
    if ready && exited.is_none() {
        if let Ok(Some(status)) = child.try_wait() {
            exited = Some(status);
        }
    }

    if let Some(status) = exited {
        let log = read_log_from(&log_path, log_start);
        if log.contains("address already in use") {
            return Ok(Attempt::AddrInUse(log));
        }
        bail!("nats-server exited ({status}) before it was ready; its log:\n{log}");
    }
    if !ready {
        kill_and_reap(&mut child);
        let log = read_log_from(&log_path, log_start);
        bail!(
            "nats-server on port {port} was not ready (client INFO with JetStream + /healthz on \
             port {monitor_port}) before the deadline; its log:\n{log}"
        );
    }
    Ok(Attempt::Ready(child))
}

/// The client port greets with an `INFO` line announcing JetStream, and the
/// monitoring endpoint reports JetStream as enabled and healthy.
fn is_ready(port: u16, monitor_port: u16) -> bool {
    client_greets_with_jetstream(port).unwrap_or(false) && healthz_ok(monitor_port).unwrap_or(false)
}

fn connect_loopback(port: u16) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        PROBE_TIMEOUT,
    )?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
    Ok(stream)
}

fn client_greets_with_jetstream(port: u16) -> io::Result<bool> {
    let stream = connect_loopback(port)?;
    let mut line = String::new();
    BufReader::new(stream.take(64 * 1024)).read_line(&mut line)?;
    Ok(line.starts_with("INFO ") && line.contains("\"jetstream\":true"))
}

fn healthz_ok(monitor_port: u16) -> io::Result<bool> {
    let mut stream = connect_loopback(monitor_port)?;
    stream.write_all(HEALTHZ_REQUEST.as_bytes())?;
    let mut response = String::new();
    stream.take(64 * 1024).read_to_string(&mut response)?;
    let status_ok = response
        .lines()
        .next()
        .is_some_and(|status| status.split_whitespace().nth(1) == Some("200"));
    Ok(status_ok && response.contains("\"ok\""))
}

fn read_log_from(path: &Path, start: u64) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let from = usize::try_from(start).unwrap_or(0).min(bytes.len());
            String::from_utf8_lossy(&bytes[from..]).into_owned()
        }
        Err(err) => {
            let mut out = String::new();
            let _ = write!(out, "(could not read {}: {err})", path.display());
            out
        }
    }
}

/// Sends SIGTERM with the `kill` utility (no unsafe code, no extra crate),
/// falling back to the shell's builtin `kill` where the utility is missing.
fn send_sigterm(pid: u32) -> Result<()> {
    let pid = pid.to_string();
    let status = match Command::new("kill").args(["-TERM", &pid]).status() {
        Ok(status) => status,
        Err(err) if err.kind() == io::ErrorKind::NotFound => Command::new("sh")
            .args(["-c", "kill -TERM \"$1\"", "sh", &pid])
            .status()
            .context("running `sh -c kill -TERM` to stop nats-server")?,
        Err(err) => return Err(err).context("running `kill -TERM` to stop nats-server"),
    };
    if !status.success() {
        bail!("`kill -TERM {pid}` failed with {status}");
    }
    Ok(())
}

fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Caps the JetStream stream `TOKENS` on the server at `url` at `max`
/// messages (`None`: no cap), as an operator could: beyond the cap new
/// messages are refused (`refuse_new`) or the oldest dropped. Other
/// settings stay.
///
/// # Panics
///
/// When the server or the stream cannot be reached or updated.
pub async fn cap_tokens_stream(url: &str, max: Option<i64>, refuse_new: bool) {
    use async_nats::jetstream;
    let js = jetstream::new(async_nats::connect(url).await.expect("connect"));
    let mut config = js
        .get_stream("TOKENS")
        .await
        .expect("the stream TOKENS")
        .cached_info()
        .config
        .clone();
    config.max_messages = max.unwrap_or(-1);
    config.discard = if refuse_new {
        jetstream::stream::DiscardPolicy::New
    } else {
        jetstream::stream::DiscardPolicy::Old
    };
    js.update_stream(config).await.expect("stream updated");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn executable(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, "#!/bin/sh\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        path
    }

    #[test]
    fn binary_from_env_wins() {
        let dir = tempfile::tempdir().unwrap();
        let from_env = executable(dir.path(), "custom-nats");
        let local = executable(dir.path(), "local-nats");
        let found = resolve_binary(Some(from_env.clone().into()), &local, None).unwrap();
        assert_eq!(found, from_env);
    }

    #[test]
    fn binary_from_env_that_is_missing_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let local = executable(dir.path(), "local-nats");
        let err = resolve_binary(Some(dir.path().join("nope").into()), &local, None).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains(NATS_SERVER_BIN_ENV), "{msg}");
        assert!(msg.contains("scripts/install-nats.sh"), "{msg}");
    }

    #[test]
    fn repo_local_binary_before_path() {
        let dir = tempfile::tempdir().unwrap();
        let local = executable(dir.path(), "local-nats");
        let on_path = tempfile::tempdir().unwrap();
        executable(on_path.path(), "nats-server");
        let path = std::env::join_paths([on_path.path()]).unwrap();
        assert_eq!(resolve_binary(None, &local, Some(path)).unwrap(), local);
    }

    #[test]
    fn binary_on_path_is_the_last_resort() {
        let dir = tempfile::tempdir().unwrap();
        let on_path = tempfile::tempdir().unwrap();
        let expected = executable(on_path.path(), "nats-server");
        let path = std::env::join_paths([dir.path(), on_path.path()]).unwrap();
        let found = resolve_binary(None, &dir.path().join("missing"), Some(path)).unwrap();
        assert_eq!(found, expected);
    }

    #[test]
    fn missing_binary_names_the_install_script() {
        let dir = tempfile::tempdir().unwrap();
        let path = std::env::join_paths([dir.path()]).unwrap();
        let err = resolve_binary(None, &dir.path().join("missing"), Some(path)).unwrap_err();
        assert!(err.to_string().contains("scripts/install-nats.sh"), "{err}");
    }

    #[test]
    fn repo_local_binary_is_under_the_repo_root() {
        let path = repo_local_binary();
        assert!(path.ends_with(".tools/nats/bin/nats-server"));
        let root = path.ancestors().nth(4).unwrap();
        assert!(root.join("Cargo.toml").is_file(), "{}", root.display());
        assert!(
            root.join("crates/ledger-testkit").is_dir(),
            "{}",
            root.display()
        );
    }

    #[test]
    fn free_ports_are_distinct_and_bindable() {
        let [a, b] = free_ports();
        assert_ne!(a, b);
        TcpListener::bind((Ipv4Addr::LOCALHOST, free_port())).unwrap();
        assert_ne!(free_port_other_than(a), a);
    }

    /// Needs a nats-server binary (`bash scripts/install-nats.sh`).
    #[test]
    fn a_taken_client_or_monitor_port_is_reported_as_addr_in_use() {
        let binary = nats_server_binary().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let held = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let taken = held.local_addr().unwrap().port();
        let deadline = Instant::now() + START_TIMEOUT;
        for (port, monitor_port) in [(taken, free_port()), (free_port(), taken)] {
            match spawn_until_ready(&binary, dir.path(), port, monitor_port, deadline).unwrap() {
                Attempt::AddrInUse(log) => assert!(log.contains("--- ledger-testkit"), "{log}"),
                Attempt::Ready(mut child) => {
                    kill_and_reap(&mut child);
                    panic!("started on a taken port ({port}, monitor {monitor_port})");
                }
            }
        }
    }

    #[test]
    fn wait_for_returns_true_once_the_condition_holds() {
        let calls = Cell::new(0);
        let ok = wait_for(Duration::from_secs(5), || {
            calls.set(calls.get() + 1);
            calls.get() == 3
        });
        assert!(ok);
        assert_eq!(calls.get(), 3);
    }

    #[test]
    fn wait_for_gives_up_at_the_deadline() {
        let started = Instant::now();
        let calls = Cell::new(0);
        let ok = wait_for(Duration::from_millis(50), || {
            calls.set(calls.get() + 1);
            false
        });
        let took = started.elapsed();
        assert!(!ok);
        assert!(took >= Duration::from_millis(50), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
        assert!(calls.get() >= 2);
    }

    #[tokio::test]
    async fn wait_for_async_polls_until_true_or_deadline() {
        let calls = Cell::new(0);
        let ok = wait_for_async(Duration::from_secs(5), || {
            calls.set(calls.get() + 1);
            let done = calls.get() >= 4;
            async move { done }
        })
        .await;
        assert!(ok);
        assert_eq!(calls.get(), 4);

        let started = Instant::now();
        assert!(!wait_for_async(Duration::from_millis(30), || async { false }).await);
        assert!(started.elapsed() >= Duration::from_millis(30));
    }
}
