//! YAML text -> JSON values plus a map from field paths to source positions.
//!
//! Checking happens on plain JSON values (the JSON Schema pass, then serde),
//! and every later rule names the field it is about by its path. The
//! [`SourceMap`] built here turns such a path back into `line:col`, so every
//! stage can report a located error without carrying spans in the types.

use std::collections::HashMap;

use saphyr::{MarkedYaml, Scalar, YamlData};
use serde_json::{Map, Number, Value};

use crate::diag::Position;

/// Positions of the nodes of one document, by field path
/// (`spec.addresses[0].address`; the document root is `""`).
#[derive(Debug, Default, Clone)]
pub struct SourceMap {
    values: HashMap<String, Position>,
    keys: HashMap<String, Position>,
}

impl SourceMap {
    /// Position of the value at `path`, or of its nearest ancestor that exists
    /// (a missing field is reported where its parent mapping starts).
    pub fn value(&self, path: &str) -> Position {
        let mut path = path;
        loop {
            if let Some(p) = self.values.get(path) {
                return *p;
            }
            match parent(path) {
                Some(up) => path = up,
                None => return self.values.get("").copied().unwrap_or_default(),
            }
        }
    }

    /// Position of the key naming the field at `path` (for unknown fields),
    /// falling back to the value position.
    pub fn key(&self, path: &str) -> Position {
        self.keys
            .get(path)
            .copied()
            .unwrap_or_else(|| self.value(path))
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
        let value = convert(&node, String::new(), &mut map, &mut errors);
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

fn convert(
    node: &MarkedYaml,
    path: String,
    map: &mut SourceMap,
    errors: &mut Vec<YamlError>,
) -> Value {
    let here = position(node);
    map.values.insert(path.clone(), here);
    let mut fail = |message: String| {
        errors.push(YamlError {
            position: here,
            field: path.clone(),
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
                None => fail(format!("{} is not a finite number", f.into_inner())),
            },
            Scalar::String(s) => Value::String(s.to_string()),
        },
        YamlData::Representation(text, _, _) => Value::String(text.to_string()),
        YamlData::Sequence(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| convert(item, join_index(&path, i), map, errors))
                .collect(),
        ),
        YamlData::Mapping(entries) => {
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
                let child = join_key(&path, &key);
                map.keys.insert(child.clone(), position(k));
                let value = convert(v, child, map, errors);
                object.insert(key, value);
            }
            Value::Object(object)
        }
        YamlData::Tagged(tag, _) => fail(format!(
            "YAML tags are not used in manifests (found !{})",
            tag.suffix
        )),
        YamlData::Alias(_) | YamlData::BadValue => fail("unresolvable YAML value".into()),
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
