//! The host reconciler: drivers, runtime, state and API (see DESIGN.md §4).
//! Built in the agent issue; the crate exists so the workspace layout is final.
