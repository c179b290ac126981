//! How a tokenledger process proves who it is to NATS and secures the
//! connection: a credentials file or an nkey seed, TLS with a private CA and
//! client certificates. User and password (or a token) go in the URL,
//! `nats://user:password@host:4222`, as every NATS client takes them.
//!
//! The ledger authorizes nothing itself: NATS permissions decide who may
//! send which command to which workspace (README, "Securing NATS"). That
//! only holds if every process authenticates, the ledger included, so the
//! server, the CLI and the audit tools share these settings.
//!
//! Seeds and passwords never reach a message or a log: files are named by
//! path, URLs are shown through [`redact`].

use async_nats::ConnectOptions;
use std::path::{Path, PathBuf};

/// Authentication and TLS settings for one NATS connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatsAccess {
    /// A `.creds` file (user JWT and nkey seed, as `nsc` writes them).
    pub creds: Option<PathBuf>,
    /// A file holding a user nkey seed (`SU...`).
    pub nkey: Option<PathBuf>,
    /// PEM certificates of the CA that signed the server's certificate.
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate, for servers that verify clients (mutual TLS).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of [`NatsAccess::tls_cert`].
    pub tls_key: Option<PathBuf>,
    /// Prefix of the subjects replies come back on, instead of `_INBOX`:
    /// a user allowed to subscribe only to its own prefix cannot read the
    /// replies (token strings among them) sent to anyone else.
    pub inbox_prefix: Option<String>,
}

/// A setting of [`NatsAccess`] that cannot work; `field` names it as the CLI
/// spells it (`nats-creds`, `nats-nkey`, `nats-tls-ca`, `nats-tls-cert`,
/// `nats-tls-key`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {message}")]
pub struct AccessError {
    /// The setting at fault.
    pub field: &'static str,
    /// What is wrong with it (a path, never a file's content).
    pub message: String,
}

impl NatsAccess {
    /// Whether any setting is given (otherwise connections are anonymous and plain,
    /// unless the URL says otherwise).
    pub fn is_empty(&self) -> bool {
        *self == NatsAccess::default()
    }

    /// Whether the connection must use TLS (any TLS file given).
    pub fn requires_tls(&self) -> bool {
        self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_key.is_some()
    }

    /// Adds these settings, and the user and password (or token) of the
    /// `urls`, to `options`, after checking that they fit together and that
    /// every file can be read (a seed is also parsed), so that a mistake is
    /// reported with its setting rather than as a failed connection.
    ///
    /// async-nats parses a URL's user and password but does not send them,
    /// hence this step.
    pub async fn apply(
        &self,
        options: ConnectOptions,
        urls: &[String],
    ) -> Result<ConnectOptions, AccessError> {
        let mut options = options;
        let from_urls = url_credentials(urls)?;
        if from_urls.is_some() && (self.creds.is_some() || self.nkey.is_some()) {
            return Err(AccessError {
                field: "nats",
                message: "give a user and password in the URL, or --nats-creds / --nats-nkey, \
                          not both"
                    .into(),
            });
        }
        match from_urls {
            Some((user, Some(password))) => options = options.user_and_password(user, password),
            Some((token, None)) => options = options.token(token),
            None => {}
        }
        match (&self.creds, &self.nkey) {
            (Some(_), Some(_)) => {
                return Err(AccessError {
                    field: "nats-nkey",
                    message: "give a credentials file or an nkey seed, not both".into(),
                })
            }
            (Some(creds), None) => {
                readable("nats-creds", creds)?;
                options = options
                    .credentials_file(creds)
                    .await
                    .map_err(|e| AccessError {
                        field: "nats-creds",
                        message: format!("{} is not a NATS credentials file: {e}", creds.display()),
                    })?;
            }
            (None, Some(nkey)) => options = options.nkey(user_seed(nkey)?),
            (None, None) => {}
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                readable("nats-tls-cert", cert)?;
                readable("nats-tls-key", key)?;
                options = options.add_client_certificate(cert.clone(), key.clone());
            }
            (Some(_), None) => {
                return Err(AccessError {
                    field: "nats-tls-key",
                    message: "a client certificate needs its private key".into(),
                })
            }
            (None, Some(_)) => {
                return Err(AccessError {
                    field: "nats-tls-cert",
                    message: "a private key needs its client certificate".into(),
                })
            }
            (None, None) => {}
        }
        if let Some(ca) = &self.tls_ca {
            readable("nats-tls-ca", ca)?;
            options = options.add_root_certificates(ca.clone());
        }
        if let Some(prefix) = &self.inbox_prefix {
            options = options.custom_inbox_prefix(inbox_prefix(prefix)?);
        }
        if self.requires_tls() {
            options = options.require_tls(true);
        }
        Ok(options)
    }
}

/// The user and password (`None` for a lone token) in the URLs; every URL
/// that has any must have the same, since the client sends one set to
/// whichever server it reaches.
fn url_credentials(urls: &[String]) -> Result<Option<(String, Option<String>)>, AccessError> {
    let decode = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8()
            .map(|t| t.into_owned())
            .map_err(|_| AccessError {
                field: "nats",
                message: "the user or password in a NATS URL is not UTF-8 once decoded".into(),
            })
    };
    let mut found: Option<(String, Option<String>)> = None;
    let mut without = false;
    for url in urls {
        // Unparseable URLs are the connection's to report.
        let Ok(addr) = url.trim().parse::<async_nats::ServerAddr>() else {
            continue;
        };
        let these = match (addr.username(), addr.password()) {
            (Some(user), password) => Some((decode(user)?, password.map(decode).transpose()?)),
            (None, _) => None,
        };
        match (these, &found) {
            (None, _) => without = true,
            (Some(these), None) => found = Some(these),
            (Some(these), Some(seen)) if these == *seen => {}
            (Some(_), Some(_)) => {
                return Err(AccessError {
                    field: "nats",
                    message: "the NATS URLs carry different users or passwords; \
                              give every server the same"
                        .into(),
                })
            }
        }
    }
    if without && found.is_some() {
        return Err(AccessError {
            field: "nats",
            message: "some NATS URLs carry a user and password and some do not; \
                      give every server the same"
                .into(),
        });
    }
    Ok(found)
}

/// `prefix`, checked to be literal subject tokens (replies go to `prefix.<id>`).
fn inbox_prefix(prefix: &str) -> Result<&str, AccessError> {
    let literal = |t: &str| {
        !t.is_empty()
            && t != "*"
            && t != ">"
            && t.bytes().all(|b| b.is_ascii_graphic() && b != b'.')
    };
    if prefix.len() <= 200 && prefix.split('.').all(literal) {
        Ok(prefix)
    } else {
        Err(AccessError {
            field: "nats-inbox-prefix",
            message: format!(
                "{prefix:?} is not a subject prefix: dot-separated tokens of printable ASCII, \
                 no wildcards, at most 200 bytes (e.g. _INBOX.acme)"
            ),
        })
    }
}

/// The seed in `path`, checked to be a user nkey seed.
fn user_seed(path: &Path) -> Result<String, AccessError> {
    let text = readable("nats-nkey", path)?;
    // The first line: `nsc generate nkey` and `nk -gen user -pubout` put
    // the public key on the next one.
    let seed = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let bad = |why: &str| AccessError {
        field: "nats-nkey",
        message: format!("{} does not hold a user nkey seed: {why}", path.display()),
    };
    // Not echoing the text: it may be a seed with a typo.
    let pair = nkeys::KeyPair::from_seed(seed).map_err(|_| bad("not a valid seed"))?;
    if !pair.public_key().starts_with('U') {
        return Err(bad("the seed is not of a user (it should start with SU)"));
    }
    Ok(seed.to_owned())
}

/// The file's text, or an error naming `field` and the path.
fn readable(field: &'static str, path: &Path) -> Result<String, AccessError> {
    std::fs::read_to_string(path).map_err(|e| AccessError {
        field,
        message: format!("cannot read {}: {e}", path.display()),
    })
}

/// Whether a failed connection was refused rather than not made: NATS
/// rejected the credentials, or TLS failed (a certificate not trusted, or
/// none where the server requires one). Retrying the same settings cannot
/// help, unlike a server that is down.
pub fn is_refusal(e: &async_nats::ConnectError) -> bool {
    use async_nats::ConnectErrorKind as Kind;
    if matches!(
        e.kind(),
        Kind::AuthorizationViolation | Kind::Authentication | Kind::Tls
    ) {
        return true;
    }
    // The server's TLS alert (say, "certificate required") reaches the
    // client as an I/O error wrapping the TLS library's error.
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let tls = s.is::<async_nats::rustls::Error>()
            || s.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.is::<async_nats::rustls::Error>());
        if tls {
            return true;
        }
        source = s.source();
    }
    false
}

/// `url` with any password (or token) in it replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    let trimmed = url.trim();
    let Some(scheme_end) = trimmed.find("://").map(|i| i + 3) else {
        // `user:password@host:port` without a scheme is still a URL to the client.
        return redact_authority(trimmed, 0);
    };
    redact_authority(trimmed, scheme_end)
}

fn redact_authority(url: &str, from: usize) -> String {
    let rest = &url[from..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    let shown = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        // A lone token (`nats://TOKEN@host`) is the secret itself.
        None => "***".to_owned(),
    };
    format!("{}{shown}{}", &url[..from], &rest[at..])
}

/// The URLs, redacted and comma-separated, for messages.
pub fn shown(urls: &[String]) -> String {
    urls.iter().map(|u| redact(u)).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_passwords_and_tokens_only() {
        assert_eq!(
            redact("nats://svc:s3cret@127.0.0.1:4222"),
            "nats://svc:***@127.0.0.1:4222"
        );
        assert_eq!(
            redact("tls://T0KEN@nats.example:4222"),
            "tls://***@nats.example:4222"
        );
        assert_eq!(redact("u:p@host:4222"), "u:***@host:4222");
        assert_eq!(redact("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(
            redact("ws://a:b@host/path@x"),
            "ws://a:***@host/path@x",
            "an @ after the authority is not userinfo"
        );
        assert_eq!(
            shown(&["nats://a:b@h1".into(), "nats://h2".into()]),
            "nats://a:***@h1,nats://h2"
        );
    }

    #[test]
    fn url_credentials_are_decoded_and_must_agree() {
        let urls = |list: &[&str]| list.iter().map(|u| u.to_string()).collect::<Vec<_>>();
        assert_eq!(
            url_credentials(&urls(&[
                "nats://svc:p%40ss@h1:4222",
                "nats://svc:p%40ss@h2"
            ])),
            Ok(Some(("svc".into(), Some("p@ss".into()))))
        );
        assert_eq!(
            url_credentials(&urls(&["nats://s3cr3t@h1"])),
            Ok(Some(("s3cr3t".into(), None)))
        );
        assert_eq!(url_credentials(&urls(&["nats://h1", "h2:4222"])), Ok(None));
        for mixed in [
            &["nats://a:b@h1", "nats://a:c@h2"][..],
            &["nats://a:b@h1", "nats://h2"][..],
        ] {
            let e = url_credentials(&urls(mixed)).unwrap_err();
            assert_eq!(e.field, "nats", "{e}");
            assert!(!e.message.contains(":b"), "never shows a password: {e}");
        }
    }

    #[tokio::test]
    async fn settings_that_cannot_work_name_their_field() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let junk = dir.path().join("junk");
        std::fs::write(&junk, "SUnot-a-seed\n").unwrap();
        let account = dir.path().join("account.nk");
        std::fs::write(&account, nkeys::KeyPair::new_account().seed().unwrap()).unwrap();
        let user = dir.path().join("user.nk");
        let pair = nkeys::KeyPair::new_user();
        // As nsc writes it: the seed, then the public key.
        std::fs::write(
            &user,
            format!("{}\n{}\n", pair.seed().unwrap(), pair.public_key()),
        )
        .unwrap();
        let field = |access: NatsAccess| async move {
            access
                .apply(ConnectOptions::new(), &[])
                .await
                .map(|_| ())
                .map_err(|e| (e.field, e.message))
        };
        let cases = [
            (
                NatsAccess {
                    creds: Some(user.clone()),
                    nkey: Some(user.clone()),
                    ..NatsAccess::default()
                },
                "nats-nkey",
                "not both",
            ),
            (
                NatsAccess {
                    nkey: Some(missing.clone()),
                    ..NatsAccess::default()
                },
                "nats-nkey",
                "cannot read",
            ),
            (
                NatsAccess {
                    nkey: Some(junk.clone()),
                    ..NatsAccess::default()
                },
                "nats-nkey",
                "not a valid seed",
            ),
            (
                NatsAccess {
                    nkey: Some(account),
                    ..NatsAccess::default()
                },
                "nats-nkey",
                "not of a user",
            ),
            (
                NatsAccess {
                    creds: Some(junk.clone()),
                    ..NatsAccess::default()
                },
                "nats-creds",
                "not a NATS credentials file",
            ),
            (
                NatsAccess {
                    creds: Some(missing.clone()),
                    ..NatsAccess::default()
                },
                "nats-creds",
                "cannot read",
            ),
            (
                NatsAccess {
                    tls_cert: Some(junk.clone()),
                    ..NatsAccess::default()
                },
                "nats-tls-key",
                "needs its private key",
            ),
            (
                NatsAccess {
                    tls_key: Some(junk.clone()),
                    ..NatsAccess::default()
                },
                "nats-tls-cert",
                "needs its client certificate",
            ),
            (
                NatsAccess {
                    inbox_prefix: Some("_INBOX_a.>".into()),
                    ..NatsAccess::default()
                },
                "nats-inbox-prefix",
                "not a subject prefix",
            ),
            (
                NatsAccess {
                    inbox_prefix: Some("a..b".into()),
                    ..NatsAccess::default()
                },
                "nats-inbox-prefix",
                "not a subject prefix",
            ),
            (
                NatsAccess {
                    tls_ca: Some(missing.clone()),
                    ..NatsAccess::default()
                },
                "nats-tls-ca",
                "cannot read",
            ),
        ];
        for (access, want_field, want_text) in cases {
            let (got_field, message) = field(access.clone()).await.unwrap_err();
            assert_eq!(got_field, want_field, "{access:?}: {message}");
            assert!(message.contains(want_text), "{access:?}: {message}");
            assert!(
                !message.contains("SUnot-a-seed"),
                "the file's text is never echoed"
            );
        }
        let ok = NatsAccess {
            nkey: Some(user),
            inbox_prefix: Some("_INBOX.acme".into()),
            ..NatsAccess::default()
        };
        assert_eq!(field(ok).await, Ok(()));
    }
}
