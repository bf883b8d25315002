//! Firewall: the one `inet` table mailctl owns.
//!
//! The table holds a single base chain, `input` (`type filter hook input
//! priority 0`, policy from the manifest), with one rule per manifest rule
//! (two when its sources mix IPv4 and IPv6), named by the rule's comment. The
//! table is always written whole in one nft transaction, in nft's text
//! syntax; it is read with one `nft -n list table`. Other tables are never
//! read nor written.
//!
//! A rule set that cuts the controller or an admin range off SSH or the
//! agent's own API port is refused unless the manifest says `allowLockout:
//! true`: after such an apply, nobody could log in or tell the agent to undo
//! it ([`lockout`] says who counts and how a rule set is judged).

mod lockout;
mod nft;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::PathBuf;
use std::process::Stdio;

use mailctl_schemas::model::{Firewall, FirewallPolicy};
use nix::sys::memfd::{MFdFlags, memfd_create};

pub use self::lockout::{Blocked, LockoutGuard, ProtectedPort, describe as describe_blocked};
/// Public only for the fuzz target `fuzz/fuzz_targets/nft_listing.rs`.
#[doc(hidden)]
pub use self::nft::parse_table;
use self::nft::{BadName, INPUT_CHAIN, ObservedChain, ObservedRule, policy_name};
pub use self::nft::{NftRule, ObservedTable, RuleSet};
use crate::driver::{Driver, Effect, Resource, ResourceChange};

/// What nft says (strerror of ENOENT) when asked to list a table that does
/// not exist. nft runs with `LC_ALL=C`, so the text does not depend on the
/// host's locale.
const NO_SUCH_TABLE: &str = "No such file or directory";

/// Converges the owned table by running `nft`.
#[derive(Debug, Clone)]
pub struct FirewallDriver {
    nft: PathBuf,
    guard: LockoutGuard,
}

impl FirewallDriver {
    /// `nft` is the program to run (a name looked up in `PATH`, or a path);
    /// `guard` the sources and ports a rule set must not cut off.
    pub fn new(nft: impl Into<PathBuf>, guard: LockoutGuard) -> Self {
        FirewallDriver {
            nft: nft.into(),
            guard,
        }
    }

    /// Runs nft with `args`, feeding `input` on stdin, and returns stdout.
    ///
    /// nft's three streams are files in memory, not pipes: nft flushes after
    /// every fragment it prints (some 6,500 writes for a 500-rule listing),
    /// and through a pipe each of them would wake this process. The output is
    /// read once nft has exited.
    async fn nft(
        &self,
        table: &str,
        args: &[&str],
        input: Option<String>,
    ) -> Result<String, FirewallError> {
        let command = format!("{} {}", self.nft.display(), args.join(" "));
        let spawn_error = |source| FirewallError::NftSpawn {
            table: table.to_owned(),
            command: command.clone(),
            source,
        };
        let stdin = match input {
            Some(script) => {
                let mut file = memory_file("nft-input").map_err(spawn_error)?;
                file.write_all(script.as_bytes())
                    .and_then(|()| file.rewind())
                    .map_err(spawn_error)?;
                Stdio::from(file)
            }
            None => Stdio::null(),
        };
        let mut stdout = memory_file("nft-stdout").map_err(spawn_error)?;
        let mut stderr = memory_file("nft-stderr").map_err(spawn_error)?;
        let mut child = tokio::process::Command::new(&self.nft)
            .args(args)
            .env("LC_ALL", "C")
            .stdin(stdin)
            .stdout(stdout.try_clone().map_err(spawn_error)?)
            .stderr(stderr.try_clone().map_err(spawn_error)?)
            .kill_on_drop(true)
            .spawn()
            .map_err(spawn_error)?;
        let status = child.wait().await.map_err(spawn_error)?;
        let read = |file: &mut File| -> io::Result<Vec<u8>> {
            let mut bytes = Vec::new();
            file.rewind()?;
            file.read_to_end(&mut bytes)?;
            Ok(bytes)
        };
        if !status.success() {
            let stderr = read(&mut stderr).map_err(spawn_error)?;
            return Err(FirewallError::NftFailed {
                table: table.to_owned(),
                command,
                stderr: String::from_utf8_lossy(&stderr).trim().to_owned(),
            });
        }
        let stdout = read(&mut stdout).map_err(spawn_error)?;
        String::from_utf8(stdout).map_err(|err| FirewallError::NftOutput {
            table: table.to_owned(),
            command,
            detail: err.to_string(),
        })
    }
}

/// An anonymous file in memory (`memfd_create`), closed on exec; a child
/// gets it as one of its standard streams.
fn memory_file(name: &str) -> io::Result<File> {
    let fd = memfd_create(name, MFdFlags::MFD_CLOEXEC).map_err(io::Error::from)?;
    Ok(File::from(fd))
}

/// Refuses a table or rule name that cannot go into nft's syntax as it is.
fn check_names<'a>(
    table: &str,
    rule_names: impl IntoIterator<Item = &'a str>,
) -> Result<(), FirewallError> {
    nft::check_names(table, rule_names).map_err(|BadName { what, name }| FirewallError::NftName {
        table: table.to_owned(),
        what,
        name,
    })
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

/// Errors when `rules` cut a guarded source off a protected port, naming
/// every such (port, source) at once.
fn refuse_lockout(table: &str, rules: &RuleSet, guard: &LockoutGuard) -> Result<(), FirewallError> {
    let blocked = guard.blocked(rules);
    if blocked.is_empty() {
        Ok(())
    } else {
        Err(FirewallError::Lockout {
            table: table.to_owned(),
            blocked,
        })
    }
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
    fn observed_name(rule: &ObservedRule) -> Option<&str> {
        match rule {
            ObservedRule::Known(rule) => Some(rule.name.as_str()),
            ObservedRule::Foreign(_) => None,
        }
    }
    // Both sides by name, each name's rules in their order.
    let mut have: HashMap<&str, Vec<&ObservedRule>> = HashMap::with_capacity(observed.len());
    for rule in observed {
        if let Some(name) = observed_name(rule) {
            have.entry(name).or_default().push(rule);
        }
    }
    let mut want: HashMap<&str, Vec<&NftRule>> = HashMap::with_capacity(desired.len());
    let mut desired_names: Vec<&str> = Vec::with_capacity(desired.len());
    for rule in desired {
        want.entry(rule.name.as_str())
            .or_insert_with(|| {
                desired_names.push(&rule.name);
                Vec::new()
            })
            .push(rule);
    }
    let mut details = Vec::new();
    for name in &desired_names {
        let want = &want[name];
        let have = have.get(name).map_or(&[][..], Vec::as_slice);
        let same = have.len() == want.len()
            && have
                .iter()
                .zip(want)
                .all(|(h, w)| matches!(h, ObservedRule::Known(h) if h == *w));
        if have.is_empty() {
            details.extend(
                want.iter()
                    .map(|&rule| TableDifference::AddRule(rule.clone())),
            );
        } else if !same {
            details.push(TableDifference::ChangeRule {
                from: have.iter().map(ToString::to_string).collect(),
                to: want.iter().map(|&rule| rule.clone()).collect(),
            });
        }
    }
    for rule in observed {
        let undeclared = observed_name(rule).is_none_or(|name| !want.contains_key(name));
        if undeclared {
            details.push(TableDifference::RemoveRule(rule.to_string()));
        }
    }
    if details.is_empty() {
        // Same rules by name: the order is the only difference left.
        let order = observed.iter().filter_map(observed_name);
        let wanted = desired.iter().map(|r| r.name.as_str());
        if !order.clone().eq(wanted.clone()) {
            details.push(TableDifference::Reorder {
                from: order.map(str::to_owned).collect(),
                to: wanted.map(str::to_owned).collect(),
            });
        }
    }
    details
}

impl Driver for FirewallDriver {
    type Desired = Firewall;
    type Observed = Option<ObservedTable>;
    type Change = FirewallChange;
    type Error = FirewallError;

    fn resource(&self, desired: &Firewall) -> Resource {
        Resource::Firewall {
            table: desired.table.clone(),
        }
    }

    async fn observe(&self, desired: &Firewall) -> Result<Option<ObservedTable>, FirewallError> {
        let table = desired.table.as_str();
        // The name goes onto nft's command line, which nft parses as a
        // command: check it first.
        check_names(table, [])?;
        let args = ["-n", "list", "table", "inet", table];
        let listing = match self.nft(table, &args, None).await {
            Ok(listing) => listing,
            Err(FirewallError::NftFailed { stderr, .. }) if stderr.contains(NO_SUCH_TABLE) => {
                return Ok(None);
            }
            Err(err) => return Err(err),
        };
        nft::parse_table(&listing)
            .map(Some)
            .map_err(|detail| FirewallError::NftOutput {
                table: table.to_owned(),
                command: format!("{} {}", self.nft.display(), args.join(" ")),
                detail,
            })
    }

    fn diff(
        &self,
        desired: &Firewall,
        observed: &Option<ObservedTable>,
    ) -> Result<Vec<FirewallChange>, FirewallError> {
        check_names(
            &desired.table,
            desired.rules.iter().map(|rule| rule.name.as_str()),
        )?;
        let rules = RuleSet::from_model(desired);
        if !desired.allow_lockout {
            refuse_lockout(&desired.table, &rules, &self.guard)?;
        }
        Ok(diff_table(&desired.table, &rules, observed.as_ref())
            .into_iter()
            .collect())
    }

    async fn apply(&self, changes: &[FirewallChange]) -> Result<Vec<Effect>, FirewallError> {
        for change in changes {
            let (FirewallChange::Create { table, desired }
            | FirewallChange::Replace { table, desired, .. }) = change;
            check_names(table, desired.rules.iter().map(|rule| rule.name.as_str()))?;
            let script = desired.replace_script(table);
            self.nft(table, &["-f", "-"], Some(script)).await?;
        }
        Ok(Vec::new())
    }
}

/// What can go wrong converging the owned table. Every message names the
/// table.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error(
        "firewall table inet {table}: refusing a rule set that blocks {}; accept those ports from those sources, set admin_sources in agent.toml to the ranges the controller and admins connect from, or set `allowLockout: true`",
        describe_blocked(blocked)
    )]
    Lockout {
        table: String,
        /// Every protected port and guarded source the rule set cuts off.
        blocked: Vec<crate::firewall::Blocked>,
    },
    #[error(
        "firewall table inet {table}: the {what} \"{name}\" cannot be written in nft's syntax; use letters, digits, '-', '_', '.' and '@' (a table name: letters, digits, '-' and '_', starting with a letter)"
    )]
    NftName {
        table: String,
        what: &'static str,
        name: String,
    },
    #[error("firewall table inet {table}: cannot run `{command}`")]
    NftSpawn {
        table: String,
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("firewall table inet {table}: `{command}` failed: {stderr}")]
    NftFailed {
        table: String,
        command: String,
        stderr: String,
    },
    #[error("firewall table inet {table}: cannot read the output of `{command}`: {detail}")]
    NftOutput {
        table: String,
        command: String,
        detail: String,
    },
}

impl FirewallError {
    /// Whether trying again, with the host as it is, can help: a rule set
    /// that would lock the admins out, or a name nft cannot carry, is
    /// refused the same way until the manifest changes.
    pub fn retry_can_help(&self) -> bool {
        !matches!(
            self,
            FirewallError::Lockout { .. } | FirewallError::NftName { .. }
        )
    }
}
