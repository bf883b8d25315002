//! Diagnostics: what is wrong, where, and what to do about it.
//!
//! Every problem found in a manifest becomes one [`Diagnostic`], printed as
//! `FILE:LINE:COL: field.path: message`, followed by an indented hint when one
//! helps. Loading never stops at the first problem: each file, document and
//! rule adds what it finds, so one run shows an admin everything to fix.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A position in a manifest file; line and column count from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

/// Where a value came from: the file and the position of its YAML node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub file: Arc<Path>,
    pub position: Position,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.file.display(),
            self.position.line,
            self.position.column
        )
    }
}

/// One problem in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub origin: Origin,
    /// Dotted path of the field inside its document (`spec.addresses[0].address`);
    /// empty for problems of the document as a whole (YAML syntax).
    pub field: String,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(origin: Origin, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            origin,
            field: field.into(),
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)?;
        } else {
            write!(f, "{}: {}: {}", self.origin, self.field, self.message)?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// All problems of one load, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.0.push(diagnostic);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }

    /// Sort by file and position so output reads top to bottom; drop exact repeats.
    pub(crate) fn sorted(mut self) -> Self {
        self.0.sort_by(|a, b| {
            (&a.origin.file, a.origin.position, &a.field).cmp(&(
                &b.origin.file,
                b.origin.position,
                &b.field,
            ))
        });
        self.0.dedup();
        self
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// An origin for a whole file (line 1, column 1), for problems like "cannot read".
pub(crate) fn file_origin(file: &Path) -> Origin {
    Origin {
        file: Arc::from(PathBuf::from(file)),
        position: Position { line: 1, column: 1 },
    }
}
