//! The migration controller (DESIGN.md §6): the transition planner, the
//! step executor with its durable record, and the runbook. It reaches
//! agents through `mailctl-api` only, never by linking the agent.

pub mod agents;
pub mod clock;
pub mod daemon;
pub mod execute;
pub mod metrics;
pub mod plan;
pub mod record;
pub mod runbook;
pub mod store;
