//! The migration controller (DESIGN.md §6): the transition planner and the
//! runbook so far; the step executor, its store and API follow. It reaches
//! agents through `mailctl-api` only, never by linking the agent.

pub mod plan;
pub mod runbook;
