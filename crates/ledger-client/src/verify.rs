//! Verification and signing keys: `tokens.verify`, `tokens.jwks`,
//! `tokens.snapshot` and `tokens.admin.keys.{rotate|list}`.

use crate::{check_workspace, Client, ClientError};
use ledger_verify::{Introspection, TokenStatus};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;

/// Subject of `verify`.
pub const VERIFY: &str = "tokens.verify";
/// Subject of `jwks`.
pub const JWKS: &str = "tokens.jwks";
/// Subject of `snapshot`.
pub const SNAPSHOT: &str = "tokens.snapshot";
/// Subject of `rotate_key`.
pub const KEYS_ROTATE: &str = "tokens.admin.keys.rotate";
/// Subject of `keys`.
pub const KEYS_LIST: &str = "tokens.admin.keys.list";
/// How long [`Client::head`] waits for the ledger.
pub const HEAD_WAIT: Duration = Duration::from_secs(2);

/// One page of `tokens.snapshot`: client token statuses as of a log position.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotPage {
    /// The log position the statuses are consistent with.
    pub position: u64,
    /// The statuses.
    pub tokens: Vec<TokenStatus>,
    /// Give it as `cursor` for the next page; `None` on the last one.
    #[serde(default)]
    pub next_cursor: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotQuery<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    workspace_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cursor: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<usize>,
}

impl Client {
    /// Introspects a token string on the ledger: `Active` with its claims, or
    /// `Inactive` for anything else (unknown, forged, malformed, expired,
    /// trashed, revoked, rotated out, purged: the ledger does not say which).
    pub async fn verify(&self, token_str: &str) -> Result<Introspection, ClientError> {
        // No string the ledger signs is this long; sent, it would be refused
        // as an oversized request rather than answered inactive.
        if token_str.len() > ledger_verify::jwks::MAX_TOKEN_LEN_BYTES {
            return Ok(Introspection::Inactive);
        }
        self.request(VERIFY.to_owned(), &json!({ "tokenStr": token_str }))
            .await
    }

    /// The ledger's public signing keys, as a JWKS document.
    pub async fn jwks(&self) -> Result<Value, ClientError> {
        self.request(JWKS.to_owned(), &json!({})).await
    }

    /// One page of client token statuses (of one workspace, or all), with
    /// the log position the page is consistent with.
    pub async fn snapshot(
        &self,
        workspace: Option<&str>,
        cursor: Option<&str>,
        limit: Option<usize>,
    ) -> Result<SnapshotPage, ClientError> {
        if let Some(ws) = workspace {
            check_workspace(ws)?;
        }
        let q = SnapshotQuery {
            workspace_id: workspace,
            cursor,
            limit,
        };
        self.request(SNAPSHOT.to_owned(), &q).await
    }

    /// The ledger's log head: the position of everything it has committed,
    /// published or not (the position of a snapshot page of one status).
    /// Waits at most [`HEAD_WAIT`], since its callers have a fallback (the
    /// stream's end) better than a whole request timeout.
    pub async fn head(&self) -> Result<u64, ClientError> {
        match tokio::time::timeout(HEAD_WAIT, self.snapshot(None, None, Some(1))).await {
            Ok(page) => page.map(|p| p.position),
            Err(_) => Err(ClientError::Timeout {
                subject: SNAPSHOT.to_owned(),
            }),
        }
    }

    /// Rotates the running server's signing key to a new `alg` key
    /// (`EdDSA` or `HS256`; the server's default, EdDSA, when `None`),
    /// recorded as done by this client's actor. Answers `{"event", "keys"}`.
    pub async fn rotate_key(&self, alg: Option<&str>) -> Result<Value, ClientError> {
        let mut body = json!({ "actor": self.actor });
        if let Some(alg) = alg {
            body["alg"] = json!(alg);
        }
        self.request(KEYS_ROTATE.to_owned(), &body).await
    }

    /// The server's signing keys (public facts) and their history:
    /// `{"activeKid", "keys", "history"}`.
    pub async fn keys(&self) -> Result<Value, ClientError> {
        self.request(KEYS_LIST.to_owned(), &json!({})).await
    }
}
