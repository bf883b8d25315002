//! Firewall: the one `inet` table mailctl owns.
//!
//! The table holds a single base chain, `input` (`type filter hook input
//! priority 0`, policy from the manifest), with one rule per manifest rule
//! (two when its sources mix IPv4 and IPv6), named by the rule's comment. The
//! table is always written whole in one nft transaction; other tables are
//! never read beyond their names, nor written.
//!
//! A rule set that leaves no source able to reach SSH or the agent's own API
//! port is refused unless the manifest says `allowLockout: true`: after such
//! an apply, nobody could log in or tell the agent to undo it.

mod nft;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::process::Stdio;

use mailctl_schemas::model::{Firewall, FirewallPolicy, Protocol, RuleAction};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use self::nft::{INPUT_CHAIN, ObservedChain, ObservedRule, Sources, policy_name};
pub use self::nft::{NftRule, ObservedTable, RuleSet};
use crate::driver::{Driver, Effect, Resource, ResourceChange};
use crate::error::Error;
use crate::intervals::IntervalSet;

/// A port that must stay reachable unless the manifest allows a lockout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtectedPort {
    pub port: u16,
    /// What listens there, for the refusal message (`SSH`).
    pub service: &'static str,
}

/// Converges the owned table by running `nft`.
#[derive(Debug, Clone)]
pub struct FirewallDriver {
    nft: PathBuf,
    protected: Vec<ProtectedPort>,
}

impl FirewallDriver {
    /// `nft` is the program to run (a name looked up in `PATH`, or a path).
    pub fn new(nft: impl Into<PathBuf>, protected: Vec<ProtectedPort>) -> Self {
        FirewallDriver {
            nft: nft.into(),
            protected,
        }
    }

    /// Runs nft with `args`, feeding `input` on stdin, and returns stdout.
    async fn nft(
        &self,
        table: &str,
        args: &[&str],
        input: Option<String>,
    ) -> Result<String, Error> {
        let command = format!("{} {}", self.nft.display(), args.join(" "));
        let spawn_error = |source| Error::NftSpawn {
            table: table.to_owned(),
            command: command.clone(),
            source,
        };
        let mut child = tokio::process::Command::new(&self.nft)
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn_error)?;
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin
                .write_all(input.as_bytes())
                .await
                .map_err(spawn_error)?;
        }
        let output = child.wait_with_output().await.map_err(spawn_error)?;
        if !output.status.success() {
            return Err(Error::NftFailed {
                table: table.to_owned(),
                command,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        String::from_utf8(output.stdout).map_err(|err| Error::NftOutput {
            table: table.to_owned(),
            command,
            detail: err.to_string(),
        })
    }

    async fn nft_json(&self, table: &str, args: &[&str]) -> Result<Value, Error> {
        let text = self.nft(table, args, None).await?;
        serde_json::from_str(&text).map_err(|err| Error::NftOutput {
            table: table.to_owned(),
            command: format!("{} {}", self.nft.display(), args.join(" ")),
            detail: err.to_string(),
        })
    }
}

/// The planned change of the owned table. Either way it is applied by
/// writing the whole table in one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirewallChange {
    /// The table does not exist yet.
    Create { table: String, desired: RuleSet },
    /// The table exists with other content.
    Replace {
        table: String,
        /// Rules in the table now, in all its chains.
        from_rules: usize,
        details: Vec<TableDifference>,
        desired: RuleSet,
    },
}

/// One way the table differs from the manifest, for the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableDifference {
    Policy {
        from: Option<FirewallPolicy>,
        to: FirewallPolicy,
    },
    AddRule(NftRule),
    RemoveRule(String),
    ChangeRule {
        from: Vec<String>,
        to: Vec<NftRule>,
    },
    Reorder {
        from: Vec<String>,
        to: Vec<String>,
    },
    /// Chains, sets and other objects mailctl does not write; they go.
    Remove(String),
    /// The rules a `policy: drop` chain starts with (loopback, replies, ICMP).
    Essentials {
        present: bool,
    },
}

impl ResourceChange for FirewallChange {
    type Subject = String;

    fn subject(&self) -> String {
        match self {
            FirewallChange::Create { table, .. } | FirewallChange::Replace { table, .. } => {
                table.clone()
            }
        }
    }
}

fn rules_text(n: usize) -> String {
    if n == 1 {
        "1 rule".to_owned()
    } else {
        format!("{n} rules")
    }
}

impl fmt::Display for FirewallChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FirewallChange::Create { table, desired } => {
                write!(
                    f,
                    "+ firewall table inet {table}: policy {}, {}",
                    policy_name(desired.policy),
                    rules_text(desired.rules.len())
                )?;
                for rule in &desired.rules {
                    write!(f, "\n    + {rule}")?;
                }
                Ok(())
            }
            FirewallChange::Replace {
                table,
                from_rules,
                details,
                desired,
            } => {
                write!(f, "~ firewall table inet {table}: ")?;
                if *from_rules == desired.rules.len() {
                    write!(f, "{}", rules_text(*from_rules))?;
                } else {
                    write!(
                        f,
                        "{} -> {}",
                        rules_text(*from_rules),
                        rules_text(desired.rules.len())
                    )?;
                }
                for detail in details {
                    write!(f, "\n    {detail}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for TableDifference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableDifference::Policy { from, to } => write!(
                f,
                "~ policy {} -> {}",
                from.map(policy_name).unwrap_or("none"),
                policy_name(*to)
            ),
            TableDifference::AddRule(rule) => write!(f, "+ {rule}"),
            TableDifference::RemoveRule(rule) => write!(f, "- {rule}"),
            TableDifference::ChangeRule { from, to } => {
                let to: Vec<String> = to.iter().map(ToString::to_string).collect();
                write!(f, "~ {} -> {}", from.join(" + "), to.join(" + "))
            }
            TableDifference::Reorder { from, to } => {
                write!(f, "~ rule order {} -> {}", from.join(", "), to.join(", "))
            }
            TableDifference::Remove(what) => write!(f, "- {what}"),
            TableDifference::Essentials { present: true } => f.write_str(
                "+ accept loopback, replies to this host's own connections, and ICMP (policy drop)",
            ),
            TableDifference::Essentials { present: false } => {
                f.write_str("- the loopback/replies/ICMP rules of a policy-drop chain")
            }
        }
    }
}

/// Errors when, under `rules`, no source can reach one of the protected
/// TCP ports. Rules are walked as the kernel does: the first matching rule
/// decides, and a drop or reject only takes the sources it matches out of the
/// running.
fn refuse_lockout(table: &str, rules: &RuleSet, protected: &[ProtectedPort]) -> Result<(), Error> {
    for protected in protected {
        if !reachable(rules, protected.port) {
            return Err(Error::Lockout {
                table: table.to_owned(),
                port: protected.port,
                service: protected.service,
            });
        }
    }
    Ok(())
}

fn reachable(rules: &RuleSet, port: u16) -> bool {
    let mut v4 = IntervalSet::<u32>::full();
    let mut v6 = IntervalSet::<u128>::full();
    for rule in &rules.rules {
        if rule.protocol != Protocol::Tcp || !rule.ports.contains(port) {
            continue;
        }
        let (match_v4, match_v6) = match &rule.sources {
            Sources::Any => (IntervalSet::full(), IntervalSet::full()),
            Sources::V4(set) => (set.clone(), IntervalSet::empty()),
            Sources::V6(set) => (IntervalSet::empty(), set.clone()),
        };
        match rule.action {
            RuleAction::Accept => {
                if match_v4.intersects(&v4) || match_v6.intersects(&v6) {
                    return true;
                }
            }
            RuleAction::Drop | RuleAction::Reject => {
                v4 = v4.minus(&match_v4);
                v6 = v6.minus(&match_v6);
            }
        }
    }
    rules.policy == FirewallPolicy::Accept && !(v4.is_empty() && v6.is_empty())
}

/// The change that makes `observed` into `desired`, if any.
fn diff_table(
    table: &str,
    desired: &RuleSet,
    observed: Option<&ObservedTable>,
) -> Option<FirewallChange> {
    let Some(observed) = observed else {
        return Some(FirewallChange::Create {
            table: table.to_owned(),
            desired: desired.clone(),
        });
    };
    let mut details = Vec::new();
    for thing in &observed.other {
        details.push(TableDifference::Remove(thing.clone()));
    }
    let mut input: Option<&ObservedChain> = None;
    for chain in &observed.chains {
        if chain.name == INPUT_CHAIN && chain.filter_input_at_0 && input.is_none() {
            input = Some(chain);
        } else {
            details.push(TableDifference::Remove(format!(
                "chain {} ({})",
                chain.name,
                rules_text(chain.rules.len())
            )));
        }
    }
    let from_rules = observed.chains.iter().map(|c| c.rules.len()).sum();
    let (policy, rules, essentials): (Option<FirewallPolicy>, &[ObservedRule], &[String]) =
        match input {
            Some(chain) => (chain.policy, &chain.rules, &chain.essentials),
            None => (None, &[], &[]),
        };
    let want_essentials = desired.policy == FirewallPolicy::Drop;
    let has_essentials = essentials == nft::ESSENTIAL_RULES.as_slice();
    if want_essentials != has_essentials {
        details.push(TableDifference::Essentials {
            present: want_essentials,
        });
    }
    if policy != Some(desired.policy) {
        details.push(TableDifference::Policy {
            from: policy,
            to: desired.policy,
        });
    }
    details.extend(rule_differences(rules, &desired.rules));
    if details.is_empty() {
        return None;
    }
    Some(FirewallChange::Replace {
        table: table.to_owned(),
        from_rules,
        details,
        desired: desired.clone(),
    })
}

/// Rule differences by name, in the manifest's order.
fn rule_differences(observed: &[ObservedRule], desired: &[NftRule]) -> Vec<TableDifference> {
    let observed_name = |rule: &ObservedRule| match rule {
        ObservedRule::Known(rule) => Some(rule.name.clone()),
        ObservedRule::Foreign(_) => None,
    };
    let mut details = Vec::new();
    let mut desired_names: Vec<&str> = Vec::new();
    for rule in desired {
        if !desired_names.contains(&rule.name.as_str()) {
            desired_names.push(&rule.name);
        }
    }
    for name in &desired_names {
        let want: Vec<NftRule> = desired
            .iter()
            .filter(|r| r.name == *name)
            .cloned()
            .collect();
        let have: Vec<&ObservedRule> = observed
            .iter()
            .filter(|r| observed_name(r).as_deref() == Some(name))
            .collect();
        let same = have.len() == want.len()
            && have
                .iter()
                .zip(&want)
                .all(|(h, w)| matches!(h, ObservedRule::Known(h) if h == w));
        if have.is_empty() {
            details.extend(want.into_iter().map(TableDifference::AddRule));
        } else if !same {
            details.push(TableDifference::ChangeRule {
                from: have.iter().map(ToString::to_string).collect(),
                to: want,
            });
        }
    }
    for rule in observed {
        let undeclared = match observed_name(rule) {
            Some(name) => !desired_names.contains(&name.as_str()),
            None => true,
        };
        if undeclared {
            details.push(TableDifference::RemoveRule(rule.to_string()));
        }
    }
    if details.is_empty() {
        let order: Vec<String> = observed.iter().filter_map(observed_name).collect();
        let wanted: Vec<String> = desired.iter().map(|r| r.name.clone()).collect();
        if order != wanted {
            details.push(TableDifference::Reorder {
                from: order,
                to: wanted,
            });
        }
    }
    details
}

impl Driver for FirewallDriver {
    type Desired = Firewall;
    type Observed = Option<ObservedTable>;
    type Change = FirewallChange;

    fn resource(&self, desired: &Firewall) -> Resource {
        Resource::Firewall {
            table: desired.table.clone(),
        }
    }

    async fn observe(&self, desired: &Firewall) -> Result<Option<ObservedTable>, Error> {
        let table = desired.table.as_str();
        // Listing the names first tells "no such table" apart from a failure
        // without parsing nft's error text.
        let tables = self
            .nft_json(table, &["-j", "list", "tables", "inet"])
            .await?;
        let names = nft::table_names(&tables).map_err(|detail| Error::NftOutput {
            table: table.to_owned(),
            command: "nft -j list tables inet".into(),
            detail,
        })?;
        if !names.iter().any(|name| name == table) {
            return Ok(None);
        }
        let listing = self
            .nft_json(table, &["-j", "list", "table", "inet", table])
            .await?;
        nft::parse_table(&listing)
            .map(Some)
            .map_err(|detail| Error::NftOutput {
                table: table.to_owned(),
                command: format!("nft -j list table inet {table}"),
                detail,
            })
    }

    fn diff(
        &self,
        desired: &Firewall,
        observed: &Option<ObservedTable>,
    ) -> Result<Vec<FirewallChange>, Error> {
        let rules = RuleSet::from_model(desired);
        if !desired.allow_lockout {
            refuse_lockout(&desired.table, &rules, &self.protected)?;
        }
        Ok(diff_table(&desired.table, &rules, observed.as_ref())
            .into_iter()
            .collect())
    }

    async fn apply(&self, changes: &[FirewallChange]) -> Result<Vec<Effect>, Error> {
        for change in changes {
            let (FirewallChange::Create { table, desired }
            | FirewallChange::Replace { table, desired, .. }) = change;
            let script = desired.replace_script(table).to_string();
            self.nft(table, &["-j", "-f", "-"], Some(script)).await?;
        }
        Ok(Vec::new())
    }
}
