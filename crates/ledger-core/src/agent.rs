//! Who did something: the `actor` of a command, copied into events and views.

use serde::{Deserialize, Serialize};

/// The kind of principal behind an action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentType {
    /// A human user.
    User,
    /// A client token acting on its own behalf.
    ClientToken,
    /// Another service.
    Service,
    /// The ledger itself (imports, maintenance).
    System,
}

impl AgentType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentType::User => "user",
            AgentType::ClientToken => "client_token",
            AgentType::Service => "service",
            AgentType::System => "system",
        }
    }
}

/// An agent as the seeds define it: `{ "agentId", "agentType" }`.
///
/// Fields are declared in alphabetical order of their JSON names so that the
/// derived serialization is already canonical (sorted keys).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Agent {
    /// Stable id of the agent, at most 200 characters.
    pub agent_id: String,
    /// What kind of agent it is.
    pub agent_type: AgentType,
}

impl Agent {
    /// The ledger acting on its own behalf.
    pub fn system() -> Agent {
        Agent {
            agent_id: "tokenledger".into(),
            agent_type: AgentType::System,
        }
    }
}
