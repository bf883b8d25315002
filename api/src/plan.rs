//! `GET /v1/plan`: what converging the state in force would change, as
//! data. The agent's plan lines (`+ add`, `- remove`, `~ modify`, indented
//! details) are kept as written, so a client renders them as
//! `mailctl plan` does.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The plan of the state in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The generation planned for.
    pub generation: u64,
    pub resources: Vec<PlannedResource>,
}

/// One resource: its changes, or why they could not be worked out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedResource {
    /// As the agent names it: `addresses`, `file /etc/postfix/main.cf`, ...
    pub resource: String,
    pub changes: Vec<PlannedChange>,
    /// Why the resource could not be planned (the host as it is, a
    /// missing interface, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedChange {
    pub action: Action,
    /// The plan line, with its `+`/`-`/`~` sign.
    pub summary: String,
    /// Indented lines under it (a diff, the rules of a chain).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Action {
    Add,
    Remove,
    Modify,
}

impl PlannedChange {
    /// Reads a change as the agent prints it: the first line is the
    /// summary, its sign the action; the other lines are details.
    pub fn from_text(text: &str) -> PlannedChange {
        let mut lines = text.lines();
        let summary = lines.next().unwrap_or_default().to_owned();
        let action = match summary.chars().next() {
            Some('+') => Action::Add,
            Some('-') => Action::Remove,
            _ => Action::Modify,
        };
        PlannedChange {
            action,
            summary,
            details: lines.map(str::to_owned).collect(),
        }
    }
}

impl Plan {
    /// Whether converging would change anything (or could not be planned).
    pub fn has_changes(&self) -> bool {
        self.resources
            .iter()
            .any(|r| !r.changes.is_empty() || r.error.is_some())
    }
}

impl fmt::Display for PlannedResource {
    /// As `mailctl plan` prints it: `= resource: up to date`, the changes,
    /// or `! error`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(error) = &self.error {
            return write!(f, "! {error}");
        }
        if self.changes.is_empty() {
            return write!(f, "= {}: up to date", self.resource);
        }
        let mut first = true;
        for change in &self.changes {
            if !first {
                f.write_str("\n")?;
            }
            first = false;
            f.write_str(&change.summary)?;
            for detail in &change.details {
                write!(f, "\n{detail}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.resources.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_line_reads_back_as_printed() {
        let text = "~ file /etc/postfix/main.cf: content\n  -a\n  +b";
        let change = PlannedChange::from_text(text);
        assert_eq!(change.action, Action::Modify);
        assert_eq!(change.details, vec!["  -a", "  +b"]);
        let resource = PlannedResource {
            resource: "file /etc/postfix/main.cf".into(),
            changes: vec![
                change,
                PlannedChange::from_text("+ address 192.0.2.1/24 on eth0"),
            ],
            error: None,
        };
        assert_eq!(
            resource.to_string(),
            format!("{text}\n+ address 192.0.2.1/24 on eth0")
        );
        assert_eq!(resource.changes[1].action, Action::Add);
    }
}
