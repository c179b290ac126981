//! Why a run failed, and the exit code that tells a script so.
//!
//! Every failure carries a stable code (the ledger's [`ErrorCode`] names, plus
//! `locked` for a data dir held by another process) so that the human line and
//! the `--json` object say the same thing, and the exit code groups codes by
//! what a caller can do about them.

use ledger_core::{ErrorCode, Rejection};
use ledger_projector::ProjectorError;
use ledger_store::StoreError;
use serde_json::{json, Value};

/// Exit code: the command or query succeeded.
pub const EXIT_OK: u8 = 0;
/// Exit code: the ledger refused by a rule (`not_found`, `conflict`, `*_taken`, …).
pub const EXIT_RULE: u8 = 1;
/// Exit code: invalid input or usage (`invalid_input`, bad flags).
pub const EXIT_INVALID: u8 = 2;
/// Exit code: the ledger is unavailable or failed (`unavailable`, `internal`).
pub const EXIT_UNAVAILABLE: u8 = 3;
/// Exit code: another process holds the data dir (`locked`).
pub const EXIT_LOCKED: u8 = 4;
/// Exit code: an audit found the history changed, dropped or reordered.
pub const EXIT_FINDING: u8 = 5;

/// The exit codes as `--help` shows them.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  refused by a rule of the ledger: not_found, conflict, name_taken,
     provided_id_taken, account_taken, trashed, revoked, not_trashed
     (also unauthorized, forbidden)
  2  invalid input or usage: invalid_input (the message names the field),
     unknown or read-only fields, bad flags
  3  the ledger is unavailable or failed: unavailable, internal, storage errors,
     key_file (the data dir lacks the keys it was made with)
  4  the data dir is locked: another tokenledger process holds it (code locked)
  5  audit: the history has a finding (the code names it, e.g. hash_mismatch)

Errors go to stderr as `error: <code>: <message> (field <field>)`, or with
--json as {\"error\": {\"code\", \"message\", \"field\"?, \"currentVersion\"?}}.";

/// A failed run.
#[derive(Debug)]
pub struct Failure {
    /// Stable code, e.g. `name_taken` or `locked`.
    pub code: &'static str,
    /// What went wrong, for a human.
    pub message: String,
    /// The offending field, when one is to blame.
    pub field: Option<String>,
    /// The token's current version, on `conflict`.
    pub current_version: Option<u64>,
    /// The process exit code.
    pub exit: u8,
}

impl Failure {
    /// Bad input detected by the CLI itself (a flag, a file, an import record).
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Failure {
        Failure::from(Rejection::invalid(field, message))
    }

    /// An unexpected failure outside the ledger's own error codes.
    pub fn internal(message: impl Into<String>) -> Failure {
        Failure::from(Rejection::new(ErrorCode::Internal, message))
    }

    /// `not_found` for a token.
    pub fn not_found(message: impl Into<String>) -> Failure {
        Failure::from(Rejection::new(ErrorCode::NotFound, message))
    }

    /// `not_found`, naming the field that was looked up (as the wire does).
    pub fn not_found_by(field: impl Into<String>, message: impl Into<String>) -> Failure {
        Failure::from(Rejection::new(ErrorCode::NotFound, message).with_field(field))
    }

    /// The human line, without the `error: ` prefix.
    pub fn line(&self) -> String {
        let mut s = format!("{}: {}", self.code, self.message);
        if let Some(field) = &self.field {
            s.push_str(&format!(" (field {field})"));
        }
        s
    }

    /// The `--json` error object.
    pub fn to_json(&self) -> Value {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(field) = &self.field {
            error["field"] = json!(field);
        }
        if let Some(v) = self.current_version {
            error["currentVersion"] = json!(v);
        }
        json!({ "error": error })
    }
}

/// The exit code for a ledger error code.
pub fn exit_code_for(code: ErrorCode) -> u8 {
    match code {
        ErrorCode::InvalidInput => EXIT_INVALID,
        ErrorCode::NotFound
        | ErrorCode::Conflict
        | ErrorCode::NameTaken
        | ErrorCode::ProvidedIdTaken
        | ErrorCode::AccountTaken
        | ErrorCode::Trashed
        | ErrorCode::Revoked
        | ErrorCode::NotTrashed
        | ErrorCode::Unauthorized
        | ErrorCode::Forbidden => EXIT_RULE,
        ErrorCode::Unavailable | ErrorCode::Internal => EXIT_UNAVAILABLE,
    }
}

impl From<Rejection> for Failure {
    fn from(r: Rejection) -> Failure {
        Failure {
            code: r.code.as_str(),
            message: r.message,
            field: r.field,
            current_version: r.current_version,
            exit: exit_code_for(r.code),
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        match e {
            StoreError::Locked(_) => Failure {
                code: "locked",
                message: format!("{e}; stop it (or use it through its server) and try again"),
                field: None,
                current_version: None,
                exit: EXIT_LOCKED,
            },
            StoreError::Keys { .. } => Failure {
                code: "key_file",
                message: e.to_string(),
                field: None,
                current_version: None,
                exit: EXIT_UNAVAILABLE,
            },
            other => Failure::from(other.to_rejection()),
        }
    }
}

impl From<ProjectorError> for Failure {
    fn from(e: ProjectorError) -> Failure {
        match e {
            ProjectorError::InvalidCursor(_) => Failure::invalid("cursor", e.to_string()),
            ProjectorError::InvalidLimit(_) => Failure::invalid("limit", e.to_string()),
            ProjectorError::Store(s) => Failure::from(s),
            other => Failure::internal(format!("views: {other}")),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        // Keep the typed errors' codes when they travelled inside anyhow.
        let e = match e.downcast::<Rejection>() {
            Ok(r) => return Failure::from(r),
            Err(e) => e,
        };
        match e.downcast::<StoreError>() {
            Ok(s) => Failure::from(s),
            Err(e) => Failure::internal(format!("{e:#}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_documented_exit_code() {
        for code in ErrorCode::ALL {
            let exit = exit_code_for(code);
            assert!((1..=3).contains(&exit), "{code}");
            if exit == EXIT_RULE {
                assert!(
                    EXIT_CODES_HELP.contains(code.as_str()),
                    "{code} not in help"
                );
            }
        }
        assert!(EXIT_CODES_HELP.contains("locked"));
    }

    #[test]
    fn locked_store_is_exit_4() {
        let f = Failure::from(StoreError::Locked("/x".into()));
        assert_eq!((f.code, f.exit), ("locked", EXIT_LOCKED));
    }

    #[test]
    fn json_error_names_field_and_version() {
        let f = Failure::from(Rejection::conflict(1, 3));
        let v = f.to_json();
        assert_eq!(v["error"]["code"], "conflict");
        assert_eq!(v["error"]["field"], "expectedVersion");
        assert_eq!(v["error"]["currentVersion"], 3);
    }
}
