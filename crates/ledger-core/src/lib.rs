//! The pure domain of tokenledger.
//!
//! Commands are validated against the current state by [`decide`], which
//! returns the events to append or a [`Rejection`]; [`LedgerState::evolve`]
//! folds an event into the state. Nothing here does IO or reads a clock:
//! time, fresh ids and the active signing key id come in through
//! [`Context`], so every decision can be replayed exactly.
//!
//! **Architecture invariant**: this crate depends on no tokio, sled, NATS or
//! crypto backend; it only describes sealed secrets, it never seals them.

pub mod agent;
pub mod command;
pub mod decide;
pub mod event;
pub mod json;
pub mod rejection;
pub mod secret;
pub mod sharded;
pub mod state;
pub mod time;
pub mod validate;
pub mod view;

pub use agent::{Agent, AgentType};
pub use command::{Command, CommandEnvelope, CommandName};
pub use decide::{decide, Context, Decision};
pub use event::{Envelope, EventData, EventDraft, EventType, StampMeta};
pub use rejection::{ErrorCode, Rejection};
pub use secret::{SealedSecret, Secret};
pub use state::{LedgerState, Reservation, StateError, TokenBody, TokenKind, TokenState};
pub use time::Timestamp;
pub use view::TokenView;
