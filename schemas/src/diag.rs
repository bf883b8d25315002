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
            write!(
                f,
                "{}: {}: {}",
                self.origin,
                Brief(&self.field),
                self.message
            )?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// How many problems one load keeps and shows; the rest are only counted.
/// Input can hold hundreds of thousands of mistakes (one per node): nobody
/// reads past the first screens, and keeping them all costs memory without
/// bound.
pub const KEPT: usize = 100;

/// A field path as shown: a path made of long keys keeps its two ends (the
/// position already says exactly where the field is).
struct Brief<'a>(&'a str);

impl fmt::Display for Brief<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const END: usize = 100;
        let text = self.0;
        if text.len() <= 3 * END {
            return f.write_str(text);
        }
        let mut head = END;
        while !text.is_char_boundary(head) {
            head -= 1;
        }
        let mut tail = text.len() - END;
        while !text.is_char_boundary(tail) {
            tail += 1;
        }
        write!(f, "{} ... {}", &text[..head], &text[tail..])
    }
}

/// All problems of one load, in file order: the first [`KEPT`] found, and how
/// many more there were.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics {
    kept: Vec<Diagnostic>,
    omitted: usize,
}

impl Diagnostics {
    pub fn push(&mut self, diagnostic: Diagnostic) {
        if self.kept.len() < KEPT {
            self.kept.push(diagnostic);
        } else {
            self.omitted += 1;
        }
    }

    /// Count `n` more problems that were found but not kept.
    pub fn omit(&mut self, n: usize) {
        self.omitted = self.omitted.saturating_add(n);
    }

    /// Add all of `other`, kept and counted.
    pub fn append(&mut self, other: Diagnostics) {
        self.omit(other.omitted);
        for d in other.kept {
            self.push(d);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every problem found, shown or not.
    pub fn len(&self) -> usize {
        self.kept.len().saturating_add(self.omitted)
    }

    /// Problems found but not kept.
    pub fn omitted(&self) -> usize {
        self.omitted
    }

    /// The problems kept.
    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.kept.iter()
    }

    /// Sort by file and position so output reads top to bottom; drop exact repeats.
    pub(crate) fn sorted(mut self) -> Self {
        self.kept.sort_by(|a, b| {
            (&a.origin.file, a.origin.position, &a.field).cmp(&(
                &b.origin.file,
                b.origin.position,
                &b.field,
            ))
        });
        self.kept.dedup();
        self
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.kept {
            writeln!(f, "{d}")?;
        }
        if self.omitted > 0 {
            writeln!(
                f,
                "... and {} more problem(s) not shown (only the first {KEPT} are kept): fix these and run again",
                self.omitted
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl IntoIterator for Diagnostics {
    type Item = Diagnostic;
    type IntoIter = std::vec::IntoIter<Diagnostic>;
    fn into_iter(self) -> Self::IntoIter {
        self.kept.into_iter()
    }
}

/// An origin for a whole file (line 1, column 1), for problems like "cannot read".
pub(crate) fn file_origin(file: &Path) -> Origin {
    Origin {
        file: Arc::from(PathBuf::from(file)),
        position: Position { line: 1, column: 1 },
    }
}

/// The name among `names` closest to `wanted`, when it is close enough to be
/// a slip of the fingers (at most two edits, and not the whole word).
pub fn closest<'a>(wanted: &str, names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    names
        .into_iter()
        .filter(|n| *n != wanted)
        .map(|n| (strsim::damerau_levenshtein(n, wanted), n))
        .filter(|(d, n)| *d <= 2 && *d < n.chars().count().max(wanted.chars().count()))
        .min()
        .map(|(_, n)| n)
}

/// A hint naming the closest of `names` to `wanted` (`did you mean "eve"?`),
/// or else listing them all (`hosts are: bob, eve`).
pub(crate) fn suggest<'a>(
    wanted: &str,
    what: &str,
    names: impl IntoIterator<Item = &'a str> + Clone,
) -> String {
    match closest(wanted, names.clone()) {
        Some(name) => format!("did you mean \"{name}\"?"),
        None => format!(
            "{what}: {}",
            names.into_iter().collect::<Vec<_>>().join(", ")
        ),
    }
}

/// A diagnostic shown as a warning: `FILE:LINE:COL: warning: field: message`.
#[derive(Debug, Clone, Copy)]
pub struct Warning<'a>(pub &'a Diagnostic);

impl fmt::Display for Warning<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        write!(f, "{}: warning: ", d.origin)?;
        if !d.field.is_empty() {
            write!(f, "{}: ", Brief(&d.field))?;
        }
        f.write_str(&d.message)?;
        if let Some(hint) = &d.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}
