//! The migration state machine, planner, gates and agent client (DESIGN.md §6).
//! Built in the controller issue; the crate exists so the workspace layout is final.
