//! YAML text -> JSON values plus a map from field paths to source positions.
//!
//! Checking happens on plain JSON values (the JSON Schema pass, then serde),
//! and every later rule names the field it is about by its path. The
//! [`SourceMap`] built here turns such a path back into `line:col`, so every
//! stage can report a located error without carrying spans in the types.

use std::fmt::Write as _;
use std::sync::OnceLock;

use saphyr::{MarkedYaml, Scalar, YamlData};
use serde_json::{Map, Number, Value};

use crate::diag::Position;

/// Positions of the nodes of one document, by field path
/// (`spec.addresses[0].address`; the document root is `""`).
///
/// Only reports look positions up, so recording is kept cheap (a path and a
/// position pushed per node) and the lookup order is built on the first
/// lookup: a valid manifest never pays for it.
#[derive(Debug, Default, Clone)]
pub struct SourceMap {
    /// Every value node, in document order.
    values: Vec<(String, Position)>,
    /// Every mapping key, by the path of the field it names.
    keys: Vec<(String, Position)>,
    /// Indices into `values` and `keys`, each sorted by path.
    sorted: OnceLock<(Vec<usize>, Vec<usize>)>,
}

impl SourceMap {
    fn sorted(&self) -> &(Vec<usize>, Vec<usize>) {
        self.sorted
            .get_or_init(|| (by_path(&self.values), by_path(&self.keys)))
    }

    fn value_at(&self, path: &str) -> Option<Position> {
        if path.is_empty() {
            // The document itself, which every object records as its
            // origin: found without building the index.
            return last_empty(&self.values);
        }
        find(&self.values, &self.sorted().0, path)
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

    /// Position of the key naming the field at `path` (for unknown fields),
    /// falling back to the value position.
    pub fn key(&self, path: &str) -> Position {
        let key = if path.is_empty() {
            last_empty(&self.keys)
        } else {
            find(&self.keys, &self.sorted().1, path)
        };
        key.unwrap_or_else(|| self.value(path))
    }
}

/// The position recorded last for the path `""`.
fn last_empty(entries: &[(String, Position)]) -> Option<Position> {
    entries
        .iter()
        .rev()
        .find(|(path, _)| path.is_empty())
        .map(|&(_, position)| position)
}

/// The indices of `entries`, sorted by path; equal paths stay in the order
/// they were recorded.
fn by_path(entries: &[(String, Position)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by(|&a, &b| entries[a].0.cmp(&entries[b].0));
    order
}

/// The position recorded last for `path`.
fn find(entries: &[(String, Position)], order: &[usize], path: &str) -> Option<Position> {
    let end = order.partition_point(|&i| entries[i].0.as_str() <= path);
    let &last = order[..end].last()?;
    (entries[last].0 == path).then_some(entries[last].1)
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
}

/// Anchors may be reused, but a file may not expand into more nodes than this;
/// it stops "billion laughs" documents long before memory runs out.
const ALIAS_EXPANSION_LIMIT: usize = 100_000;

/// Parse every document of a YAML stream. A syntax error fails the whole file
/// (what follows it cannot be trusted); problems inside well-formed documents
/// (tags, non-string keys, non-finite numbers) are collected per node.
pub fn parse(text: &str) -> Result<(Vec<Document>, Vec<YamlError>), YamlError> {
    let mut parser = saphyr_parser::Parser::new_from_str(text);
    let mut loader = saphyr::YamlLoader::<MarkedYaml>::default();
    loader.alias_limit(ALIAS_EXPANSION_LIMIT);
    let scan = parser.load(&mut loader, true);
    if let Some(e) = scan.err().or_else(|| loader.error().cloned()) {
        return Err(YamlError {
            position: Position {
                line: e.marker().line(),
                column: e.marker().col() + 1,
            },
            field: String::new(),
            message: format!("invalid YAML: {}", e.info()),
        });
    }
    let mut documents = Vec::new();
    let mut errors = Vec::new();
    for node in loader.into_documents() {
        if matches!(node.data, YamlData::Value(Scalar::Null)) {
            // An empty document, e.g. after a trailing `---`.
            continue;
        }
        let mut map = SourceMap::default();
        let value = convert(&node, &mut String::new(), &mut map, &mut errors);
        documents.push(Document { value, map });
    }
    Ok((documents, errors))
}

fn position(node: &MarkedYaml) -> Position {
    Position {
        line: node.span.start.line(),
        column: node.span.start.col() + 1,
    }
}

/// Converts `node`, found at `path`. `path` is one buffer for the whole
/// walk: each child's segment is appended for its conversion and cut off
/// again after.
fn convert(
    node: &MarkedYaml,
    path: &mut String,
    map: &mut SourceMap,
    errors: &mut Vec<YamlError>,
) -> Value {
    let here = position(node);
    map.values.push((path.clone(), here));
    let fail = |errors: &mut Vec<YamlError>, path: &str, message: String| {
        errors.push(YamlError {
            position: here,
            field: path.to_owned(),
            message,
        });
        Value::Null
    };
    match &node.data {
        YamlData::Value(scalar) => match scalar {
            Scalar::Null => Value::Null,
            Scalar::Boolean(b) => Value::Bool(*b),
            Scalar::Integer(i) => Value::Number((*i).into()),
            Scalar::FloatingPoint(f) => match Number::from_f64(f.into_inner()) {
                Some(n) => Value::Number(n),
                None => fail(
                    errors,
                    path,
                    format!("{} is not a finite number", f.into_inner()),
                ),
            },
            Scalar::String(s) => Value::String(s.to_string()),
        },
        YamlData::Representation(text, _, _) => Value::String(text.to_string()),
        YamlData::Sequence(items) => {
            let len = path.len();
            let mut array = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                // Writing to a String cannot fail.
                let _ = write!(path, "[{i}]");
                array.push(convert(item, path, map, errors));
                path.truncate(len);
            }
            Value::Array(array)
        }
        YamlData::Mapping(entries) => {
            let len = path.len();
            let mut object = Map::new();
            for (k, v) in entries {
                let key = match &k.data {
                    YamlData::Value(Scalar::String(s)) => s.to_string(),
                    YamlData::Value(Scalar::Integer(i)) => i.to_string(),
                    YamlData::Value(Scalar::Boolean(b)) => b.to_string(),
                    _ => {
                        errors.push(YamlError {
                            position: position(k),
                            field: path.clone(),
                            message: "a mapping key must be a plain string".into(),
                        });
                        continue;
                    }
                };
                if len > 0 {
                    path.push('.');
                }
                path.push_str(&key);
                map.keys.push((path.clone(), position(k)));
                let value = convert(v, path, map, errors);
                path.truncate(len);
                object.insert(key, value);
            }
            Value::Object(object)
        }
        YamlData::Tagged(tag, _) => fail(
            errors,
            path,
            format!(
                "YAML tags are not used in manifests (found !{})",
                tag.suffix
            ),
        ),
        YamlData::Alias(_) | YamlData::BadValue => {
            fail(errors, path, "unresolvable YAML value".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize, column: usize) -> Position {
        Position { line, column }
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
