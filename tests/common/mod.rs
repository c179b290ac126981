//! What the binary's integration tests share: how a finished run of
//! `tokenledger` is read.
//!
//! Each test file is its own crate and uses a different part of this.
#![allow(dead_code)]

use serde_json::Value;
use std::ops::{Deref, DerefMut};
use std::process::{Child, Output};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_tokenledger");

/// A finished run: exit code and both outputs.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Reads a finished process; a run killed by a signal is a test failure.
    pub fn from(out: Output) -> Run {
        Run {
            code: out.status.code().expect("exited, not killed"),
            stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
            stderr: String::from_utf8(out.stderr).expect("utf-8 stderr"),
        }
    }

    /// Asserts the run succeeded.
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }

    /// The stdout of a successful `--json` run.
    pub fn json(&self) -> Value {
        assert_eq!(self.code, 0, "stderr: {}", self.stderr);
        self.report()
    }

    /// The `--json` stdout whatever the exit code: a failed audit prints its
    /// report (with the finding) there.
    pub fn report(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }

    /// The `--json` error object of a failed run.
    pub fn error(&self) -> Value {
        assert_ne!(
            self.code, 0,
            "expected a failure, got stdout: {}",
            self.stdout
        );
        let v: Value = serde_json::from_str(self.stderr.trim())
            .unwrap_or_else(|e| panic!("stderr is not one JSON error ({e}): {}", self.stderr));
        v["error"].clone()
    }
}

/// A child process (a `serve`) that is killed and reaped when the guard
/// drops, so a failing assertion does not leave a server running after its
/// test, holding a port, a data dir and the CI job open.
pub struct Reaped(Option<Child>);

impl Reaped {
    /// Guards a spawned child.
    pub fn new(child: Child) -> Reaped {
        Reaped(Some(child))
    }

    /// Waits for the child to exit and collects its piped output.
    pub fn wait_with_output(mut self) -> std::io::Result<Output> {
        self.0.take().expect("guarding a child").wait_with_output()
    }
}

impl Deref for Reaped {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("guarding a child")
    }
}

impl DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("guarding a child")
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            // Already exited and waited for: both are no-ops then.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends SIGTERM to a child (a server to stop cleanly); the caller waits for it.
pub fn sigterm(child: &std::process::Child) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -TERM {}", child.id());
}
