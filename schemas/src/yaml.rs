//! YAML text -> JSON values plus a map from field paths to source positions.
//!
//! Checking happens on plain JSON values (the JSON Schema pass, then serde),
//! and every later rule names the field it is about by its path. The
//! [`SourceMap`] built here turns such a path back into `line:col`, so every
//! stage can report a located error without carrying spans in the types.
//!
//! Parsing is metered (see [`crate::budget`]): the parser's events are
//! counted before the loader builds anything, so an input past a limit is
//! refused at the node that crosses it, and aliases are never expanded past
//! the budget.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;

use saphyr::{MarkedYaml, Scalar, YamlData, YamlLoader};
use saphyr_parser::{Event, Span, SpannedEventReceiver};
use serde_json::{Map, Number, Value};

use crate::budget::{Budget, Exceeded, Limit, Size};
use crate::diag::{KEPT, Position};

/// Where one node of a document sits: its parent and its own path segment.
#[derive(Debug, Clone)]
struct Node {
    /// Index of the parent node; the root (index 0) is its own parent.
    parent: u32,
    segment: Segment,
    /// Length of the node's full path, which is never stored.
    path_len: usize,
    value: Position,
    /// Where the key naming this node was written (mapping values only).
    key: Option<Position>,
    /// How a plain integer, float or boolean was written (`0600`, `1.10`),
    /// for fields that take such a scalar as text (argv words).
    text: Option<Box<str>>,
}

#[derive(Debug, Clone)]
enum Segment {
    Root,
    /// A mapping key: `.key`, or `key` when the parent's path is empty.
    Key(Box<str>),
    /// A sequence index: `[3]`.
    Index(usize),
}

/// Positions of the nodes of one document, by field path
/// (`spec.addresses[0].address`; the document root is `""`).
///
/// Paths are not stored: a node holds its parent, its own key or index and
/// the length of its path, so the map grows with the number of nodes, not
/// with the length of their paths (a long key over a long list once made
/// every item cost a copy of the key). Only reports, and argv words
/// written as plain numbers or booleans, look positions up, so the lookup
/// index (path hashes) is built on the first lookup: most valid manifests
/// never pay for it.
#[derive(Debug, Default, Clone)]
pub struct SourceMap {
    /// Every value node, in document order (parents before children).
    nodes: Vec<Node>,
    /// `(path hash, node)` sorted, built on the first lookup: a hash finds
    /// the nodes of a path without spelling every path out.
    sorted: OnceLock<Vec<(u64, u32)>>,
    /// Whether any node records how it was written ([`Node::text`]).
    any_text: bool,
}

/// Path hashes are polynomial over the path's bytes modulo a Mersenne prime,
/// so a child's hash follows from its parent's and its own segment. The base
/// is random per process; a collision costs a comparison, never a wrong answer.
const MODULUS: u64 = (1 << 61) - 1;

fn base() -> u64 {
    static BASE: OnceLock<u64> = OnceLock::new();
    *BASE.get_or_init(|| RandomState::new().hash_one(0u8) % (MODULUS - 256) + 256)
}

fn extend_hash(mut hash: u64, bytes: &[u8]) -> u64 {
    let base = u128::from(base());
    for &b in bytes {
        let next = (u128::from(hash) * base + u128::from(b) + 1) % u128::from(MODULUS);
        // Below MODULUS, so it fits.
        hash = u64::try_from(next).unwrap_or_default();
    }
    hash
}

impl SourceMap {
    fn push(
        &mut self,
        parent: u32,
        segment: Segment,
        value: Position,
        key: Option<Position>,
    ) -> u32 {
        let path_len = match self.nodes.get(parent as usize) {
            None => 0,
            Some(up) => up.path_len + segment_len(&segment, up.path_len),
        };
        let index = u32::try_from(self.nodes.len()).unwrap_or(u32::MAX);
        self.nodes.push(Node {
            parent,
            segment,
            path_len,
            value,
            key,
            text: None,
        });
        index
    }

    /// The full path of a node, for a message about it.
    fn path(&self, index: u32) -> String {
        let mut segments = Vec::new();
        let mut at = index as usize;
        while at != 0 {
            let Some(node) = self.nodes.get(at) else {
                break;
            };
            segments.push(at);
            at = node.parent as usize;
        }
        let mut path = String::new();
        for &i in segments.iter().rev() {
            let parent_len = path.len();
            segment_text(&self.nodes[i].segment, parent_len, &mut path);
        }
        path
    }

    /// Whether node `index` has exactly the path `path`, compared from the
    /// end, segment by segment.
    fn has_path(&self, index: u32, path: &str) -> bool {
        let mut end = path.len();
        let mut at = index as usize;
        let mut text = String::new();
        loop {
            let Some(node) = self.nodes.get(at) else {
                return false;
            };
            if node.path_len != end {
                return false;
            }
            if at == 0 {
                return end == 0;
            }
            let parent_len = self
                .nodes
                .get(node.parent as usize)
                .map_or(0, |p| p.path_len);
            text.clear();
            segment_text(&node.segment, parent_len, &mut text);
            if !path.as_bytes()[..end].ends_with(text.as_bytes()) {
                return false;
            }
            end -= text.len();
            at = node.parent as usize;
        }
    }

    /// The nodes whose path is `path`, last recorded first.
    fn nodes_at<'a>(&'a self, path: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        let sorted = self.sorted.get_or_init(|| {
            // Parents come before their children, so each hash extends one already made.
            let mut hashes: Vec<u64> = Vec::with_capacity(self.nodes.len());
            let mut text = String::new();
            for node in &self.nodes {
                let up = node.parent as usize;
                let hash = match (hashes.get(up), self.nodes.get(up)) {
                    (Some(&hash), Some(parent)) => {
                        text.clear();
                        segment_text(&node.segment, parent.path_len, &mut text);
                        extend_hash(hash, text.as_bytes())
                    }
                    _ => 0,
                };
                hashes.push(hash);
            }
            let mut order: Vec<(u64, u32)> = hashes
                .into_iter()
                .enumerate()
                .map(|(i, hash)| (hash, u32::try_from(i).unwrap_or(u32::MAX)))
                .collect();
            order.sort_unstable();
            order
        });
        let hash = extend_hash(0, path.as_bytes());
        let from = sorted.partition_point(|&(h, _)| h < hash);
        let to = sorted.partition_point(|&(h, _)| h <= hash);
        sorted[from..to]
            .iter()
            .rev()
            .filter(move |&&(_, i)| self.has_path(i, path))
            .filter_map(|&(_, i)| self.nodes.get(i as usize))
    }

    fn value_at(&self, path: &str) -> Option<Position> {
        if path.is_empty() {
            // The document itself, which every object records as its
            // origin: found without building the index.
            return self
                .nodes
                .iter()
                .rev()
                .find(|n| n.path_len == 0)
                .map(|n| n.value);
        }
        self.nodes_at(path).next().map(|n| n.value)
    }

    /// Position of the value at `path`, or of its nearest ancestor that exists
    /// (a missing field is reported where its parent mapping starts).
    pub fn value(&self, path: &str) -> Position {
        let mut path = path;
        loop {
            if let Some(p) = self.value_at(path) {
                return p;
            }
            match parent(path) {
                Some(up) => path = up,
                None => return self.value_at("").unwrap_or_default(),
            }
        }
    }

    /// How the plain integer, float or boolean at `path` was written in the
    /// file (`0600` for what JSON holds as 600); `None` for other values.
    /// `as_text` is the value as serde turned it into text: only one that
    /// reads as a number or boolean may have been written otherwise, so
    /// only then is the position index needed.
    pub fn scalar_text<'a>(&'a self, path: &'a str, as_text: &str) -> Option<&'a str> {
        let plain = !matches!(Scalar::parse_from_cow(as_text.into()), Scalar::String(_));
        if !self.any_text || !plain {
            return None;
        }
        self.nodes_at(path).next().and_then(|n| n.text.as_deref())
    }

    /// Position of the key naming the field at `path` (for unknown fields),
    /// falling back to the value position.
    pub fn key(&self, path: &str) -> Position {
        let key = if path.is_empty() {
            self.nodes
                .iter()
                .rev()
                .filter(|n| n.path_len == 0)
                .find_map(|n| n.key)
        } else {
            self.nodes_at(path).find_map(|n| n.key)
        };
        key.unwrap_or_else(|| self.value(path))
    }
}

/// The length of a node's segment as [`segment_text`] writes it.
fn segment_len(segment: &Segment, parent_len: usize) -> usize {
    match segment {
        Segment::Root => 0,
        Segment::Key(key) => key.len() + usize::from(parent_len > 0),
        Segment::Index(i) => i.checked_ilog10().map_or(1, |d| d as usize + 1) + 2,
    }
}

/// Append a node's segment to `path`, whose parent part is `parent_len` long.
fn segment_text(segment: &Segment, parent_len: usize, path: &mut String) {
    match segment {
        Segment::Root => {}
        Segment::Key(key) => {
            if parent_len > 0 {
                path.push('.');
            }
            path.push_str(key);
        }
        Segment::Index(i) => {
            // Writing to a String cannot fail.
            let _ = write!(path, "[{i}]");
        }
    }
}

/// The path one level up: `a.b[2]` -> `a.b`, `a.b` -> `a`, `a` -> ``.
fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

/// Join a mapping key onto a path.
pub(crate) fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Join a sequence index onto a path.
pub(crate) fn join_index(path: &str, index: usize) -> String {
    format!("{path}[{index}]")
}

/// A YAML document as JSON, with where each of its nodes was written.
#[derive(Debug)]
pub struct Document {
    pub value: Value,
    pub map: SourceMap,
}

/// A problem found while reading YAML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    pub position: Position,
    pub field: String,
    pub message: String,
    /// Set when a limit of the budget was crossed (the message says which).
    pub exceeded: Option<Limit>,
}

/// What a well-formed file holds: its documents, the problems found in
/// their nodes (the first [`KEPT`]), and how many more there were.
#[derive(Debug)]
pub struct Parsed {
    pub documents: Vec<Document>,
    pub errors: Vec<YamlError>,
    pub omitted: usize,
}

/// Parse every document of a YAML stream, spending `budget`. A syntax error
/// or a crossed limit fails the whole file (what follows cannot be trusted,
/// or was not read); problems inside well-formed documents (tags, non-string
/// keys, non-finite numbers) are collected per node.
pub fn parse(text: &str, budget: &mut Budget) -> Result<Parsed, YamlError> {
    let mut parser = saphyr_parser::Parser::new_from_str(text);
    let mut loader = YamlLoader::<MarkedYaml>::default();
    // The meter refuses alias expansion first; this is the loader's own guard.
    loader.alias_limit(budget.limits.nodes);
    let mut meter = Meter {
        loader,
        budget,
        open: Vec::new(),
        anchors: HashMap::new(),
        document_anchors: 0,
        next_anchor: 0,
        foreign: None,
        exceeded: None,
    };
    // The events are pulled one at a time: `Parser::load` recurses once per
    // nesting level (a deep enough file overflowed the agent's stack) and
    // cannot stop at the limit.
    let mut scan = Ok(());
    for next in &mut parser {
        match next {
            Ok((event, span)) => meter.on_event(event, span),
            Err(e) => scan = Err(e),
        }
        if scan.is_err() || meter.exceeded.is_some() || meter.foreign.is_some() {
            break;
        }
    }
    if let Some(e) = meter.exceeded {
        let (message, _) = e.limit.describe(&meter.budget.limits);
        return Err(YamlError {
            position: e.position,
            field: String::new(),
            message,
            exceeded: Some(e.limit),
        });
    }
    if let Some(position) = meter.foreign {
        return Err(YamlError {
            position,
            field: String::new(),
            message: "invalid YAML: this alias names an anchor of an earlier document".into(),
            exceeded: None,
        });
    }
    let loader = meter.loader;
    if let Some(e) = scan.err().or_else(|| loader.error().cloned()) {
        return Err(YamlError {
            position: Position {
                line: e.marker().line(),
                column: e.marker().col() + 1,
            },
            field: String::new(),
            message: format!("invalid YAML: {}", e.info()),
            exceeded: None,
        });
    }
    let mut parsed = Parsed {
        documents: Vec::new(),
        errors: Vec::new(),
        omitted: 0,
    };
    let text = Text::new(text);
    for node in loader.into_documents() {
        if matches!(node.data, YamlData::Value(Scalar::Null)) {
            // An empty document, e.g. after a trailing `---`.
            continue;
        }
        let mut map = SourceMap::default();
        let root = map.push(0, Segment::Root, position(&node), None);
        let value = convert(&node, root, &mut map, &mut parsed, &text);
        parsed.documents.push(Document { value, map });
    }
    Ok(parsed)
}

/// Counts the parser's events against the budget and passes them on to the
/// loader until a limit is crossed; after that, nothing more is built.
struct Meter<'b, 'input> {
    loader: YamlLoader<'input, MarkedYaml<'input>>,
    budget: &'b mut Budget,
    /// Open lists and mappings, innermost last.
    open: Vec<Open>,
    /// What each anchored node cost, so an alias of it costs as much again.
    anchors: HashMap<usize, Size>,
    /// Anchor ids grow through the stream: the current document's start here.
    /// (`Parser::load` would forget earlier documents' anchors; pulling
    /// events does not, so aliases to them are refused here.)
    document_anchors: usize,
    /// One past the highest anchor id seen.
    next_anchor: usize,
    /// Where an alias named an anchor of an earlier document.
    foreign: Option<Position>,
    exceeded: Option<Exceeded>,
}

#[derive(Debug)]
struct Open {
    anchor: usize,
    /// The budget used when it opened: its size is the difference at its end.
    start: Size,
    /// A mapping whose next child is a key.
    expects_key: bool,
    mapping: bool,
}

impl Meter<'_, '_> {
    /// Check one event; the limit it crosses, if any.
    fn check(&mut self, event: &Event<'_>) -> Result<(), Limit> {
        let is_key = self.open.last().is_some_and(|o| o.mapping && o.expects_key);
        if let Event::Scalar(_, _, anchor, _)
        | Event::SequenceStart(anchor, _)
        | Event::MappingStart(anchor, _) = event
        {
            self.next_anchor = self.next_anchor.max(anchor + 1);
        }
        let leaf = match event {
            Event::Scalar(text, _, anchor, _) => {
                let size = Size {
                    nodes: 1,
                    bytes: text.len(),
                };
                if *anchor > 0 {
                    self.anchors.insert(*anchor, size);
                }
                Some(size)
            }
            Event::Alias(anchor) => Some(
                self.anchors
                    .get(anchor)
                    .copied()
                    .unwrap_or(Size { nodes: 1, bytes: 0 }),
            ),
            Event::DocumentStart(_) => {
                self.document_anchors = self.next_anchor;
                None
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if self.open.len() >= self.budget.limits.depth {
                    return Err(Limit::Depth);
                }
                self.budget.spend(Size { nodes: 1, bytes: 0 })?;
                let start = self.budget.used();
                self.open.push(Open {
                    anchor: *anchor,
                    start,
                    expects_key: true,
                    mapping: matches!(event, Event::MappingStart(..)),
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(done) = self.open.pop()
                    && done.anchor > 0
                {
                    let used = self.budget.used();
                    let size = Size {
                        nodes: used.nodes - done.start.nodes + 1,
                        bytes: used.bytes - done.start.bytes,
                    };
                    self.anchors.insert(done.anchor, size);
                }
                self.child_done();
                None
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentEnd | Event::Nothing => None,
        };
        if let Some(size) = leaf {
            if is_key && size.bytes > self.budget.limits.key_bytes {
                return Err(Limit::KeyBytes);
            }
            self.budget.spend(size)?;
            self.child_done();
        }
        Ok(())
    }

    fn child_done(&mut self) {
        if let Some(o) = self.open.last_mut()
            && o.mapping
        {
            o.expects_key = !o.expects_key;
        }
    }
}

impl<'input> SpannedEventReceiver<'input> for Meter<'_, 'input> {
    fn on_event(&mut self, event: Event<'input>, span: Span) {
        if self.exceeded.is_some() || self.foreign.is_some() {
            return;
        }
        if let Event::Alias(anchor) = event
            && anchor < self.document_anchors
        {
            self.foreign = Some(Position {
                line: span.start.line(),
                column: span.start.col() + 1,
            });
            return;
        }
        match self.check(&event) {
            Ok(()) => self.loader.on_event(event, span),
            Err(limit) => {
                self.exceeded = Some(Exceeded {
                    limit,
                    position: Position {
                        line: span.start.line(),
                        column: span.start.col() + 1,
                    },
                });
            }
        }
    }
}

fn position(node: &MarkedYaml) -> Position {
    Position {
        line: node.span.start.line(),
        column: node.span.start.col() + 1,
    }
}

/// Keep the first [`KEPT`] problems of a file; count the rest.
fn problem(parsed: &mut Parsed, error: impl FnOnce() -> YamlError) {
    if parsed.errors.len() < KEPT {
        parsed.errors.push(error());
    } else {
        parsed.omitted += 1;
    }
}

/// The file's text, to recover how a scalar was written from its span
/// (saphyr's markers count characters, not bytes).
struct Text<'t> {
    text: &'t str,
    /// Then a character index is a byte index (checked once: a file may
    /// hold a hundred thousand numbers).
    ascii: bool,
    /// Byte offset of each character, built once for a file that is not
    /// ASCII (there a character index is not a byte index).
    offsets: OnceLock<Vec<usize>>,
}

impl<'t> Text<'t> {
    fn new(text: &'t str) -> Self {
        Text {
            text,
            ascii: text.is_ascii(),
            offsets: OnceLock::new(),
        }
    }

    fn byte(&self, char_index: usize) -> Option<usize> {
        if self.ascii {
            return (char_index <= self.text.len()).then_some(char_index);
        }
        let offsets = self.offsets.get_or_init(|| {
            let mut offsets: Vec<usize> = self.text.char_indices().map(|(at, _)| at).collect();
            offsets.push(self.text.len());
            offsets
        });
        offsets.get(char_index).copied()
    }

    /// What `node` spans, when that is how `scalar` is written: a node
    /// reached through an alias spans the alias (`*port`), which is not.
    fn scalar(&self, node: &MarkedYaml, scalar: &Scalar) -> Option<Box<str>> {
        let from = self.byte(node.span.start.index())?;
        let to = self.byte(node.span.end.index())?;
        let mut written = self.text.get(from..to)?.trim_end();
        // An anchored scalar's span starts at its anchor (`&wait 05`).
        if let Some(anchored) = written.strip_prefix('&') {
            written = anchored
                .split_once(char::is_whitespace)
                .map_or("", |(_, rest)| rest.trim_start());
        }
        (Scalar::parse_from_cow(written.into()) == *scalar).then(|| written.into())
    }
}

/// Converts `node`, recorded in `map` as `here`.
fn convert(
    node: &MarkedYaml,
    here: u32,
    map: &mut SourceMap,
    parsed: &mut Parsed,
    text: &Text,
) -> Value {
    let at = position(node);
    let fail = |parsed: &mut Parsed, map: &SourceMap, message: String| {
        problem(parsed, || YamlError {
            position: at,
            field: map.path(here),
            message,
            exceeded: None,
        });
        Value::Null
    };
    if let YamlData::Value(
        scalar @ (Scalar::Boolean(_) | Scalar::Integer(_) | Scalar::FloatingPoint(_)),
    ) = &node.data
    {
        let written = text.scalar(node, scalar);
        map.any_text |= written.is_some();
        if let Some(recorded) = map.nodes.get_mut(here as usize) {
            recorded.text = written;
        }
    }
    match &node.data {
        YamlData::Value(scalar) => match scalar {
            Scalar::Null => Value::Null,
            Scalar::Boolean(b) => Value::Bool(*b),
            Scalar::Integer(i) => Value::Number((*i).into()),
            Scalar::FloatingPoint(f) => match Number::from_f64(f.into_inner()) {
                Some(n) => Value::Number(n),
                None => fail(
                    parsed,
                    map,
                    format!("{} is not a finite number", f.into_inner()),
                ),
            },
            Scalar::String(s) => Value::String(s.to_string()),
        },
        YamlData::Representation(text, _, _) => Value::String(text.to_string()),
        YamlData::Sequence(items) => {
            let mut array = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let child = map.push(here, Segment::Index(i), position(item), None);
                array.push(convert(item, child, map, parsed, text));
            }
            Value::Array(array)
        }
        YamlData::Mapping(entries) => {
            let mut object = Map::new();
            for (k, v) in entries {
                let key = match &k.data {
                    YamlData::Value(Scalar::String(s)) => s.to_string(),
                    YamlData::Value(Scalar::Integer(i)) => i.to_string(),
                    YamlData::Value(Scalar::Boolean(b)) => b.to_string(),
                    _ => {
                        problem(parsed, || YamlError {
                            position: position(k),
                            field: map.path(here),
                            message: "a mapping key must be a plain string".into(),
                            exceeded: None,
                        });
                        continue;
                    }
                };
                let child = map.push(
                    here,
                    Segment::Key(key.as_str().into()),
                    position(v),
                    Some(position(k)),
                );
                let value = convert(v, child, map, parsed, text);
                object.insert(key, value);
            }
            Value::Object(object)
        }
        YamlData::Tagged(tag, _) => fail(
            parsed,
            map,
            format!(
                "YAML tags are not used in manifests (found !{})",
                tag.suffix
            ),
        ),
        YamlData::Alias(_) | YamlData::BadValue => {
            fail(parsed, map, "unresolvable YAML value".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize, column: usize) -> Position {
        Position { line, column }
    }

    /// Parse with the default budget: documents and node problems.
    fn parse(text: &str) -> Result<(Vec<Document>, Vec<YamlError>), YamlError> {
        super::parse(text, &mut Budget::default()).map(|p| (p.documents, p.errors))
    }

    #[test]
    fn records_where_every_value_and_key_was_written() {
        let (docs, errors) = parse("a:\n  b: [1, two]\n---\nc: {d: true}\n").expect("valid YAML");
        assert!(errors.is_empty());
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].value, serde_json::json!({"a": {"b": [1, "two"]}}));
        assert_eq!(docs[0].map.value("a.b[1]"), at(2, 10));
        assert_eq!(docs[0].map.key("a.b"), at(2, 3));
        assert_eq!(docs[1].map.value("c.d"), at(4, 8));
        // A field that is not there is located at its nearest ancestor.
        assert_eq!(docs[1].map.value("c.missing"), at(4, 4));
    }

    #[test]
    fn a_path_written_twice_is_located_where_it_was_written_last() {
        // `1` and `'1'` are different YAML keys but the same field.
        let (docs, errors) = parse("x: 0\n1: a\n'1': b\n").expect("valid YAML");
        assert!(errors.is_empty());
        assert_eq!(docs[0].value["1"], "b");
        assert_eq!(docs[0].map.value("1"), at(3, 6));
        assert_eq!(docs[0].map.key("1"), at(3, 1));
        assert_eq!(docs[0].map.value("x"), at(1, 4));
        assert_eq!(docs[0].map.value(""), at(1, 1));
        // An empty key names the same field as the document itself.
        let (docs, _) = parse("a: 1\n'': x\n").expect("valid YAML");
        assert_eq!(docs[0].map.value(""), at(2, 5));
        assert_eq!(docs[0].map.key(""), at(2, 1));
        assert_eq!(docs[0].map.value("a"), at(1, 4));
    }

    #[test]
    fn anchors_resolve_but_cannot_explode() {
        let (docs, _) = parse("base: &b {x: 1}\ncopy: *b\n").expect("valid YAML");
        assert_eq!(docs[0].value["copy"], serde_json::json!({"x": 1}));
        let mut laughs = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            laughs.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let e = parse(&laughs).expect_err("billion laughs is refused");
        assert!(e.message.contains("alias"), "{}", e.message);
    }

    #[test]
    fn anchors_belong_to_their_document() {
        let e = parse("a: &x 1\n---\nb: *x\n").expect_err("alias across documents");
        assert_eq!(e.position, at(3, 4), "{}", e.message);
        let (docs, _) = parse("a: &x 1\nb: *x\n---\nc: &y 2\nd: *y\n").expect("valid YAML");
        assert_eq!(docs[1].value["d"], 2);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!("a: {}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse(&deep).is_err());
    }

    #[test]
    fn duplicate_keys_tags_and_odd_keys_are_reported_in_place() {
        assert!(parse("a: 1\na: 2\n").is_err());
        let (_, errors) = parse("a: !secret x\n? [k]\n: v\n").expect("well-formed YAML");
        let found: Vec<_> = errors
            .iter()
            .map(|e| (e.position, e.message.as_str()))
            .collect();
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].1.contains("tags"));
        assert!(found[1].1.contains("plain string"));
    }
}
