//! Given/when/then harness for the pure core (disintegrate style).
//!
//! A [`Scenario`] holds a [`LedgerState`], the log of stamped envelopes and a
//! fake clock. Commands go in as JSON through [`command::parse_value`], so
//! parsing is exercised by every test; secrets are sealed by a deterministic
//! fake (`fingerprint = "fp:" + plaintext`), which is fine here because the
//! core never looks inside a sealed secret.
//!
//! Shared by several test crates, each using a different subset.
#![allow(dead_code)]

use ledger_core::command::{self, CommandName, ParsedCommand, SealedCommand};
use ledger_core::event::{Envelope, EventData, EventType, StampMeta, GENESIS_HASH};
use ledger_core::state::TokenState;
use ledger_core::{
    decide, Context, Decision, ErrorCode, LedgerState, Rejection, SealedSecret, Secret, Timestamp,
    TokenView,
};
use serde_json::{json, Map, Value};
use std::convert::Infallible;
use uuid::Uuid;

/// The default workspace of a scenario.
pub const WS: &str = "acme";
/// Another workspace, for isolation tests.
pub const OTHER_WS: &str = "globex";
/// 2024-01-01T00:00:00Z: where every scenario's clock starts.
pub const T0_MS: i64 = 1_704_067_200_000;
/// How far the clock moves before each command.
pub const TICK_MS: i64 = 1_000;
/// Signing key id handed to `decide`.
pub const KID: &str = "k-test-1";

const TOKEN_ID_BASE: u128 = 0x7000_0000_0000_4000_8000_0000_0000_0000;
const COMMAND_ID_BASE: u128 = 0xc000_0000_0000_4000_8000_0000_0000_0000;
const EVENT_ID_BASE: u128 = 0xe000_0000_0000_7000_8000_0000_0000_0000;

/// The fake sealing: deterministic, with the plaintext visible in the fingerprint.
pub fn fake_seal(_field: &'static str, secret: Secret) -> Result<SealedSecret, Infallible> {
    let plain = secret.expose();
    Ok(SealedSecret {
        alg: "fake".into(),
        ciphertext: plain.chars().rev().collect(),
        fingerprint: format!("fp:{plain}"),
        key_id: "dk-test".into(),
        nonce: "nonce".into(),
    })
}

/// Seals every secret of a parsed command with [`fake_seal`].
pub fn seal(cmd: ParsedCommand) -> SealedCommand {
    match cmd.try_map_secrets(fake_seal) {
        Ok(sealed) => sealed,
        Err(never) => match never {},
    }
}

/// Looks a command up by wire name; a typo in a test is a bug in the test.
pub fn command_name(name: &str) -> CommandName {
    CommandName::parse(name).unwrap_or_else(|| panic!("no command named {name:?}"))
}

/// The default actor of a scenario's commands.
pub fn actor() -> Value {
    json!({ "agentId": "user-1", "agentType": "user" })
}

/// The state and log of a ledger, driven one command at a time.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Current state, folded incrementally.
    pub state: LedgerState,
    /// Every envelope appended so far, in position order.
    pub log: Vec<Envelope>,
    /// The clock, epoch milliseconds.
    pub now_ms: i64,
    /// Ids of tokens created so far, in creation order.
    pub created: Vec<Uuid>,
    next_token: u128,
    next_command: u128,
    forced_token_id: Option<Uuid>,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario::new()
    }
}

impl Scenario {
    /// An empty ledger at [`T0_MS`].
    pub fn new() -> Scenario {
        Scenario {
            state: LedgerState::new(),
            log: Vec::new(),
            now_ms: T0_MS,
            created: Vec::new(),
            next_token: 0,
            next_command: 0,
            forced_token_id: None,
        }
    }

    /// The clock as a [`Timestamp`].
    pub fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.now_ms).expect("clock in range")
    }

    /// Moves the clock forward.
    pub fn advance(&mut self, ms: i64) -> &mut Self {
        self.now_ms += ms;
        self
    }

    /// Makes the next decision's `new_token_id` this id (to provoke a collision).
    pub fn force_next_token_id(&mut self, id: Uuid) -> &mut Self {
        self.forced_token_id = Some(id);
        self
    }

    /// A command id never used before.
    pub fn fresh_command_id(&mut self) -> Uuid {
        self.next_command += 1;
        Uuid::from_u128(COMMAND_ID_BASE + self.next_command)
    }

    /// Adds the common fields a test does not care about: `commandId`,
    /// `workspaceId` and `actor`, unless the JSON gives them.
    pub fn complete(&mut self, json: Value) -> Value {
        let Value::Object(mut map) = json else {
            return json;
        };
        if !map.contains_key("commandId") {
            let id = self.fresh_command_id();
            map.insert("commandId".into(), json!(id.to_string()));
        }
        map.entry("workspaceId").or_insert_with(|| json!(WS));
        map.entry("actor").or_insert_with(actor);
        Value::Object(map)
    }

    /// Runs a command that must be accepted; returns the token it was about.
    #[track_caller]
    pub fn given(&mut self, name: &str, json: Value) -> Uuid {
        let outcome = self.when(name, json);
        match &outcome.result {
            Ok(decision) => decision.token_id,
            Err(rejection) => panic!("given {name} was rejected: {rejection}"),
        }
    }

    /// Runs a command with the common fields filled in.
    pub fn when(&mut self, name: &str, json: Value) -> Outcome {
        let json = self.complete(json);
        self.when_raw(name, json)
    }

    /// Runs a command exactly as given (no common fields added).
    pub fn when_raw(&mut self, name: &str, json: Value) -> Outcome {
        let parsed = command::parse_value(command_name(name), json);
        self.run(parsed.map(seal))
    }

    /// Runs a command body through [`command::parse`] (bytes, not a JSON value).
    pub fn when_bytes(&mut self, name: &str, body: &[u8]) -> Outcome {
        let parsed = command::parse(command_name(name), body);
        self.run(parsed.map(seal))
    }

    /// Runs an already built command (e.g. an import, which JSON cannot express).
    pub fn when_command(&mut self, cmd: SealedCommand) -> Outcome {
        self.run(Ok(cmd))
    }

    /// The context the next decision sees.
    pub fn context(&mut self) -> Context {
        let new_token_id = self.forced_token_id.take().unwrap_or_else(|| {
            self.next_token += 1;
            Uuid::from_u128(TOKEN_ID_BASE + self.next_token)
        });
        Context {
            now: self.now(),
            new_token_id,
            jti: format!("jti-{}", self.next_command),
            kid: KID.into(),
        }
    }

    fn run(&mut self, parsed: Result<SealedCommand, Rejection>) -> Outcome {
        self.now_ms += TICK_MS;
        let before = self.state.clone();
        let log_len = self.log.len();
        let result = parsed.and_then(|cmd| {
            let ctx = self.context();
            let decision = decide(&self.state, &cmd, &ctx)?;
            // Pure: the same inputs give the same answer.
            assert_eq!(
                decide(&self.state, &cmd, &ctx).as_ref(),
                Ok(&decision),
                "decide is not deterministic"
            );
            self.append(&cmd, &decision);
            Ok(decision)
        });
        Outcome {
            result,
            events: self.log[log_len..].to_vec(),
            before,
            after: self.state.clone(),
        }
    }

    /// Stamps the decision's drafts into envelopes and folds them in.
    fn append(&mut self, cmd: &SealedCommand, decision: &Decision) {
        for draft in &decision.events {
            assert_eq!(
                draft.token_id, decision.token_id,
                "a decision is about one token"
            );
            let position = self.state.position + 1;
            let prev_hash = self
                .log
                .last()
                .map_or_else(|| GENESIS_HASH.to_owned(), |e| e.hash.clone());
            let meta = StampMeta {
                event_id: Uuid::from_u128(EVENT_ID_BASE + u128::from(position)),
                position,
                occurred_at: self.now(),
                actor: cmd.actor.clone(),
                command_id: cmd.command_id,
                correlation_id: cmd.correlation_id.clone(),
                prev_hash,
            };
            let (envelope, bytes) = draft.clone().stamp(meta);
            assert_eq!(bytes, envelope.canonical_bytes());
            assert_eq!(envelope.hash, envelope.computed_hash());
            if envelope.version == 1 {
                self.created.push(envelope.token_id);
            }
            self.state.evolve(&envelope);
            self.log.push(envelope);
        }
    }

    /// A token's state; panics when unknown.
    #[track_caller]
    pub fn token(&self, id: Uuid) -> &TokenState {
        self.state
            .token(&id)
            .unwrap_or_else(|| panic!("no token {id}"))
    }

    /// A token's view (`None` once purged).
    #[track_caller]
    pub fn view(&self, id: Uuid) -> Option<TokenView> {
        TokenView::of(self.token(id))
    }

    /// A token's envelopes, in log order.
    pub fn history(&self, id: Uuid) -> Vec<&Envelope> {
        self.log.iter().filter(|e| e.token_id == id).collect()
    }

    /// Replays the whole log into a fresh state.
    pub fn replayed(&self) -> LedgerState {
        let mut state = LedgerState::new();
        for e in &self.log {
            state.evolve(e);
        }
        state
    }

    // Shorthands for the commands most tests start from.

    /// Issues a client token with these fields in [`WS`].
    #[track_caller]
    pub fn issue(&mut self, fields: Value) -> Uuid {
        self.given("issue_client_token", fields)
    }

    /// Issues a client token named `name` in [`WS`].
    #[track_caller]
    pub fn issue_named(&mut self, name: &str) -> Uuid {
        self.issue(json!({ "name": name }))
    }

    /// Registers an access token for `user` at `provider` / `account` in [`WS`].
    #[track_caller]
    pub fn register(&mut self, user: Uuid, provider: &str, account: &str) -> Uuid {
        self.given(
            "register_access_token",
            json!({
                "user": { "id": user.to_string() },
                "provider": provider,
                "accountName": account,
                "accessToken": "at-1",
                "refreshToken": "rt-1",
            }),
        )
    }

    /// Runs a command that names only `tokenId` (plus `extra` fields).
    pub fn on(&mut self, name: &str, token: Uuid, extra: Value) -> Outcome {
        let mut body = Map::new();
        body.insert("tokenId".into(), json!(token.to_string()));
        if let Value::Object(extra) = extra {
            body.extend(extra);
        }
        self.when(name, Value::Object(body))
    }
}

/// A user id for tests.
pub fn user(n: u128) -> Uuid {
    Uuid::from_u128(0x5000_0000_0000_4000_8000_0000_0000_0000 + n)
}

/// What a `when` produced.
#[derive(Debug)]
pub struct Outcome {
    /// The decision or the rejection.
    pub result: Result<Decision, Rejection>,
    /// Envelopes appended by this command.
    pub events: Vec<Envelope>,
    /// State before the command.
    pub before: LedgerState,
    /// State after the command.
    pub after: LedgerState,
}

impl Outcome {
    /// Asserts acceptance with exactly these event types, in order.
    #[track_caller]
    pub fn then_events(&self, expected: &[EventType]) -> &Self {
        let decision = match &self.result {
            Ok(d) => d,
            Err(r) => panic!("expected events {expected:?}, got rejection {r}"),
        };
        let types: Vec<EventType> = self.events.iter().map(Envelope::event_type).collect();
        assert_eq!(types, expected, "event types");
        if expected.is_empty() {
            assert_eq!(self.before, self.after, "no events, yet the state changed");
        }
        for e in &self.events {
            assert_eq!(e.token_id, decision.token_id);
        }
        self
    }

    /// Asserts acceptance with no events (a reuse or a no-op).
    #[track_caller]
    pub fn then_nothing(&self) -> &Self {
        self.then_events(&[])
    }

    /// Asserts a rejection with this code and field, and that nothing changed.
    #[track_caller]
    pub fn then_err(&self, code: ErrorCode, field: Option<&str>) -> &Rejection {
        let rejection = match &self.result {
            Ok(d) => panic!(
                "expected {code} on {field:?}, got {} events",
                d.events.len()
            ),
            Err(r) => r,
        };
        assert_eq!(
            (rejection.code, rejection.field.as_deref()),
            (code, field),
            "rejection: {rejection}"
        );
        assert!(!rejection.message.is_empty(), "a rejection explains itself");
        assert!(self.events.is_empty(), "a rejection appends nothing");
        assert_eq!(self.before, self.after, "a rejection changes nothing");
        rejection
    }

    /// Shorthand for `invalid_input` naming `field`.
    #[track_caller]
    pub fn then_invalid(&self, field: &str) -> &Rejection {
        self.then_err(ErrorCode::InvalidInput, Some(field))
    }

    /// The accepted decision.
    #[track_caller]
    pub fn decision(&self) -> &Decision {
        match &self.result {
            Ok(d) => d,
            Err(r) => panic!("expected acceptance, got {r}"),
        }
    }

    /// The payload of the only event appended.
    #[track_caller]
    pub fn data(&self) -> &EventData {
        assert_eq!(self.events.len(), 1, "expected exactly one event");
        &self.events[0].data
    }

    /// The payload of the only event as JSON.
    #[track_caller]
    pub fn data_json(&self) -> Value {
        serde_json::to_value(self.data()).expect("data serializes")
    }
}
