//! Rejections: why a command was refused, with a stable code for clients.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The stable error codes of the ledger's surface (PRODUCT.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The input is malformed or breaks a field rule; `field` names it.
    InvalidInput,
    /// No such token in this workspace (or it was purged).
    NotFound,
    /// `expectedVersion` did not match, or the resource already exists.
    Conflict,
    /// The name is used by another token of the workspace.
    NameTaken,
    /// The provided resource id is used and the command said `ifExists: "fail"`.
    ProvidedIdTaken,
    /// The user already has a live token for this provider and account.
    AccountTaken,
    /// The token is in the trash.
    Trashed,
    /// The token was revoked; that is final.
    Revoked,
    /// The token is not in the trash.
    NotTrashed,
    /// The caller could not be authenticated.
    Unauthorized,
    /// The caller may not do this.
    Forbidden,
    /// The ledger cannot serve right now (storage failed, shutting down).
    Unavailable,
    /// A bug or an unexpected failure.
    Internal,
}

impl ErrorCode {
    /// The wire name, e.g. `name_taken`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidInput => "invalid_input",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::NameTaken => "name_taken",
            ErrorCode::ProvidedIdTaken => "provided_id_taken",
            ErrorCode::AccountTaken => "account_taken",
            ErrorCode::Trashed => "trashed",
            ErrorCode::Revoked => "revoked",
            ErrorCode::NotTrashed => "not_trashed",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// Every code, for exhaustive tests and documentation.
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::InvalidInput,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::NameTaken,
        ErrorCode::ProvidedIdTaken,
        ErrorCode::AccountTaken,
        ErrorCode::Trashed,
        ErrorCode::Revoked,
        ErrorCode::NotTrashed,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    /// An HTTP-like status for the `Nats-Service-Error-Code` header.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidInput => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Conflict
            | ErrorCode::NameTaken
            | ErrorCode::ProvidedIdTaken
            | ErrorCode::AccountTaken
            | ErrorCode::Trashed
            | ErrorCode::Revoked
            | ErrorCode::NotTrashed => 409,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused command: nothing was appended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    /// Stable code.
    pub code: ErrorCode,
    /// Human-readable explanation.
    pub message: String,
    /// The offending field, as a JSON path such as `permissionGroups[2].permissionGroupId`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The token's version, on `conflict`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u64>,
}

impl Rejection {
    /// A rejection with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Rejection {
        Rejection {
            code,
            message: message.into(),
            field: None,
            current_version: None,
        }
    }
    /// `invalid_input` naming a field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Rejection {
        Rejection::new(ErrorCode::InvalidInput, message).with_field(field)
    }
    /// Adds the offending field.
    pub fn with_field(mut self, field: impl Into<String>) -> Rejection {
        self.field = Some(field.into());
        self
    }
    /// `conflict` carrying the current version.
    pub fn conflict(expected: u64, current: u64) -> Rejection {
        Rejection {
            code: ErrorCode::Conflict,
            message: format!("expected version {expected}, token is at version {current}"),
            field: Some("expectedVersion".into()),
            current_version: Some(current),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(field) = &self.field {
            write!(f, " (field {field})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Rejection {}
