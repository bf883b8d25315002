//! Raw documents -> the validated model, in one place.
//!
//! Four passes, each reporting everything it finds:
//! 1. YAML: syntax (a syntax error ends that file; other files go on);
//! 2. shape: the kind's JSON Schema (unknown fields, types, missing fields);
//! 3. values: CIDRs, ports, paths, durations, names, duplicates — per document;
//! 4. references across documents: phases, hosts, jobs, exclusive service IPs,
//!    and the point of no return.
//!
//! A document with shape errors skips pass 3 (its values are not trustworthy),
//! but the other documents are still checked.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use ipnet::IpNet;
use serde_json::Value;

use crate::budget::{Budget, Limit};
use crate::diag::{Diagnostic, Diagnostics, Origin, closest, file_origin, suggest};
use crate::model::{self, ManifestDuration};
use crate::raw::{self, API_VERSION};
use crate::schema::{Kind, ShapeError, check_shape, shape_ok};
use crate::yaml::{self, SourceMap, join_index, join_key};

/// One manifest file's text.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

/// Reads the content behind a file's `source:` field. Validation itself does
/// no I/O; the caller decides how (and whether) such content is read.
pub trait ContentReader {
    /// `manifest` is the manifest file naming `source` (relative to its folder).
    fn read(&self, manifest: &Path, source: &str) -> Result<String, String>;
}

/// Validate a set of manifest files into one [`model::ManifestSet`].
pub fn validate(
    sources: &[Source],
    content: &dyn ContentReader,
) -> Result<model::ManifestSet, Diagnostics> {
    let mut diags = Diagnostics::default();
    let mut docs = Vec::new();
    let mut budget = Budget::default();
    for source in sources {
        if let Err(Spent) = parse_file(source, content, &mut budget, &mut docs, &mut diags) {
            // What was not read would only show up as missing references.
            return Err(diags.sorted());
        }
    }
    let mut set = cross_check(&docs, &mut diags);
    set.warnings.sort_by(|a, b| {
        (&a.origin.file, a.origin.position, &a.field).cmp(&(
            &b.origin.file,
            b.origin.position,
            &b.field,
        ))
    });
    if diags.is_empty() {
        Ok(set)
    } else {
        Err(diags.sorted())
    }
}

/// A document that passed its own checks, with what is needed to locate
/// cross-document problems in it.
struct Checked {
    file: Arc<Path>,
    map: SourceMap,
    object: Object,
    /// No value errors: item indices match the file, deep cross checks apply.
    /// Documents with errors still count for "does this name exist" checks,
    /// so one mistake does not cascade into a page of follow-up errors.
    clean: bool,
}

enum Object {
    Host(model::Host),
    Migration(model::Migration),
    Phase(model::Phase),
    /// A document whose YAML or shape is broken (already reported), as far
    /// as it names itself: references to it are not reported as missing.
    Named(Named),
}

/// What a broken document says it is.
struct Named {
    /// `None`: the document is too broken to tell (a syntax error before
    /// its name), so it may be anything a reference looks for.
    kind: Option<Kind>,
    name: String,
    /// The migration of a Phase.
    migration: String,
}

impl Named {
    fn anonymous() -> Named {
        Named {
            kind: None,
            name: String::new(),
            migration: String::new(),
        }
    }

    /// `kind`, `metadata.name` and `metadata.migration` of a document, when
    /// it has at least a kind and a name.
    fn of(value: &Value) -> Option<Named> {
        // A misspelt kind (`Phse`) may be any kind of that name.
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .and_then(Kind::from_name);
        let metadata = value.get("metadata")?;
        let text = |field: &str| {
            metadata
                .get(field)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Some(Named {
            kind,
            name: text("name")?,
            migration: text("migration").unwrap_or_default(),
        })
    }
}

/// The documents of a file with a YAML syntax error at `line`, as far as
/// they name themselves (the file is not checked further): each document
/// read alone, the broken one up to the line of the error, or only the part
/// before its `spec:`. A broken document that names nothing is
/// [`Named::anonymous`]: what is missing may be in it.
fn names_in_broken_file(text: &str, line: usize) -> Vec<Named> {
    // Each document's text, and whether the error is in it.
    let mut chunks: Vec<(String, bool)> = vec![(String::new(), false)];
    for (i, row) in text.lines().enumerate() {
        if row == "---" || row.starts_with("--- ") {
            chunks.push((String::new(), false));
            continue;
        }
        let Some((chunk, broken)) = chunks.last_mut() else {
            continue;
        };
        if i + 1 == line {
            *broken = true;
        }
        // The broken document is read up to the error.
        if !*broken {
            chunk.push_str(row);
            chunk.push('\n');
        }
    }
    // An error found at the end of the text (an unclosed quote) is in the last document.
    if !chunks.iter().any(|(_, broken)| *broken)
        && let Some((_, broken)) = chunks.last_mut()
    {
        *broken = true;
    }
    let named = |text: &str| {
        let parsed = yaml::parse(text, &mut Budget::default()).ok()?;
        Named::of(&parsed.documents.first()?.value)
    };
    chunks
        .iter()
        .filter_map(|(chunk, broken)| {
            let found = named(chunk).or_else(|| {
                let header = chunk.split("\nspec:").next().unwrap_or_default();
                named(header)
            });
            match found {
                None if *broken => Some(Named::anonymous()),
                found => found,
            }
        })
        .collect()
}

/// The load's budget is spent: nothing more is read.
struct Spent;

fn parse_file(
    source: &Source,
    content: &dyn ContentReader,
    budget: &mut Budget,
    docs: &mut Vec<Checked>,
    diags: &mut Diagnostics,
) -> Result<(), Spent> {
    let file: Arc<Path> = Arc::from(source.path.as_path());
    let at = |position| Origin {
        file: file.clone(),
        position,
    };
    if !budget.take_text(source.text.len()) {
        let (message, hint) = Limit::TextBytes.describe(&budget.limits);
        diags.push(Diagnostic::new(file_origin(&source.path), "", message).with_hint(hint));
        return Err(Spent);
    }
    let parsed = match yaml::parse(&source.text, budget) {
        Ok(parsed) => parsed,
        Err(yaml::YamlError {
            exceeded: Some(limit),
            position,
            field,
            message,
        }) => {
            let (_, hint) = limit.describe(&budget.limits);
            diags.push(Diagnostic::new(at(position), field, message).with_hint(hint));
            return if limit.ends_load() {
                Err(Spent)
            } else {
                Ok(())
            };
        }
        Err(e) => {
            for named in names_in_broken_file(&source.text, e.position.line) {
                docs.push(Checked {
                    file: file.clone(),
                    map: SourceMap::default(),
                    object: Object::Named(named),
                    clean: false,
                });
            }
            let hint = if e.message.contains("alias") || e.message.contains("recursion") {
                "the document nests or expands too deeply to be a manifest"
            } else if e.message.contains("duplicate") {
                "each key may appear once in a mapping"
            } else {
                "check the indentation and quoting around this line"
            };
            diags.push(Diagnostic::new(at(e.position), e.field, e.message).with_hint(hint));
            return Ok(());
        }
    };
    let yaml::Parsed {
        documents,
        errors,
        omitted,
    } = parsed;
    for e in errors {
        diags.push(Diagnostic::new(at(e.position), e.field, e.message));
    }
    diags.omit(omitted);
    if documents.is_empty() {
        diags.push(Diagnostic::new(
            file_origin(&source.path),
            "",
            "the file holds no manifest document",
        ));
    }
    for document in documents {
        let mut check = Checker {
            file: file.clone(),
            map: &document.map,
            diags,
            manifest: &source.path,
            content,
        };
        let before = check.diags.len();
        let checked = check.document(&document.value);
        let clean = checked.is_some() && diags.len() == before;
        if let Some(object) = checked.or_else(|| Named::of(&document.value).map(Object::Named)) {
            docs.push(Checked {
                file: file.clone(),
                map: document.map,
                object,
                clean,
            });
        }
    }
    Ok(())
}

/// Checks the values of one document.
struct Checker<'a> {
    file: Arc<Path>,
    map: &'a SourceMap,
    diags: &'a mut Diagnostics,
    manifest: &'a Path,
    content: &'a dyn ContentReader,
}

impl Checker<'_> {
    fn origin(&self, field: &str) -> Origin {
        Origin {
            file: self.file.clone(),
            position: self.map.value(field),
        }
    }

    fn error(&mut self, field: &str, message: impl Into<String>) {
        let d = Diagnostic::new(self.origin(field), field, message);
        self.diags.push(d);
    }

    fn error_hint(&mut self, field: &str, message: impl Into<String>, hint: impl Into<String>) {
        let d = Diagnostic::new(self.origin(field), field, message).with_hint(hint);
        self.diags.push(d);
    }

    fn document(&mut self, value: &Value) -> Option<Object> {
        let Some(object) = value.as_object() else {
            self.error(
                "",
                "a manifest document must be a mapping with apiVersion, kind, metadata and spec",
            );
            return None;
        };
        match object.get("apiVersion").and_then(Value::as_str) {
            Some(API_VERSION) => {}
            Some(other) => self.error_hint(
                "apiVersion",
                format!("unsupported apiVersion \"{other}\""),
                format!("this mailctl reads apiVersion: {API_VERSION}"),
            ),
            None => self.error(
                "apiVersion",
                format!("missing apiVersion (use {API_VERSION})"),
            ),
        }
        let kind = match object.get("kind").and_then(Value::as_str) {
            Some(name) => match Kind::from_name(name) {
                Some(kind) => kind,
                None => {
                    self.error_hint(
                        "kind",
                        format!("unknown kind \"{name}\""),
                        "kind is one of Host, Migration, Phase",
                    );
                    return None;
                }
            },
            None => {
                self.error_hint(
                    "kind",
                    "missing kind",
                    "kind is one of Host, Migration, Phase",
                );
                return None;
            }
        };
        // Unknown fields are reported, then dropped so the values of the rest of
        // the document are still checked; other shape errors end the document.
        let (shape, omitted) = check_shape(kind, value);
        // Problems not kept cannot be pruned: the document ends with them.
        let recoverable = omitted == 0 && shape.iter().all(ShapeError::is_unknown_field);
        let mut pruned = None;
        if !shape.is_empty() && recoverable {
            let mut copy = value.clone();
            for e in &shape {
                remove_field(&mut copy, &e.field);
            }
            if shape_ok(kind, &copy) {
                pruned = Some(copy);
            }
        }
        self.diags.omit(omitted);
        let shape_fine = shape.is_empty() || pruned.is_some();
        for e in shape {
            let position = if e.at_key {
                self.map.key(&e.field)
            } else {
                self.map.value(&e.field)
            };
            let mut d = Diagnostic::new(
                Origin {
                    file: self.file.clone(),
                    position,
                },
                e.field,
                e.message,
            );
            d.hint = e.hint;
            self.diags.push(d);
        }
        if !shape_fine {
            return None;
        }
        let value = pruned.as_ref().unwrap_or(value);
        let object = match kind {
            Kind::Host => {
                let doc: raw::HostDocument = self.deserialize(value)?;
                self.object_name("metadata.name", &doc.metadata.name);
                let spec = self.host_spec("spec", &doc.spec);
                Object::Host(model::Host {
                    name: doc.metadata.name,
                    spec,
                    origin: self.origin(""),
                })
            }
            Kind::Migration => {
                let doc: raw::MigrationDocument = self.deserialize(value)?;
                Object::Migration(self.migration(doc))
            }
            Kind::Phase => {
                let doc: raw::PhaseDocument = self.deserialize(value)?;
                Object::Phase(self.phase(doc))
            }
        };
        Some(object)
    }

    fn deserialize<T: serde::de::DeserializeOwned>(&mut self, value: &Value) -> Option<T> {
        match serde_path_to_error::deserialize(value) {
            Ok(v) => Some(v),
            Err(e) => {
                let field = e.path().to_string();
                let field = if field == "." { String::new() } else { field };
                self.error(&field, e.into_inner().to_string());
                None
            }
        }
    }

    /// Names of hosts, migrations and phases: they appear in URLs, paths and logs.
    fn object_name(&mut self, field: &str, name: &str) {
        let ok = !name.is_empty()
            && name.len() <= 63
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            self.error_hint(
                field,
                format!("\"{name}\" is not a valid name"),
                "use lower-case letters, digits and '-', starting with a letter (at most 63)",
            );
        }
    }

    /// Names of services, jobs, tasks, rules and gates.
    fn item_name(&mut self, field: &str, name: &str) {
        let ok = !name.is_empty()
            && name.len() <= 128
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
        if !ok {
            self.error_hint(
                field,
                format!("\"{name}\" is not a valid name"),
                "use letters, digits, '-', '_', '.' and '@', starting with a letter or digit",
            );
        }
    }

    /// Report every name that repeats an earlier one in the same list.
    fn unique<'n>(
        &mut self,
        list: &str,
        what: &str,
        names: impl Iterator<Item = (usize, &'n str)>,
        sub: &str,
    ) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, name) in names {
            if let Some(first) = seen.insert(name, i) {
                let item = join_index(list, i);
                let field = if sub.is_empty() {
                    item
                } else {
                    join_key(&item, sub)
                };
                let first_at = self.map.value(&join_index(list, first));
                self.error_hint(
                    &field,
                    format!("duplicate {what} \"{name}\""),
                    format!("first declared at line {}", first_at.line),
                );
                seen.insert(name, first);
            }
        }
    }

    /// An absolute, normalized path (no `..`, no `.`), as the agent will act on it.
    fn absolute_path(&mut self, field: &str, text: &str) -> Option<PathBuf> {
        let path = Path::new(text);
        if !path.is_absolute() {
            self.error_hint(
                field,
                format!("\"{text}\" is not an absolute path"),
                "write the full path, starting with /",
            );
            return None;
        }
        if text.contains('\0')
            || path
                .components()
                .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        {
            self.error_hint(
                field,
                format!("\"{text}\" contains `.` or `..` components"),
                "write the path without . or .. so it names one place",
            );
            return None;
        }
        Some(path.to_path_buf())
    }

    fn duration(&mut self, field: &str, text: &str) -> Option<ManifestDuration> {
        match text.parse() {
            Ok(d) => Some(d),
            Err(message) => {
                self.error(field, message);
                None
            }
        }
    }

    fn cidr(&mut self, field: &str, text: &str) -> Option<IpNet> {
        match text.parse::<IpNet>() {
            Ok(net) => Some(net),
            Err(_) if text.parse::<IpAddr>().is_ok() => {
                self.error_hint(
                    field,
                    format!("\"{text}\" has no prefix length"),
                    format!("write it as a CIDR, e.g. {text}/24 or {text}/32"),
                );
                None
            }
            Err(_) => {
                self.error_hint(
                    field,
                    format!("\"{text}\" is not a valid IPv4 or IPv6 CIDR"),
                    "write it like 192.0.2.25/24 or 2001:db8::25/64",
                );
                None
            }
        }
    }

    fn port(&mut self, field: &str, port: i64) -> Option<u16> {
        match u16::try_from(port) {
            Ok(p) if p > 0 => Some(p),
            _ => {
                self.error(
                    field,
                    format!("port {port} is out of range; a port is 1-65535"),
                );
                None
            }
        }
    }

    fn argv(&mut self, field: &str, argv: &[String]) -> Option<Vec<String>> {
        if argv.first().is_none_or(|a| a.is_empty()) {
            self.error_hint(
                field,
                "a command needs at least a program",
                "write it as a list: [postmap, /etc/postfix/virtual]",
            );
            return None;
        }
        // A plain number or boolean word is taken as written (`0600`).
        let words = argv
            .iter()
            .enumerate()
            .map(
                |(i, word)| match self.map.scalar_text(&join_index(field, i), word) {
                    Some(written) => written.to_owned(),
                    None => word.clone(),
                },
            )
            .collect();
        Some(words)
    }

    fn host_spec(&mut self, path: &str, spec: &raw::HostSpec) -> model::HostSpec {
        let addresses_path = join_key(path, "addresses");
        let addresses = spec
            .addresses
            .iter()
            .enumerate()
            .filter_map(|(i, a)| self.address(&join_index(&addresses_path, i), a))
            .collect::<Vec<model::ServiceAddress>>();
        {
            let ips: Vec<(usize, String)> = addresses_ip_keys(&spec.addresses);
            self.unique(
                &addresses_path,
                "address",
                ips.iter().map(|(i, s)| (*i, s.as_str())),
                "address",
            );
        }

        let files_path = join_key(path, "files");
        self.unique(
            &files_path,
            "file",
            spec.files.iter().map(|f| f.path.as_str()).enumerate(),
            "path",
        );
        // Removing a managed file is a change too, so reloadOn may name absent ones.
        let managed: HashSet<&str> = spec.files.iter().map(|f| f.path.as_str()).collect();
        let service_names: HashSet<&str> = spec.services.iter().map(|s| s.name.as_str()).collect();

        let services_path = join_key(path, "services");
        self.unique(
            &services_path,
            "service",
            spec.services.iter().map(|s| s.name.as_str()).enumerate(),
            "name",
        );
        let services = spec
            .services
            .iter()
            .enumerate()
            .filter_map(|(i, s)| self.service(&join_index(&services_path, i), s, &managed))
            .collect();

        let firewall = spec
            .firewall
            .as_ref()
            .and_then(|f| self.firewall(&join_key(path, "firewall"), f));

        let files = spec
            .files
            .iter()
            .enumerate()
            .filter_map(|(i, f)| self.file(&join_index(&files_path, i), f, &service_names))
            .collect();

        let jobs_path = join_key(path, "syncJobs");
        self.unique(
            &jobs_path,
            "sync job",
            spec.sync_jobs.iter().map(|j| j.name.as_str()).enumerate(),
            "name",
        );
        let sync_jobs = spec
            .sync_jobs
            .iter()
            .enumerate()
            .filter_map(|(i, j)| self.sync_job(&join_index(&jobs_path, i), j))
            .collect();

        let tasks_path = join_key(path, "tasks");
        self.unique(
            &tasks_path,
            "task",
            spec.tasks.iter().map(|t| t.name.as_str()).enumerate(),
            "name",
        );
        let tasks = spec
            .tasks
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let at = join_index(&tasks_path, i);
                self.item_name(&join_key(&at, "name"), &t.name);
                let run = self.argv(&join_key(&at, "run"), &t.run);
                let creates = match &t.creates {
                    Some(c) => Some(self.absolute_path(&join_key(&at, "creates"), c)?),
                    None => None,
                };
                Some(model::Task {
                    name: t.name.clone(),
                    run: run?,
                    creates,
                })
            })
            .collect();

        model::HostSpec {
            addresses,
            services,
            firewall,
            files,
            sync_jobs,
            tasks,
        }
    }

    fn address(&mut self, at: &str, a: &raw::Address) -> Option<model::ServiceAddress> {
        let address = self.cidr(&join_key(at, "address"), &a.address);
        let interface_ok = interface_name_ok(&a.interface);
        if !interface_ok {
            self.error_hint(
                &join_key(at, "interface"),
                format!("\"{}\" is not a valid interface name", a.interface),
                "an interface name has 1-15 characters, without '/', ':' or spaces",
            );
        }
        if let Some(label) = &a.label {
            let field = join_key(at, "label");
            if address.is_some_and(|n| n.addr().is_ipv6()) {
                self.error_hint(
                    &field,
                    "labels exist only for IPv4 addresses",
                    "remove the label from this IPv6 address",
                );
            } else if !label.starts_with(&a.interface) {
                self.error_hint(
                    &field,
                    format!(
                        "label \"{label}\" does not start with its interface \"{}\"",
                        a.interface
                    ),
                    format!("the kernel requires it: write {}:NAME", a.interface),
                );
            } else if label.len() > 15 {
                self.error(
                    &field,
                    format!("label \"{label}\" is longer than 15 characters"),
                );
            }
        }
        Some(model::ServiceAddress {
            address: address?,
            interface: a.interface.clone(),
            label: a.label.clone(),
            state: a.state,
            exclusive: a.exclusive,
        })
        .filter(|_| interface_ok)
    }

    fn service(
        &mut self,
        at: &str,
        s: &raw::Service,
        managed: &HashSet<&str>,
    ) -> Option<model::Service> {
        self.item_name(&join_key(at, "name"), &s.name);
        let exec = match &s.exec {
            Some(e) => {
                let p = join_key(at, "exec");
                let start = self.argv(&join_key(&p, "start"), &e.start);
                let stop = self.argv(&join_key(&p, "stop"), &e.stop);
                let status = self.argv(&join_key(&p, "status"), &e.status);
                let reload = match &e.reload {
                    Some(r) => Some(self.argv(&join_key(&p, "reload"), r)?),
                    None => None,
                };
                Some(model::ExecCommands {
                    start: start?,
                    stop: stop?,
                    status: status?,
                    reload,
                })
            }
            None if s.driver == raw::ServiceDriver::Exec => {
                self.error_hint(
                    &join_key(at, "exec"),
                    "driver: exec needs exec commands",
                    "add exec: {start: [...], stop: [...], status: [...]}",
                );
                return None;
            }
            None => None,
        };
        let unit = s
            .unit
            .clone()
            .unwrap_or_else(|| format!("{}.service", s.name));
        if let Some(u) = &s.unit
            && (u.contains('/') || !u.contains('.'))
        {
            self.error_hint(
                &join_key(at, "unit"),
                format!("\"{u}\" is not a systemd unit name"),
                "write it like postfix.service or postfix@-.service",
            );
        }
        let reload_path = join_key(at, "reloadOn");
        let mut reload_on = Vec::new();
        for (i, file) in s.reload_on.iter().enumerate() {
            let field = join_index(&reload_path, i);
            if let Some(p) = self.absolute_path(&field, file) {
                if managed.contains(file.as_str()) {
                    reload_on.push(p);
                } else {
                    self.error_hint(
                        &field,
                        format!("\"{file}\" is not a managed file of this host"),
                        match closest(file, managed.iter().copied()) {
                            Some(close) => format!("did you mean \"{close}\"?"),
                            None => {
                                "declare it under files:, or remove it from reloadOn".to_owned()
                            }
                        },
                    );
                }
            }
        }
        Some(model::Service {
            name: s.name.clone(),
            state: s.state,
            enabled: s.enabled,
            driver: s.driver,
            unit,
            exec,
            reload_on,
        })
    }

    fn firewall(&mut self, at: &str, f: &raw::Firewall) -> Option<model::Firewall> {
        let table = f.table.clone().unwrap_or_else(|| "mailctl".to_owned());
        let problem = crate::nft::table_name_problem(&table);
        let table_ok = problem.is_none();
        if let Some(hint) = problem {
            self.error_hint(
                &join_key(at, "table"),
                format!("\"{table}\" is not a valid nftables table name"),
                hint,
            );
        }
        let rules_path = join_key(at, "rules");
        self.unique(
            &rules_path,
            "rule",
            f.rules.iter().map(|r| r.name.as_str()).enumerate(),
            "name",
        );
        let mut rules = Vec::new();
        let mut ok = table_ok;
        for (i, r) in f.rules.iter().enumerate() {
            let rp = join_index(&rules_path, i);
            self.item_name(&join_key(&rp, "name"), &r.name);
            let ports_path = join_key(&rp, "ports");
            if r.ports.is_empty() {
                self.error(&ports_path, "a rule needs at least one port");
            }
            let ports: Vec<Option<u16>> = r
                .ports
                .iter()
                .enumerate()
                .map(|(j, p)| self.port(&join_index(&ports_path, j), *p))
                .collect();
            let sources_path = join_key(&rp, "sources");
            let sources: Vec<Option<IpNet>> = r
                .sources
                .iter()
                .enumerate()
                .map(|(j, s)| self.cidr(&join_index(&sources_path, j), s))
                .collect();
            match (
                ports.into_iter().collect::<Option<Vec<_>>>(),
                sources.into_iter().collect::<Option<Vec<_>>>(),
            ) {
                (Some(ports), Some(sources)) => rules.push(model::FirewallRule {
                    name: r.name.clone(),
                    protocol: r.protocol,
                    ports,
                    sources,
                    action: r.action,
                }),
                _ => ok = false,
            }
        }
        let blocked = if f.allow_lockout {
            Vec::new()
        } else {
            blocked_from_everywhere(f)
        };
        if !blocked.is_empty() {
            let ports: Vec<String> = blocked
                .iter()
                .map(|(port, service)| format!("tcp/{port} ({service})"))
                .collect();
            self.error_hint(
                at,
                format!(
                    "this rule set blocks {} from every source: nobody could log in or reach the agent to undo it",
                    ports.join(" and ")
                ),
                "add a rule accepting those ports (from the networks the controller and the admins connect from), or set allowLockout: true if that is intended",
            );
        }
        ok.then_some(model::Firewall {
            table,
            policy: f.policy,
            allow_lockout: f.allow_lockout,
            rules,
        })
    }

    fn file(
        &mut self,
        at: &str,
        f: &raw::File,
        services: &HashSet<&str>,
    ) -> Option<model::ManagedFile> {
        let path = self.absolute_path(&join_key(at, "path"), &f.path);
        let mode = match &f.mode {
            Some(m) => {
                let parsed = (matches!(m.len(), 3 | 4)
                    && m.chars().all(|c| ('0'..='7').contains(&c)))
                .then(|| u32::from_str_radix(m, 8).ok())
                .flatten();
                if parsed.is_none() {
                    self.error_hint(
                        &join_key(at, "mode"),
                        format!("\"{m}\" is not an octal file mode"),
                        "write it quoted, like \"0644\" or \"0600\"",
                    );
                }
                parsed
            }
            None => None,
        };
        for (field, name) in [("owner", &f.owner), ("group", &f.group)] {
            if let Some(n) = name
                && (n.is_empty() || n.contains([':', '/', ' ', '\n']))
            {
                self.error(
                    &join_key(at, field),
                    format!("\"{n}\" is not a valid {field} name"),
                );
            }
        }
        let content = match (f.state, &f.content, &f.source) {
            (raw::Presence::Present, Some(c), None) => Some(c.clone()),
            (raw::Presence::Present, None, Some(s)) => match self.content.read(self.manifest, s) {
                Ok(c) => Some(c),
                Err(why) => {
                    self.error_hint(
                        &join_key(at, "source"),
                        format!("cannot read \"{s}\": {why}"),
                        "source is relative to the folder of this manifest file",
                    );
                    return None;
                }
            },
            (raw::Presence::Present, Some(_), Some(_)) => {
                self.error_hint(at, "both content and source are set", "keep one of them");
                return None;
            }
            (raw::Presence::Present, None, None) => {
                self.error_hint(
                    at,
                    "a present file needs content or source",
                    "add content: \"...\" or source: relative/path",
                );
                return None;
            }
            (raw::Presence::Absent, None, None) => None,
            (raw::Presence::Absent, _, _) => {
                self.error_hint(
                    at,
                    "an absent file takes no content or source",
                    "remove content/source, or set state: present",
                );
                return None;
            }
        };
        let handlers_path = join_key(at, "onChange");
        let mut on_change = Vec::new();
        for (i, h) in f.on_change.iter().enumerate() {
            let hp = join_index(&handlers_path, i);
            let handler = match (&h.run, &h.reload, &h.restart) {
                (Some(run), None, None) => self
                    .argv(&join_key(&hp, "run"), run)
                    .map(model::Handler::Run),
                (None, Some(s), None) => self
                    .known_service(&join_key(&hp, "reload"), s, services)
                    .then(|| model::Handler::Reload(s.clone())),
                (None, None, Some(s)) => self
                    .known_service(&join_key(&hp, "restart"), s, services)
                    .then(|| model::Handler::Restart(s.clone())),
                _ => {
                    self.error_hint(
                        &hp,
                        "a handler has exactly one of run, reload, restart",
                        "split it into one handler per action",
                    );
                    None
                }
            };
            on_change.extend(handler);
        }
        Some(model::ManagedFile {
            path: path?,
            content,
            mode,
            owner: f.owner.clone(),
            group: f.group.clone(),
            on_change,
        })
    }

    fn known_service(&mut self, field: &str, name: &str, services: &HashSet<&str>) -> bool {
        let known = services.contains(name);
        if !known {
            self.error_hint(
                field,
                format!("unknown service \"{name}\""),
                match closest(name, services.iter().copied()) {
                    Some(close) => format!("did you mean \"{close}\"?"),
                    None => "declare it under services: of this host".to_owned(),
                },
            );
        }
        known
    }

    fn sync_job(&mut self, at: &str, j: &raw::SyncJob) -> Option<model::SyncJob> {
        self.item_name(&join_key(at, "name"), &j.name);
        let source_field = join_key(at, "source");
        let source = match crate::ssh::split_remote(&j.source) {
            Some((host, path)) => match crate::ssh::host_problem(host) {
                Some(problem) => {
                    self.error_hint(
                        &source_field,
                        problem,
                        "write the source as HOST:/path/ (HOST: a name, an IPv4 address or [IPv6], optionally after user@) or as an absolute local path",
                    );
                    None
                }
                None => {
                    self.absolute_path(&source_field, path)
                        .map(|path| model::SyncSource::Remote {
                            host: host.to_owned(),
                            path,
                        })
                }
            },
            None => self
                .absolute_path(&source_field, &j.source)
                .map(model::SyncSource::Local),
        };
        let destination = self.absolute_path(&join_key(at, "destination"), &j.destination);
        let every = match &j.every {
            Some(e) => {
                let d = self.duration(&join_key(at, "every"), e)?;
                if d.0.is_zero() {
                    self.error(&join_key(at, "every"), "an interval of 0 would never rest");
                    return None;
                }
                Some(d)
            }
            None => None,
        };
        if j.maildir && j.mbox {
            self.error_hint(
                at,
                "maildir and mbox are both set",
                "mbox: true converts spool files into Maildirs; maildir: true copies Maildirs",
            );
        }
        let ssh_key = match &j.ssh_key {
            Some(k) => Some(self.absolute_path(&join_key(at, "sshKey"), k)?),
            None => None,
        };
        let ssh_host_key = match &j.ssh_host_key {
            Some(key) => match crate::ssh::HostKey::parse(key) {
                Ok(key) => Some(key),
                Err(problem) => {
                    self.error_hint(
                        &join_key(at, "sshHostKey"),
                        problem,
                        "paste the source's /etc/ssh/ssh_host_ed25519_key.pub (or a line of `ssh-keyscan HOST`, without the host)",
                    );
                    return None;
                }
            },
            None => None,
        };
        if ssh_host_key.is_some() && matches!(source, Some(model::SyncSource::Local(_))) {
            self.error_hint(
                &join_key(at, "sshHostKey"),
                "a local source has no ssh host key",
                "remove sshHostKey, or write the source as HOST:/path/",
            );
        }
        Some(model::SyncJob {
            name: j.name.clone(),
            source: source?,
            destination: destination?,
            every,
            maildir: j.maildir,
            mbox: j.mbox,
            delete: j.delete,
            ssh_key,
            ssh_host_key,
            include: j.include.clone(),
            exclude: j.exclude.clone(),
        })
        .filter(|_| !(j.maildir && j.mbox))
    }

    fn migration(&mut self, doc: raw::MigrationDocument) -> model::Migration {
        self.object_name("metadata.name", &doc.metadata.name);
        let spec = doc.spec;
        if spec.hosts.is_empty() {
            self.error("spec.hosts", "a migration needs at least one host");
        }
        let mut hosts = BTreeMap::new();
        for (name, host) in &spec.hosts {
            let at = join_key("spec.hosts", name);
            self.object_name(&at, name);
            if agent_url_ok(&host.agent) {
                hosts.insert(
                    name.clone(),
                    model::MigrationHost {
                        agent: host.agent.clone(),
                    },
                );
            } else {
                self.error_hint(
                    &join_key(&at, "agent"),
                    format!("\"{}\" is not an agent address", host.agent),
                    "write it as https://ADDRESS:PORT (the agent speaks mutual TLS)",
                );
            }
        }
        if spec.phases.is_empty() {
            self.error("spec.phases", "a migration needs at least one phase");
        }
        for (i, p) in spec.phases.iter().enumerate() {
            self.object_name(&join_index("spec.phases", i), p);
        }
        self.unique(
            "spec.phases",
            "phase",
            spec.phases.iter().map(String::as_str).enumerate(),
            "",
        );
        for (field, name) in [
            ("spec.targetPhase", Some(&spec.target_phase)),
            ("spec.pointOfNoReturn", spec.point_of_no_return.as_ref()),
        ] {
            if let Some(name) = name
                && !spec.phases.contains(name)
            {
                self.error_hint(
                    field,
                    format!("phase \"{name}\" is not in spec.phases"),
                    suggest(name, "phases are", spec.phases.iter().map(String::as_str)),
                );
            }
        }
        model::Migration {
            name: doc.metadata.name,
            hosts,
            phases: spec.phases,
            target_phase: spec.target_phase,
            point_of_no_return: spec.point_of_no_return,
            on_gate_failure: spec.on_gate_failure,
            origin: self.origin(""),
        }
    }

    fn phase(&mut self, doc: raw::PhaseDocument) -> model::Phase {
        self.object_name("metadata.name", &doc.metadata.name);
        self.object_name("metadata.migration", &doc.metadata.migration);
        let spec = doc.spec;
        let mut hosts = BTreeMap::new();
        for (name, host) in &spec.hosts {
            let at = join_key("spec.hosts", name);
            self.object_name(&at, name);
            hosts.insert(name.clone(), self.host_spec(&at, host));
        }
        let mut final_syncs = Vec::new();
        for (i, s) in spec.final_syncs.iter().enumerate() {
            let at = join_index("spec.finalSyncs", i);
            if self.job_exists(&at, &s.host, &s.job, &hosts) {
                final_syncs.push(model::FinalSync {
                    host: s.host.clone(),
                    job: s.job.clone(),
                });
            }
        }
        self.unique(
            "spec.gates",
            "gate",
            spec.gates.iter().map(|g| g.name.as_str()).enumerate(),
            "name",
        );
        let gates = spec
            .gates
            .iter()
            .enumerate()
            .filter_map(|(i, g)| self.gate(&join_index("spec.gates", i), g, &hosts))
            .collect();
        model::Phase {
            name: doc.metadata.name,
            migration: doc.metadata.migration,
            hosts,
            final_syncs,
            gates,
            origin: self.origin(""),
        }
    }

    /// A `{host, job}` reference must name a sync job of that host in this phase.
    fn job_exists(
        &mut self,
        at: &str,
        host: &str,
        job: &str,
        hosts: &BTreeMap<String, model::HostSpec>,
    ) -> bool {
        match hosts.get(host) {
            None => {
                self.error_hint(
                    &join_key(at, "host"),
                    format!("host \"{host}\" has no spec in this phase"),
                    match closest(host, hosts.keys().map(String::as_str)) {
                        Some(close) => format!("did you mean \"{close}\"?"),
                        None => "the sync job runs on the destination host, which must be under spec.hosts".to_owned(),
                    },
                );
                false
            }
            Some(spec) if !spec.sync_jobs.iter().any(|j| j.name == job) => {
                self.error_hint(
                    &join_key(at, "job"),
                    format!("host \"{host}\" has no sync job \"{job}\" in this phase"),
                    match closest(job, spec.sync_jobs.iter().map(|j| j.name.as_str())) {
                        Some(close) => format!("did you mean \"{close}\"?"),
                        None => "declare it under that host's syncJobs".to_owned(),
                    },
                );
                false
            }
            Some(_) => true,
        }
    }

    fn gate(
        &mut self,
        at: &str,
        g: &raw::Gate,
        hosts: &BTreeMap<String, model::HostSpec>,
    ) -> Option<model::Gate> {
        self.item_name(&join_key(at, "name"), &g.name);
        let timeout = match &g.timeout {
            Some(t) => Some(self.duration(&join_key(at, "timeout"), t)?),
            None => None,
        };
        let kinds = [
            g.smtp.is_some(),
            g.imap.is_some(),
            g.pop3.is_some(),
            g.delivery.is_some(),
            g.queue_empty.is_some(),
            g.disk_free.is_some(),
            g.sync_complete.is_some(),
            g.command.is_some(),
            g.soak.is_some(),
            g.approval.is_some(),
        ];
        let count = kinds.iter().filter(|k| **k).count();
        if count != 1 {
            self.error_hint(
                at,
                format!("a gate checks exactly one thing; this one has {count}"),
                "use one of smtp, imap, pop3, delivery, queueEmpty, diskFree, syncComplete, command, soak, approval per gate",
            );
            return None;
        }
        let check = if let Some(p) = &g.smtp {
            model::GateCheck::Smtp(self.probe(&join_key(at, "smtp"), p)?)
        } else if let Some(p) = &g.imap {
            model::GateCheck::Imap(self.probe(&join_key(at, "imap"), p)?)
        } else if let Some(p) = &g.pop3 {
            model::GateCheck::Pop3(self.probe(&join_key(at, "pop3"), p)?)
        } else if let Some(d) = &g.delivery {
            let p = join_key(at, "delivery");
            let server = match d.server.parse::<SocketAddr>() {
                Ok(s) => Some(s),
                Err(_) => {
                    self.error_hint(
                        &join_key(&p, "server"),
                        format!("\"{}\" is not IP:PORT", d.server),
                        "write it like 192.0.2.25:25 or [2001:db8::25]:25",
                    );
                    None
                }
            };
            for (field, addr) in [("to", Some(&d.to)), ("from", d.from.as_ref())] {
                if let Some(a) = addr
                    && !mail_address_ok(a)
                {
                    self.error(
                        &join_key(&p, field),
                        format!("\"{a}\" is not a mail address"),
                    );
                }
            }
            let host_ok = self.gate_host(&join_key(&p, "host"), &d.host, hosts);
            let maildir = self.absolute_path(&join_key(&p, "maildir"), &d.maildir);
            if !host_ok
                || !mail_address_ok(&d.to)
                || d.from.as_ref().is_some_and(|f| !mail_address_ok(f))
            {
                return None;
            }
            model::GateCheck::Delivery(model::Delivery {
                server: server?,
                to: d.to.clone(),
                from: d.from.clone(),
                host: d.host.clone(),
                maildir: maildir?,
            })
        } else if let Some(q) = &g.queue_empty {
            self.gate_host(
                &join_key(&join_key(at, "queueEmpty"), "host"),
                &q.host,
                hosts,
            )
            .then(|| model::GateCheck::QueueEmpty {
                host: q.host.clone(),
                mta: q.mta,
            })?
        } else if let Some(d) = &g.disk_free {
            let p = join_key(at, "diskFree");
            let host_ok = self.gate_host(&join_key(&p, "host"), &d.host, hosts);
            let path = self.absolute_path(&join_key(&p, "path"), &d.path);
            let bytes = u64::try_from(d.bytes).ok();
            if bytes.is_none() {
                self.error(
                    &join_key(&p, "bytes"),
                    format!("{} is not a byte count", d.bytes),
                );
            }
            if !host_ok {
                return None;
            }
            model::GateCheck::DiskFree {
                host: d.host.clone(),
                path: path?,
                bytes: bytes?,
            }
        } else if let Some(s) = &g.sync_complete {
            self.job_exists(&join_key(at, "syncComplete"), &s.host, &s.job, hosts)
                .then(|| {
                    model::GateCheck::SyncComplete(model::FinalSync {
                        host: s.host.clone(),
                        job: s.job.clone(),
                    })
                })?
        } else if let Some(c) = &g.command {
            let p = join_key(at, "command");
            let host_ok = self.gate_host(&join_key(&p, "host"), &c.host, hosts);
            let run = self.argv(&join_key(&p, "run"), &c.run)?;
            host_ok.then(|| model::GateCheck::Command {
                host: c.host.clone(),
                run,
            })?
        } else if let Some(s) = &g.soak {
            model::GateCheck::Soak {
                duration: self
                    .duration(&join_key(&join_key(at, "soak"), "duration"), &s.duration)?,
            }
        } else {
            model::GateCheck::Approval
        };
        Some(model::Gate {
            name: g.name.clone(),
            timeout,
            check,
        })
    }

    /// Gates that run on a host's agent must name a host of this phase.
    fn gate_host(
        &mut self,
        field: &str,
        host: &str,
        hosts: &BTreeMap<String, model::HostSpec>,
    ) -> bool {
        let known = hosts.contains_key(host);
        if !known {
            self.error_hint(
                field,
                format!("host \"{host}\" has no spec in this phase"),
                suggest(
                    host,
                    "hosts of this phase",
                    hosts.keys().map(String::as_str),
                ),
            );
        }
        known
    }

    fn probe(&mut self, at: &str, p: &raw::ProbeGate) -> Option<model::Probe> {
        let address = match p.address.parse::<IpAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.error_hint(
                    &join_key(at, "address"),
                    format!("\"{}\" is not an IP address", p.address),
                    "probes connect to an IP address, e.g. the service IP 192.0.2.25",
                );
                None
            }
        };
        let port = self.port(&join_key(at, "port"), p.port);
        if let Some(b) = &p.banner
            && let Err(e) = regex::Regex::new(b)
        {
            let why = e.to_string();
            let why = why
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("error: "))
                .unwrap_or("cannot be parsed")
                .to_owned();
            self.error(
                &join_key(at, "banner"),
                format!("not a valid regular expression: {why}"),
            );
            return None;
        }
        if p.tls && p.starttls {
            self.error_hint(at, "tls and starttls are both set", "tls is implicit TLS (465, 993, 995); starttls upgrades a plain connection (25, 587, 143, 110)");
            return None;
        }
        let cert_days = match p.cert_days {
            Some(d) => match u32::try_from(d) {
                Ok(d) => Some(d),
                Err(_) => {
                    self.error(
                        &join_key(at, "certDays"),
                        format!("{d} is not a number of days"),
                    );
                    return None;
                }
            },
            None => None,
        };
        Some(model::Probe {
            address: address?,
            port: port?,
            banner: p.banner.clone(),
            starttls: p.starttls,
            tls: p.tls,
            cert_days,
        })
    }
}

/// Remove the field at a dotted path (`spec.addresses[0].lable`).
fn remove_field(document: &mut Value, field: &str) {
    let (parent, name) = match field.rfind('.') {
        Some(cut) => (&field[..cut], &field[cut + 1..]),
        None => ("", field),
    };
    let mut node = document;
    for part in parent.split('.').filter(|p| !p.is_empty()) {
        let mut pieces = part.split('[');
        let key = pieces.next().unwrap_or_default();
        let next = if key.is_empty() {
            Some(node)
        } else {
            node.get_mut(key)
        };
        let Some(mut next) = next else { return };
        for index in pieces {
            let Some(i) = index.trim_end_matches(']').parse::<usize>().ok() else {
                return;
            };
            match next.get_mut(i) {
                Some(n) => next = n,
                None => return,
            }
        }
        node = next;
    }
    if let Some(map) = node.as_object_mut() {
        map.remove(name);
    }
}

/// `(index, ip)` of each address that parses, for duplicate detection by IP.
fn addresses_ip_keys(addresses: &[raw::Address]) -> Vec<(usize, String)> {
    addresses
        .iter()
        .enumerate()
        .filter_map(|(i, a)| {
            a.address
                .parse::<IpNet>()
                .ok()
                .map(|n| (i, n.addr().to_string()))
        })
        .collect()
}

fn interface_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && !name.contains(['/', ':', ' ', '\t', '\n', '\0'])
        && name != "."
        && name != ".."
}

fn agent_url_ok(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("https://") else {
        return false;
    };
    let authority = rest.trim_end_matches('/');
    match authority.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0)
        }
        None => false,
    }
}

fn mail_address_ok(address: &str) -> bool {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && !domain.is_empty() && !address.contains([' ', '<', '>', '\n'])
        }
        None => false,
    }
}

/// Hosts whose desired state in a phase runs an MTA: they take mail.
const MTA_SERVICES: [&str; 6] = ["postfix", "exim", "exim4", "sendmail", "opensmtpd", "smtpd"];

fn takes_mail(spec: &model::HostSpec) -> bool {
    spec.services.iter().any(|s| {
        s.state == model::ServiceState::Running
            && (MTA_SERVICES.contains(&s.name.as_str())
                || MTA_SERVICES.iter().any(|m| {
                    s.unit.starts_with(&format!("{m}.")) || s.unit.starts_with(&format!("{m}@"))
                }))
    })
}

fn origin(doc: &Checked, field: &str, at_key: bool) -> Origin {
    Origin {
        file: doc.file.clone(),
        position: if at_key {
            doc.map.key(field)
        } else {
            doc.map.value(field)
        },
    }
}

fn report(
    diags: &mut Diagnostics,
    doc: &Checked,
    field: &str,
    message: String,
    hint: Option<String>,
) {
    let mut d = Diagnostic::new(origin(doc, field, false), field, message);
    d.hint = hint;
    diags.push(d);
}

/// Problems about a map key (a host name under spec.hosts) point at the key.
fn report_key(
    diags: &mut Diagnostics,
    doc: &Checked,
    field: &str,
    message: String,
    hint: Option<String>,
) {
    let mut d = Diagnostic::new(origin(doc, field, true), field, message);
    d.hint = hint;
    diags.push(d);
}

/// Pass 4: references between documents.
fn cross_check(docs: &[Checked], diags: &mut Diagnostics) -> model::ManifestSet {
    let mut set = model::ManifestSet::default();
    // Names are unique per kind (phases per migration).
    let mut seen: HashMap<(Kind, String, String), &Checked> = HashMap::new();
    for doc in docs {
        let key = match &doc.object {
            Object::Host(h) => (Kind::Host, String::new(), h.name.clone()),
            Object::Migration(m) => (Kind::Migration, String::new(), m.name.clone()),
            Object::Phase(p) => (Kind::Phase, p.migration.clone(), p.name.clone()),
            // Its own errors are reported; where it sits may not be known.
            Object::Named(_) => continue,
        };
        if let Some(first) = seen.get(&key) {
            report(
                diags,
                doc,
                "metadata.name",
                format!("{} \"{}\" is declared twice", key.0.name(), key.2),
                Some(format!("first declared at {}", origin(first, "", false))),
            );
        } else {
            seen.insert(key, doc);
        }
    }

    let migrations: HashMap<&str, (&Checked, &model::Migration)> = docs
        .iter()
        .filter_map(|d| match &d.object {
            Object::Migration(m) => Some((m.name.as_str(), (d, m))),
            _ => None,
        })
        .collect();
    // Broken documents count as there: what refers to them is not reported
    // as missing on top of their own errors.
    let broken = |kind: Kind, migration: &str, name: &str| {
        docs.iter().any(|d| match &d.object {
            Object::Named(n) => match n.kind {
                // Too broken to tell, or of an unknown kind: anything of its name.
                None => {
                    n.name.is_empty()
                        || (n.name == name
                            && (kind != Kind::Phase
                                || n.migration.is_empty()
                                || n.migration == migration))
                }
                Some(k) => {
                    k == kind && n.name == name && (kind != Kind::Phase || n.migration == migration)
                }
            },
            _ => false,
        })
    };
    let phase_names = |migration: &str| -> Vec<&str> {
        docs.iter()
            .filter_map(|d| match &d.object {
                Object::Phase(p) if p.migration == migration => Some(p.name.as_str()),
                _ => None,
            })
            .collect()
    };

    for doc in docs {
        match &doc.object {
            Object::Host(h) => set.hosts.push(h.clone()),
            Object::Migration(m) => {
                for (i, name) in m.phases.iter().enumerate() {
                    let declared = docs.iter().any(|d| matches!(&d.object, Object::Phase(p) if p.migration == m.name && &p.name == name))
                        || broken(Kind::Phase, &m.name, name);
                    if !declared {
                        let unlisted = phase_names(&m.name)
                            .into_iter()
                            .filter(|p| !m.phases.iter().any(|l| l == p));
                        let hint = match closest(name, unlisted) {
                            Some(close) => format!(
                                "did you mean \"{close}\"? (a Phase document of migration {} has that name)",
                                m.name
                            ),
                            None => format!(
                                "add a document with kind: Phase, metadata: {{name: {name}, migration: {}}}",
                                m.name
                            ),
                        };
                        report(
                            diags,
                            doc,
                            &join_index("spec.phases", i),
                            format!("phase \"{name}\" has no Phase document"),
                            Some(hint),
                        );
                    }
                }
                set.migrations.push(m.clone());
            }
            Object::Named(_) => {}
            Object::Phase(p) => {
                set.phases.push(p.clone());
                let Some((_, m)) = migrations.get(p.migration.as_str()) else {
                    if broken(Kind::Migration, "", &p.migration) {
                        continue;
                    }
                    let hint =
                        if let Some(close) = closest(&p.migration, migrations.keys().copied()) {
                            format!("did you mean \"{close}\"?")
                        } else if migrations.is_empty() {
                            "validate the Phase together with its Migration (e.g. the whole folder)"
                                .to_owned()
                        } else {
                            format!(
                                "known migrations: {}",
                                migrations.keys().copied().collect::<Vec<_>>().join(", ")
                            )
                        };
                    report(
                        diags,
                        doc,
                        "metadata.migration",
                        format!("unknown migration \"{}\"", p.migration),
                        Some(hint),
                    );
                    continue;
                };
                let Some(index) = m.phases.iter().position(|n| n == &p.name) else {
                    report(
                        diags,
                        doc,
                        "metadata.name",
                        format!(
                            "phase \"{}\" is not listed in migration \"{}\"",
                            p.name, m.name
                        ),
                        Some(
                            match closest(&p.name, m.phases.iter().map(String::as_str)) {
                                Some(close) => format!(
                                    "did you mean \"{close}\"? (or add \"{}\" to spec.phases of the migration)",
                                    p.name
                                ),
                                None => format!(
                                    "add it to spec.phases of the migration (now: {})",
                                    m.phases.join(", ")
                                ),
                            },
                        ),
                    );
                    continue;
                };
                for host in p.hosts.keys() {
                    if !m.hosts.contains_key(host) {
                        report_key(
                            diags,
                            doc,
                            &join_key("spec.hosts", host),
                            format!("host \"{host}\" is not a host of migration \"{}\"", m.name),
                            Some(suggest(
                                host,
                                "hosts are",
                                m.hosts.keys().map(String::as_str),
                            )),
                        );
                    }
                }
                warn_unknown_sources(&mut set.warnings, doc, p, m);
                if !doc.clean {
                    continue;
                }
                // Who held a service IP before this phase is who must let it go.
                let previous =
                    index
                        .checked_sub(1)
                        .and_then(|i| m.phases.get(i))
                        .and_then(|name| {
                            docs.iter().find_map(|d| match &d.object {
                                Object::Phase(before)
                                    if before.migration == m.name && &before.name == name =>
                                {
                                    Some(before)
                                }
                                _ => None,
                            })
                        });
                check_exclusive(diags, doc, p, previous);
                let past_no_return = m
                    .point_of_no_return
                    .as_ref()
                    .and_then(|pnr| m.phases.iter().position(|n| n == pnr))
                    .is_some_and(|pnr| index >= pnr);
                if past_no_return {
                    for (host, spec) in &p.hosts {
                        if !takes_mail(spec) {
                            continue;
                        }
                        for (i, job) in spec.sync_jobs.iter().enumerate() {
                            if job.delete {
                                report(
                                    diags,
                                    doc,
                                    &format!("spec.hosts.{host}.syncJobs[{i}].delete"),
                                    format!("delete: true on \"{host}\", which takes mail in phase \"{}\" (at or after the point of no return)", p.name),
                                    Some("a deleting sync would remove mail delivered there; set delete: false".into()),
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    set
}

/// A sync source `HOST:PATH` names a host by how ssh reaches it, which is
/// usually a host of the migration; a name that is none (`eev:`) would
/// fail only on the night, so it gets a warning (it may be a real name).
fn warn_unknown_sources(
    warnings: &mut Vec<Diagnostic>,
    doc: &Checked,
    phase: &model::Phase,
    migration: &model::Migration,
) {
    for (host, spec) in &phase.hosts {
        for (i, job) in spec.sync_jobs.iter().enumerate() {
            let model::SyncSource::Remote { host: source, .. } = &job.source else {
                continue;
            };
            let name = source.rsplit_once('@').map_or(source.as_str(), |(_, h)| h);
            let literal = name
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .is_ok();
            // `eve.example.org` is eve; `mx.example.org`, far from every
            // host's name, is some other machine ssh knows.
            let (label, qualified) = name
                .split_once('.')
                .map_or((name, false), |(l, _)| (l, true));
            if literal || migration.hosts.contains_key(label) {
                continue;
            }
            let close = closest(label, migration.hosts.keys().map(String::as_str));
            let hint = match close {
                Some(close) => format!("did you mean \"{close}\"?"),
                None if qualified => continue,
                None => format!(
                    "hosts of migration {} are: {}; ignore this if ssh reaches the source as \"{name}\"",
                    migration.name,
                    migration
                        .hosts
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            let field = format!("spec.hosts.{host}.syncJobs[{i}].source");
            warnings.push(
                Diagnostic::new(
                    origin(doc, &field, false),
                    field,
                    format!(
                        "source host \"{name}\" is not a host of migration \"{}\"",
                        migration.name
                    ),
                )
                .with_hint(hint),
            );
        }
    }
}

/// An exclusive (service) address may be present on only one host per phase.
fn check_exclusive(
    diags: &mut Diagnostics,
    doc: &Checked,
    phase: &model::Phase,
    previous: Option<&model::Phase>,
) {
    let held_before = |host: &str, ip: IpAddr| {
        previous
            .and_then(|p| p.hosts.get(host))
            .is_some_and(|spec| {
                spec.addresses
                    .iter()
                    .any(|a| a.state == model::Presence::Present && a.address.addr() == ip)
            })
    };
    let mut holders: HashMap<IpAddr, (&str, usize)> = HashMap::new();
    for (host, spec) in &phase.hosts {
        for (i, a) in spec.addresses.iter().enumerate() {
            if a.state != model::Presence::Present {
                continue;
            }
            let ip = a.address.addr();
            let exclusive_here = a.exclusive
                || phase
                    .hosts
                    .values()
                    .flat_map(|s| &s.addresses)
                    .any(|o| o.exclusive && o.address.addr() == ip);
            if !exclusive_here {
                continue;
            }
            match holders.get(&ip) {
                Some((first, _)) if *first != host.as_str() => {
                    // The host that held it in the phase before releases
                    // it; when that does not tell, the first one named.
                    let (holder, taker) = if held_before(host, ip) && !held_before(first, ip) {
                        (host.as_str(), *first)
                    } else {
                        (*first, host.as_str())
                    };
                    let since = match previous {
                        Some(before) if held_before(holder, ip) => {
                            format!(" (it held it in phase \"{}\")", before.name)
                        }
                        _ => String::new(),
                    };
                    report(
                        diags,
                        doc,
                        &format!("spec.hosts.{host}.addresses[{i}].address"),
                        format!(
                            "exclusive address {ip} is present on \"{first}\" and \"{host}\" in phase \"{}\"",
                            phase.name
                        ),
                        Some(format!(
                            "a service IP lives on one host at a time: \"{holder}\" must release it in this phase{since}: set state: absent on \"{holder}\", or remove it from \"{taker}\""
                        )),
                    )
                }
                Some(_) => {}
                None => {
                    holders.insert(ip, (host.as_str(), i));
                }
            }
        }
    }
}

/// The ports an agent keeps by default (SSH, its API) that `f` closes to
/// every source, as the manifest alone shows it: the first rule for
/// tcp/PORT decides, an accept (from any sources) keeps the port, a drop
/// or reject without sources closes it, and no rule leaves it to the
/// policy. Which admin ranges a narrower rule set still cuts off is the
/// agent's to judge (its `admin_sources`).
fn blocked_from_everywhere(f: &raw::Firewall) -> Vec<(u16, &'static str)> {
    const KEPT: [(u16, &str); 2] = [(22, "SSH"), (7443, "the mailctl agent API")];
    KEPT.into_iter()
        .filter(|(port, _)| {
            let decided = f.rules.iter().find_map(|r| {
                let matches =
                    r.protocol == raw::Protocol::Tcp && r.ports.contains(&i64::from(*port));
                match r.action {
                    _ if !matches => None,
                    raw::RuleAction::Accept => Some(false),
                    _ if r.sources.is_empty() => Some(true),
                    _ => None,
                }
            });
            decided.unwrap_or(f.policy == raw::FirewallPolicy::Drop)
        })
        .collect()
}
