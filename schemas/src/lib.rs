//! The mailctl manifest model.
//!
//! Manifests are YAML documents of three kinds — `Host`, `Migration`, `Phase`
//! (apiVersion `mailctl/v1alpha1`). This crate turns their text into the
//! validated [`model`] in one place ([`validate()`]), reporting every problem as
//! `FILE:LINE:COL: field.path: message`, and publishes the JSON Schema of each
//! kind ([`json_schema`]) so editors check manifests while they are written.
//!
//! The crate does no I/O of its own except in [`load`], which reads manifest
//! files and folders from disk for the callers that want that.

#![forbid(unsafe_code)]

pub mod budget;
pub mod diag;
mod duration;
pub mod load;
pub mod model;
pub mod nft;
pub mod raw;
pub mod render;
mod schema;
pub mod select;
pub mod ssh;
mod validate;
mod yaml;

pub use diag::{Diagnostic, Diagnostics, Origin, Position, Warning};
pub use duration::ManifestDuration;
pub use schema::{Kind, json_schema};
pub use validate::{ContentReader, Source, validate};
