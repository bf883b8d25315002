//! How much one load may read and build.
//!
//! Manifests come from admins, but also through the agent's API and from
//! folders anyone with write access can fill; memory must not grow with
//! whatever the input repeats. A [`Budget`] is spent across all files of one
//! load (one `mailctl validate`, one `PUT /v1/desired`):
//!
//! - manifest text, checked while files are read (a file is read no further
//!   than the room left, so `/dev/zero` or a huge file costs nothing);
//! - YAML nodes and scalar bytes *after alias expansion*, counted from the
//!   parser's events before the tree is built: an alias costs the size of
//!   what it repeats, so a "billion laughs" stops at the alias that crosses
//!   the limit, without being expanded;
//! - nesting depth and the length of one mapping key, which field paths are
//!   made of.
//!
//! Real manifests are far below every limit (a 1,000-address host is about
//! 60 KB and 6,000 nodes). Crossing one ends the load with one located error
//! that names the limit; nothing after it is reported (it would only be noise
//! caused by the part that was not read).

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::diag::Position;

/// The limits of one load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Manifest text, all files together.
    pub text_bytes: usize,
    /// YAML nodes (scalars, keys, lists, mappings), aliases counted as what they repeat.
    pub nodes: usize,
    /// Scalar text (keys and values), aliases counted as what they repeat.
    pub value_bytes: usize,
    /// Lists and mappings nested in each other.
    pub depth: usize,
    /// One mapping key (a field name or a host name; YAML's implicit keys stop at 1024 too).
    pub key_bytes: usize,
}

/// The limits every load uses. The agent's API takes bodies up to 2 MB, so
/// any body fits the text limit and is refused, if at all, by the others.
pub const LIMITS: Limits = Limits {
    text_bytes: 4 << 20,
    nodes: 200_000,
    value_bytes: 8 << 20,
    depth: 64,
    key_bytes: 1024,
};

/// Which limit was crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    TextBytes,
    Nodes,
    ValueBytes,
    Depth,
    KeyBytes,
}

impl Limit {
    /// Whether crossing it ends the whole load (the budget is spent), not only the file.
    pub fn ends_load(self) -> bool {
        matches!(self, Limit::TextBytes | Limit::Nodes | Limit::ValueBytes)
    }

    /// What crossed the limit, its value, and what to do.
    pub fn describe(self, limits: &Limits) -> (String, String) {
        let split =
            "split the manifests into smaller sets and validate or apply them one set at a time";
        match self {
            Limit::TextBytes => (
                format!(
                    "too large: the manifests of one load may hold at most {} bytes (4 MiB) of text; reading stopped in this file",
                    limits.text_bytes
                ),
                split.into(),
            ),
            Limit::Nodes => (
                format!(
                    "too large: one load may hold at most {} YAML nodes, counting each alias as the nodes it repeats; this node is past the limit and nothing after it was read",
                    limits.nodes
                ),
                format!(
                    "write repeated parts out instead of nesting aliases of aliases, or {split}"
                ),
            ),
            Limit::ValueBytes => (
                format!(
                    "too large: one load may hold at most {} bytes (8 MiB) of keys and values, counting each alias as the text it repeats; this node is past the limit and nothing after it was read",
                    limits.value_bytes
                ),
                format!("put large file content into `source:` files, or {split}"),
            ),
            Limit::Depth => (
                format!(
                    "too deep: lists and mappings may nest at most {} levels; nothing after this point was read",
                    limits.depth
                ),
                "manifests nest a few levels only: check the brackets and indentation here".into(),
            ),
            Limit::KeyBytes => (
                format!(
                    "key too long: a mapping key may be at most {} bytes; nothing after this point was read",
                    limits.key_bytes
                ),
                "keys are field and host names: check the quoting around this key".into(),
            ),
        }
    }
}

/// A limit crossed at a position of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    pub limit: Limit,
    pub position: Position,
}

/// What one load has used so far.
#[derive(Debug, Clone)]
pub struct Budget {
    pub limits: Limits,
    text: usize,
    /// A file did not fit: the load reads nothing more.
    text_spent: bool,
    nodes: usize,
    value_bytes: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget::new(LIMITS)
    }
}

/// Nodes and scalar bytes: what a subtree costs, and what an alias of it costs again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Size {
    pub nodes: usize,
    pub bytes: usize,
}

impl Budget {
    pub fn new(limits: Limits) -> Self {
        Budget {
            limits,
            text: 0,
            text_spent: false,
            nodes: 0,
            value_bytes: 0,
        }
    }

    /// Text bytes the load may still take.
    pub fn text_room(&self) -> usize {
        self.limits.text_bytes.saturating_sub(self.text)
    }

    /// Take `bytes` of manifest text; false (and the text budget spent) when they do not fit.
    pub fn take_text(&mut self, bytes: usize) -> bool {
        if self.text_spent || bytes > self.text_room() {
            self.text_spent = true;
            return false;
        }
        self.text += bytes;
        true
    }

    /// Whether some text did not fit: the load must stop reading.
    pub fn text_spent(&self) -> bool {
        self.text_spent
    }

    /// Nodes and value bytes used so far, to measure a subtree by difference.
    pub(crate) fn used(&self) -> Size {
        Size {
            nodes: self.nodes,
            bytes: self.value_bytes,
        }
    }

    /// Spend `size`; the limit it crosses, if any.
    pub(crate) fn spend(&mut self, size: Size) -> Result<(), Limit> {
        self.nodes = self.nodes.saturating_add(size.nodes);
        self.value_bytes = self.value_bytes.saturating_add(size.bytes);
        if self.nodes > self.limits.nodes {
            Err(Limit::Nodes)
        } else if self.value_bytes > self.limits.value_bytes {
            Err(Limit::ValueBytes)
        } else {
            Ok(())
        }
    }
}

/// Why a manifest file was not read.
#[derive(Debug)]
pub enum ReadError {
    Io(io::Error),
    /// The file is larger than the text the load may still take.
    OverBudget,
}

/// Read a manifest file, taking its size from `budget`: never more than the
/// room left plus one byte is read, whatever the file is.
pub fn read_manifest(path: &Path, budget: &mut Budget) -> Result<Vec<u8>, ReadError> {
    let room = budget.text_room();
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| {
            f.take(u64::try_from(room).unwrap_or(u64::MAX).saturating_add(1))
                .read_to_end(&mut bytes)
        })
        .map_err(ReadError::Io)?;
    if budget.take_text(bytes.len()) {
        Ok(bytes)
    } else {
        Err(ReadError::OverBudget)
    }
}
