//! JSON Schemas of the three kinds, and the shape check that uses them.
//!
//! The schema an editor validates with (`schemas/json/*.json`) is the very one
//! the loader enforces, so the two can never disagree. The schema pass reports
//! every shape problem of a document at once (unknown fields, wrong types,
//! missing fields), which serde alone cannot: it stops at the first.

use std::collections::HashSet;
use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::paths::LocationSegment;
use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

use crate::diag::KEPT;
use crate::raw::{self, API_VERSION};
use crate::yaml::{join_index, join_key};

/// The kinds of manifest document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Host,
    Migration,
    Phase,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Host, Kind::Migration, Kind::Phase];

    /// The value of `kind:` in a document.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Host => "Host",
            Kind::Migration => "Migration",
            Kind::Phase => "Phase",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// File name of the committed schema (`schemas/json/host.json`).
    pub fn schema_file(self) -> String {
        format!("{}.json", self.name().to_lowercase())
    }
}

/// The draft 2020-12 JSON Schema of one kind.
pub fn json_schema(kind: Kind) -> Value {
    let generator = SchemaSettings::draft2020_12().into_generator();
    let mut schema = match kind {
        Kind::Host => generator.into_root_schema_for::<raw::HostDocument>(),
        Kind::Migration => generator.into_root_schema_for::<raw::MigrationDocument>(),
        Kind::Phase => generator.into_root_schema_for::<raw::PhaseDocument>(),
    }
    .to_value();
    drop_null(&mut schema);
    // The Rust types hold these as strings; the schema pins their one valid value.
    if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert(
            "apiVersion".into(),
            json!({"const": API_VERSION, "description": "Always mailctl/v1alpha1."}),
        );
        props.insert("kind".into(), json!({"const": kind.name()}));
    }
    if let Some(root) = schema.as_object_mut() {
        root.insert(
            "$id".into(),
            json!(format!(
                "https://mailctl.invalid/schemas/{}",
                kind.schema_file()
            )),
        );
    }
    schema
}

/// Optional fields are simply left out of a manifest; schemars also allows an
/// explicit `null` for them, which would make every error on such a field an
/// opaque "not valid under anyOf". Rewrite those to the plain schema.
fn drop_null(node: &mut Value) {
    match node {
        Value::Object(map) => {
            let is_null = |s: &Value| s.get("type").and_then(Value::as_str) == Some("null");
            if let Some(Value::Array(choices)) = map.get("anyOf")
                && choices.len() == 2
                && choices.iter().any(is_null)
            {
                let kept = choices.iter().find(|c| !is_null(c)).cloned();
                map.remove("anyOf");
                if let Some(Value::Object(kept)) = kept {
                    for (k, v) in kept {
                        map.entry(k).or_insert(v);
                    }
                }
            }
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    map.insert("type".into(), only);
                }
            }
            map.values_mut().for_each(drop_null);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_null),
        _ => {}
    }
}

/// A problem with the shape of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError {
    /// Dotted path of the field.
    pub field: String,
    /// Whether the position is the key (unknown field) rather than the value.
    pub at_key: bool,
    pub message: String,
    pub hint: Option<String>,
    /// For an unknown field: the allowed field it most likely meant.
    suggestion: Option<String>,
    /// For a missing field: its name.
    missing: Option<String>,
}

impl ShapeError {
    /// An unknown field can be dropped to go on checking the rest of the document.
    pub fn is_unknown_field(&self) -> bool {
        self.at_key
    }
}

/// The schema of a kind, generated once per process.
fn cached_schema(kind: Kind) -> &'static Value {
    static SCHEMAS: OnceLock<[Value; 3]> = OnceLock::new();
    let all = SCHEMAS.get_or_init(|| Kind::ALL.map(json_schema));
    &all[kind as usize]
}

fn validator(kind: Kind) -> &'static jsonschema::Validator {
    static VALIDATORS: [OnceLock<jsonschema::Validator>; 3] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    VALIDATORS[kind as usize].get_or_init(|| {
        jsonschema::options()
            .should_validate_formats(false)
            .build(cached_schema(kind))
            .unwrap_or_else(|e| {
                panic!("the generated {} schema does not compile: {e}", kind.name())
            })
    })
}

/// Whether a document has the shape of its kind.
pub fn shape_ok(kind: Kind, document: &Value) -> bool {
    validator(kind).is_valid(document)
}

/// Check a document against its kind's schema: the first [`KEPT`] problems,
/// and how many more there were (a document can hold one per node).
pub fn check_shape(kind: Kind, document: &Value) -> (Vec<ShapeError>, usize) {
    let mut out = Vec::new();
    let mut omitted = 0usize;
    for error in validator(kind).iter_errors(document) {
        if out.len() >= KEPT {
            omitted += 1;
            continue;
        }
        let mut field = String::new();
        for segment in error.instance_path().segments() {
            field = match segment {
                LocationSegment::Property(p) => join_key(&field, &p),
                LocationSegment::Index(i) => join_index(&field, i),
            };
        }
        // apiVersion and kind get their own, more helpful, messages from the loader.
        if field == "apiVersion" || field == "kind" {
            continue;
        }
        // One problem per unknown field, so each is located and all can be
        // dropped to check the rest of the document.
        if let ValidationErrorKind::AdditionalProperties { unexpected } = error.kind() {
            for name in unexpected {
                if out.len() >= KEPT {
                    omitted += 1;
                } else {
                    out.push(unknown_field(document, &field, name));
                }
            }
            continue;
        }
        out.push(describe(
            error.kind(),
            || error.to_string(),
            field,
            document,
        ));
    }
    // A misspelt required field shows up twice: as unknown (`interfase`) and as
    // missing (`interface`). The first, with its "did you mean", says it all.
    let misspelt: HashSet<String> = out
        .iter()
        .filter_map(|e| {
            e.suggestion
                .as_ref()
                .map(|s| join_key(parent_of(&e.field), s))
        })
        .collect();
    out.retain(|e| {
        !e.missing
            .as_ref()
            .is_some_and(|m| misspelt.contains(&join_key(&e.field, m)))
    });
    (out, omitted)
}

/// A message keeps this many characters of each end of a long quoted value.
const QUOTED: usize = 60;

/// `text` with its middle cut out when it is long: a message quotes a value
/// to show which one is meant (the schema's own messages start with it and
/// end with the explanation), and a value can be megabytes long.
fn brief(text: String) -> String {
    let chars = text.chars().count();
    if chars <= 3 * QUOTED {
        return text;
    }
    let head: String = text.chars().take(QUOTED).collect();
    let tail: String = text.chars().skip(chars - QUOTED).collect();
    format!("{head} ... {tail}")
}

fn parent_of(field: &str) -> &str {
    field.rfind('.').map_or("", |cut| &field[..cut])
}

/// The value at a dotted path, for messages that quote it.
fn lookup<'a>(document: &'a Value, field: &str) -> Option<&'a Value> {
    let mut value = document;
    for part in field.split('.').filter(|p| !p.is_empty()) {
        let (name, indexes) = part
            .split_once('[')
            .map_or((part, ""), |(n, rest)| (n, rest));
        if !name.is_empty() {
            value = value.get(name)?;
        }
        for index in indexes.split('[').filter(|s| !s.is_empty()) {
            value = value.get(index.trim_end_matches(']').parse::<usize>().ok()?)?;
        }
    }
    Some(value)
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing (null)",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn wanted(kind: &TypeKind) -> String {
    let one = |t: &jsonschema::JsonType| match t.to_string().as_str() {
        "object" => "a mapping".to_owned(),
        "array" => "a list".to_owned(),
        "integer" => "an integer".to_owned(),
        other => format!("a {other}"),
    };
    match kind {
        TypeKind::Single(t) => one(t),
        TypeKind::Multiple(ts) => ts
            .iter()
            .filter(|t| t.to_string() != "null")
            .map(|t| one(&t))
            .collect::<Vec<_>>()
            .join(" or "),
    }
}

/// Fields a mapping at `field` may hold, from the document kind's schema.
fn allowed_fields(document: &Value, field: &str) -> Vec<String> {
    let kind = document
        .get("kind")
        .and_then(Value::as_str)
        .and_then(Kind::from_name);
    let Some(kind) = kind else { return Vec::new() };
    let root = cached_schema(kind);
    let resolve = |mut n: &'static Value| -> &'static Value {
        // Follow `$ref` and the `anyOf: [{$ref}, {type: null}]` schemars emits for Option.
        for _ in 0..8 {
            if let Some(r) = n.get("$ref").and_then(Value::as_str) {
                let name = r.trim_start_matches("#/$defs/");
                match root.get("$defs").and_then(|d| d.get(name)) {
                    Some(next) => n = next,
                    None => break,
                }
            } else if let Some(first) = n
                .get("anyOf")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().find(|s| s.get("type") != Some(&json!("null"))))
            {
                n = first;
            } else {
                break;
            }
        }
        n
    };
    let mut node = resolve(root);
    for part in field.split('.').filter(|p| !p.is_empty()) {
        let (name, rest) = part
            .split_once('[')
            .map_or((part, None), |(n, r)| (n, Some(r)));
        if !name.is_empty() {
            let props = node.get("properties").and_then(|p| p.get(name));
            let extra = node.get("additionalProperties").filter(|v| v.is_object());
            match props.or(extra) {
                Some(next) => node = resolve(next),
                None => return Vec::new(),
            }
        }
        if let Some(rest) = rest {
            for _ in rest.split('[') {
                match node.get("items") {
                    Some(next) => node = resolve(next),
                    None => return Vec::new(),
                }
            }
        }
    }
    node.get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// An unknown field `name` in the mapping at `field`, with the allowed field it most likely meant.
fn unknown_field(document: &Value, field: &str, name: &str) -> ShapeError {
    let allowed = allowed_fields(document, field);
    let close = allowed
        .iter()
        .filter(|a| strsim::damerau_levenshtein(a, name) <= 2)
        .min_by_key(|a| strsim::damerau_levenshtein(a, name));
    let hint = match close {
        Some(c) => Some(format!("did you mean `{c}`?")),
        None if !allowed.is_empty() => Some(format!("allowed here: {}", allowed.join(", "))),
        None => None,
    };
    ShapeError {
        field: join_key(field, name),
        at_key: true,
        message: format!("unknown field `{name}`"),
        hint,
        suggestion: close.cloned(),
        missing: None,
    }
}

fn describe(
    kind: &ValidationErrorKind,
    text: impl FnOnce() -> String,
    field: String,
    document: &Value,
) -> ShapeError {
    let value = lookup(document, &field);
    let plain = |message: String| ShapeError {
        field: field.clone(),
        at_key: false,
        message,
        hint: None,
        suggestion: None,
        missing: None,
    };
    match kind {
        ValidationErrorKind::AdditionalProperties { unexpected } => unknown_field(
            document,
            &field,
            unexpected.first().map_or("", String::as_str),
        ),
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().unwrap_or_default();
            ShapeError {
                field: field.clone(),
                at_key: false,
                message: format!("missing required field `{name}`"),
                hint: None,
                suggestion: None,
                missing: Some(name.to_owned()),
            }
        }
        ValidationErrorKind::Type { kind } => plain(format!(
            "expected {}, found {}",
            wanted(kind),
            value.map_or("nothing", type_name)
        )),
        ValidationErrorKind::Enum { options } => {
            let choices: Vec<String> = options
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            let found = brief(value.map(Value::to_string).unwrap_or_default());
            let mut error = plain(format!("{found} is not one of: {}", choices.join(", ")));
            if let Some(s) = value.and_then(Value::as_str) {
                error.hint = choices
                    .iter()
                    .find(|c| strsim::damerau_levenshtein(c, s) <= 2)
                    .map(|c| format!("did you mean `{c}`?"));
            }
            error
        }
        ValidationErrorKind::Constant { expected_value } => plain(format!(
            "must be {expected_value}, found {}",
            brief(value.map(Value::to_string).unwrap_or_default())
        )),
        _ => plain(brief(text())),
    }
}
