//! Addresses: the IPs a host manifest declares, on the interfaces it names.
//!
//! Ownership (DESIGN.md §2): only the declared addresses are touched. A
//! `present` address is added when missing; an `absent` one is removed when
//! found; any other address on the interface is left alone, and so is the same
//! IP on an interface the manifest does not name. An address is identified by
//! its IP and interface, so a declared IP that exists with another prefix
//! length or label is replaced rather than added next to it.
//!
//! Removing a primary IPv4 address makes the kernel remove the secondary
//! addresses of its subnet too, unless `promote_secondaries` is set; the diff
//! refuses such a removal when it would take unlisted addresses with it.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use futures::TryStreamExt;
use ipnet::{IpNet, Ipv4Net};
use mailctl_schemas::model::{Presence, ServiceAddress};
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use rtnetlink::packet_route::link::{
    AfSpecInet, AfSpecUnspec, LinkAttribute, LinkFlags, LinkLayerType, LinkMessage,
};
use rtnetlink::{AddressMessageBuilder, Handle};

use crate::announce::{self, Announcer};
use crate::driver::{Announcement, Driver, Effect, Resource, ResourceChange};

const EEXIST: i32 = 17;
const EADDRNOTAVAIL: i32 = 99;
/// How often the DAD state of a new IPv6 address is read while waiting.
const DAD_POLL: Duration = Duration::from_millis(50);

/// Converges the declared addresses over rtnetlink.
#[derive(Debug, Clone)]
pub struct AddressDriver {
    handle: Handle,
    dad_timeout: Duration,
}

impl AddressDriver {
    /// `dad_timeout` bounds the wait for IPv6 duplicate address detection
    /// before an added address is announced.
    pub fn new(handle: Handle, dad_timeout: Duration) -> Self {
        AddressDriver {
            handle,
            dad_timeout,
        }
    }
}

/// One planned address change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressChange {
    /// Add the address; `label` only when the manifest sets one (otherwise
    /// the kernel labels it with the interface name).
    Add {
        address: IpNet,
        interface: String,
        label: Option<String>,
        /// A service IP: an IPv4 one is probed for first (ARP, RFC 5227)
        /// and not added while another machine answers for it.
        exclusive: bool,
    },
    /// Remove the address (as found on the host).
    Remove { address: IpNet, interface: String },
    /// The IP is there, but not as declared: remove it and add it again.
    Replace {
        interface: String,
        from: IpNet,
        from_label: Option<String>,
        to: IpNet,
        to_label: Option<String>,
        /// The kernel marked the address as a duplicate; adding it again
        /// retries duplicate address detection.
        dad_failed: bool,
    },
}

impl ResourceChange for AddressChange {
    type Subject = (String, IpAddr);

    fn subject(&self) -> Self::Subject {
        match self {
            AddressChange::Add {
                address, interface, ..
            }
            | AddressChange::Remove { address, interface } => (interface.clone(), address.addr()),
            AddressChange::Replace { interface, to, .. } => (interface.clone(), to.addr()),
        }
    }
}

impl fmt::Display for AddressChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressChange::Add {
                address,
                interface,
                label,
                ..
            } => {
                write!(f, "+ address {address} on {interface}")?;
                if let Some(label) = label {
                    write!(f, " (label {label})")?;
                }
                Ok(())
            }
            AddressChange::Remove { address, interface } => {
                write!(f, "- address {address} on {interface}")
            }
            AddressChange::Replace {
                interface,
                from,
                from_label,
                to,
                to_label,
                dad_failed,
            } => {
                write!(f, "~ address {to} on {interface}: ")?;
                let mut what = Vec::new();
                if *dad_failed {
                    what.push("duplicate address detection failed, add again".to_owned());
                }
                if from.prefix_len() != to.prefix_len() {
                    what.push(format!(
                        "prefix /{} -> /{}",
                        from.prefix_len(),
                        to.prefix_len()
                    ));
                }
                if from_label != to_label {
                    let show = |label: &Option<String>| label.clone().unwrap_or("none".into());
                    what.push(format!("label {} -> {}", show(from_label), show(to_label)));
                }
                f.write_str(&what.join(", "))
            }
        }
    }
}

/// The declared interfaces and the addresses they carry.
#[derive(Debug, Clone, Default)]
pub struct ObservedAddresses {
    links: BTreeMap<String, Link>,
    addresses: Vec<ObservedAddress>,
}

/// What the agent needs to know about an interface.
#[derive(Debug, Clone)]
struct Link {
    index: u32,
    mac: Option<[u8; 6]>,
    up: bool,
    noarp: bool,
    promote_secondaries: bool,
}

#[derive(Debug, Clone)]
struct ObservedAddress {
    interface: String,
    address: IpNet,
    /// IPv4 only; the kernel's default label is the interface name.
    label: Option<String>,
    secondary: bool,
    tentative: bool,
    dad_failed: bool,
}

/// The label an IPv4 address must carry: the declared one, or the kernel's
/// default (the interface name). IPv6 addresses have none.
fn wanted_label(declared: &ServiceAddress) -> Option<String> {
    match declared.address {
        IpNet::V4(_) => Some(
            declared
                .label
                .clone()
                .unwrap_or_else(|| declared.interface.clone()),
        ),
        IpNet::V6(_) => None,
    }
}

fn diff(
    desired: &[ServiceAddress],
    observed: &ObservedAddresses,
) -> Result<Vec<AddressChange>, AddressError> {
    // The observed addresses by interface and IP, each key's in the order
    // the kernel listed them.
    let mut by_ip: HashMap<(&str, IpAddr), Vec<&ObservedAddress>> =
        HashMap::with_capacity(observed.addresses.len());
    for o in &observed.addresses {
        by_ip
            .entry((o.interface.as_str(), o.address.addr()))
            .or_default()
            .push(o);
    }
    let mut changes = Vec::new();
    for declared in desired {
        let same_ip = by_ip
            .get(&(declared.interface.as_str(), declared.address.addr()))
            .map_or(&[][..], Vec::as_slice);
        match declared.state {
            Presence::Present => {
                if !observed.links.contains_key(&declared.interface) {
                    return Err(AddressError::NoSuchInterface {
                        address: declared.address,
                        interface: declared.interface.clone(),
                    });
                }
                let label = wanted_label(declared);
                let found = same_ip
                    .iter()
                    .find(|o| o.address.prefix_len() == declared.address.prefix_len())
                    .or(same_ip.first());
                match found {
                    None => changes.push(AddressChange::Add {
                        address: declared.address,
                        interface: declared.interface.clone(),
                        label: declared.label.clone(),
                        exclusive: declared.exclusive,
                    }),
                    Some(o)
                        if o.address.prefix_len() == declared.address.prefix_len()
                            && o.label == label
                            && !o.dad_failed => {}
                    Some(o) => changes.push(AddressChange::Replace {
                        interface: declared.interface.clone(),
                        from: o.address,
                        from_label: o.label.clone(),
                        to: declared.address,
                        to_label: label,
                        dad_failed: o.dad_failed,
                    }),
                }
            }
            Presence::Absent => {
                for o in same_ip {
                    changes.push(AddressChange::Remove {
                        address: o.address,
                        interface: o.interface.clone(),
                    });
                }
            }
        }
    }
    refuse_collateral_removals(&changes, observed)?;
    Ok(changes)
}

/// Errors when removing a primary IPv4 address would make the kernel drop
/// secondary addresses that the plan does not remove itself.
fn refuse_collateral_removals(
    changes: &[AddressChange],
    observed: &ObservedAddresses,
) -> Result<(), AddressError> {
    let removed: Vec<(&str, IpNet)> = changes
        .iter()
        .filter_map(|change| match change {
            AddressChange::Remove { address, interface } => Some((interface.as_str(), *address)),
            AddressChange::Replace {
                interface, from, ..
            } => Some((interface.as_str(), *from)),
            AddressChange::Add { .. } => None,
        })
        .collect();
    if removed.is_empty() {
        return Ok(());
    }
    let removed_set: HashSet<(&str, IpNet)> = removed.iter().copied().collect();
    // Primary IPv4 addresses, and the secondaries of each interface and
    // subnet, in the kernel's order.
    let mut primaries: HashSet<(&str, IpNet)> = HashSet::new();
    let mut secondaries: HashMap<(&str, Ipv4Net), Vec<IpNet>> = HashMap::new();
    for o in &observed.addresses {
        let IpNet::V4(v4) = o.address else { continue };
        if o.secondary {
            secondaries
                .entry((o.interface.as_str(), v4.trunc()))
                .or_default()
                .push(o.address);
        } else {
            primaries.insert((o.interface.as_str(), o.address));
        }
    }
    for &(interface, address) in &removed {
        let IpNet::V4(v4) = address else { continue };
        let promotes = observed
            .links
            .get(interface)
            .is_some_and(|link| link.promote_secondaries);
        if promotes || !primaries.contains(&(interface, address)) {
            continue;
        }
        let taken: Vec<IpNet> = secondaries
            .get(&(interface, v4.trunc()))
            .into_iter()
            .flatten()
            .copied()
            .filter(|other| !removed_set.contains(&(interface, *other)))
            .collect();
        if !taken.is_empty() {
            return Err(AddressError::WouldRemoveSecondaries {
                address,
                interface: interface.to_owned(),
                secondaries: taken,
            });
        }
    }
    Ok(())
}

impl Driver for AddressDriver {
    type Desired = [ServiceAddress];
    type Observed = ObservedAddresses;
    type Change = AddressChange;
    type Error = AddressError;

    fn resource(&self, _desired: &Self::Desired) -> Resource {
        Resource::Addresses
    }

    async fn observe(&self, desired: &Self::Desired) -> Result<ObservedAddresses, AddressError> {
        let names: BTreeSet<&str> = desired.iter().map(|a| a.interface.as_str()).collect();
        let links = self.links(&names).await?;
        let addresses = self.addresses(&links).await?;
        Ok(ObservedAddresses { links, addresses })
    }

    fn diff(
        &self,
        desired: &Self::Desired,
        observed: &ObservedAddresses,
    ) -> Result<Vec<AddressChange>, AddressError> {
        diff(desired, observed)
    }

    async fn apply(&self, changes: &[AddressChange]) -> Result<Vec<Effect>, AddressError> {
        let names: BTreeSet<&str> = changes
            .iter()
            .map(|change| match change {
                AddressChange::Add { interface, .. }
                | AddressChange::Remove { interface, .. }
                | AddressChange::Replace { interface, .. } => interface.as_str(),
            })
            .collect();
        let links = self.links(&names).await?;
        let link = |interface: &str, address: IpNet| {
            links
                .get(interface)
                .ok_or_else(|| AddressError::NoSuchInterface {
                    address,
                    interface: interface.to_owned(),
                })
        };

        // Break before make: removals first, so a replaced address is never
        // present twice.
        for change in changes {
            match change {
                AddressChange::Remove { address, interface }
                | AddressChange::Replace {
                    interface,
                    from: address,
                    ..
                } => {
                    self.remove(link(interface, *address)?, interface, *address)
                        .await?
                }
                AddressChange::Add { .. } => {}
            }
        }

        let mut effects = Vec::new();
        let mut waiting_for_dad = Vec::new();
        // One packet socket per interface for all announcements of this apply.
        let mut announcer = Announcer::default();
        for change in changes {
            let (address, interface, label, exclusive) = match change {
                AddressChange::Add {
                    address,
                    interface,
                    label,
                    exclusive,
                } => (*address, interface, label.clone(), *exclusive),
                AddressChange::Replace {
                    interface,
                    to,
                    to_label,
                    ..
                } => (*to, interface, to_label.clone(), false),
                AddressChange::Remove { .. } => continue,
            };
            let on = link(interface, address)?;
            if exclusive {
                probe_before_adding(on, interface, address).await?;
            }
            self.add(on, interface, address, label).await?;
            match address {
                IpNet::V4(_) => {
                    effects.push(announce_on(&mut announcer, on, interface, address.addr())?)
                }
                IpNet::V6(_) => waiting_for_dad.push((interface.as_str(), address)),
            }
        }
        if !waiting_for_dad.is_empty() {
            effects.extend(
                self.announce_after_dad(&mut announcer, &links, &waiting_for_dad)
                    .await?,
            );
        }
        Ok(effects)
    }
}

impl AddressDriver {
    /// The named interfaces that exist, by name.
    async fn links(&self, names: &BTreeSet<&str>) -> Result<BTreeMap<String, Link>, AddressError> {
        let messages: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|source| AddressError::Netlink {
                what: NetlinkTarget::Links,
                source,
            })?;
        let promote_all = promote_secondaries_all();
        Ok(messages
            .iter()
            .filter_map(|message| {
                let name = message.attributes.iter().find_map(|a| match a {
                    LinkAttribute::IfName(name) => Some(name),
                    _ => None,
                })?;
                names
                    .contains(name.as_str())
                    .then(|| (name.clone(), link_of(message, promote_all)))
            })
            .collect())
    }

    /// Every address on these interfaces.
    async fn addresses(
        &self,
        links: &BTreeMap<String, Link>,
    ) -> Result<Vec<ObservedAddress>, AddressError> {
        if links.is_empty() {
            return Ok(Vec::new());
        }
        let by_index: BTreeMap<u32, &str> = links
            .iter()
            .map(|(name, link)| (link.index, name.as_str()))
            .collect();
        let messages: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|source| AddressError::Netlink {
                what: NetlinkTarget::Addresses {
                    interfaces: links.keys().cloned().collect(),
                },
                source,
            })?;
        Ok(messages
            .iter()
            .filter_map(|message| {
                let interface = by_index.get(&message.header.index)?;
                observed_address(message, interface)
            })
            .collect())
    }

    async fn add(
        &self,
        link: &Link,
        interface: &str,
        address: IpNet,
        label: Option<String>,
    ) -> Result<(), AddressError> {
        let mut request =
            self.handle
                .address()
                .add(link.index, address.addr(), address.prefix_len());
        if let (Some(label), IpNet::V4(_)) = (label, address) {
            request
                .message_mut()
                .attributes
                .push(AddressAttribute::Label(label));
        }
        match request.execute().await {
            // Someone added it since we looked: verify decides whether it is right.
            Err(err) if errno(&err) == Some(EEXIST) => Ok(()),
            result => result.map_err(|source| AddressError::Netlink {
                what: NetlinkTarget::Add {
                    address,
                    interface: interface.to_owned(),
                },
                source,
            }),
        }
    }

    async fn remove(
        &self,
        link: &Link,
        interface: &str,
        address: IpNet,
    ) -> Result<(), AddressError> {
        let message = match address {
            IpNet::V4(net) => AddressMessageBuilder::<Ipv4Addr>::new()
                .index(link.index)
                .address(net.addr(), net.prefix_len())
                .build(),
            IpNet::V6(net) => AddressMessageBuilder::<Ipv6Addr>::new()
                .index(link.index)
                .address(net.addr(), net.prefix_len())
                .build(),
        };
        match self.handle.address().del(message).execute().await {
            // Already gone (for example with the primary it was secondary to).
            Err(err) if errno(&err) == Some(EADDRNOTAVAIL) => Ok(()),
            result => result.map_err(|source| AddressError::Netlink {
                what: NetlinkTarget::Remove {
                    address,
                    interface: interface.to_owned(),
                },
                source,
            }),
        }
    }

    /// Waits until the kernel finished duplicate address detection for the
    /// new IPv6 addresses, then announces them. An address the kernel found
    /// duplicate is an error: another host holds it.
    async fn announce_after_dad(
        &self,
        announcer: &mut Announcer,
        links: &BTreeMap<String, Link>,
        added: &[(&str, IpNet)],
    ) -> Result<Vec<Effect>, AddressError> {
        let settled = tokio::time::timeout(self.dad_timeout, async {
            loop {
                let now = self.addresses(links).await?;
                let unsettled = added.iter().any(|(interface, address)| {
                    now.iter().any(|o| {
                        o.interface == *interface
                            && o.address == *address
                            && o.tentative
                            && !o.dad_failed
                    })
                });
                if !unsettled {
                    return Ok::<_, AddressError>(now);
                }
                tokio::time::sleep(DAD_POLL).await;
            }
        })
        .await;
        let now = match settled {
            Ok(now) => Some(now?),
            Err(_elapsed) => None,
        };
        let mut effects = Vec::new();
        for &(interface, address) in added {
            let state = now.as_ref().and_then(|now| {
                now.iter()
                    .find(|o| o.interface == interface && o.address == address)
            });
            match state {
                Some(o) if o.dad_failed => {
                    return Err(AddressError::DuplicateAddress {
                        address,
                        interface: interface.to_owned(),
                    });
                }
                Some(_) => {
                    let link =
                        links
                            .get(interface)
                            .ok_or_else(|| AddressError::NoSuchInterface {
                                address,
                                interface: interface.to_owned(),
                            })?;
                    effects.push(announce_on(announcer, link, interface, address.addr())?);
                }
                None => effects.push(Effect::NotAnnounced {
                    address: address.addr(),
                    interface: interface.to_owned(),
                    reason: match now {
                        None => format!(
                            "duplicate address detection still running after {:?} (no carrier?)",
                            self.dad_timeout
                        ),
                        Some(_) => "the address disappeared before it could be announced".into(),
                    },
                }),
            }
        }
        Ok(effects)
    }
}

/// The last line of defence for a service IP (DESIGN.md §6, fencing):
/// before an exclusive IPv4 address is added, ask the link whether another
/// machine holds it (ARP probe, RFC 5227), and refuse while one answers.
/// (IPv6 has the kernel's duplicate address detection: a `dadfailed`
/// address is an error.) A link without ARP cannot be asked.
async fn probe_before_adding(
    link: &Link,
    interface: &str,
    address: IpNet,
) -> Result<(), AddressError> {
    let (IpNet::V4(v4), Some(mac)) = (address, link.mac) else {
        return Ok(());
    };
    if !link.up || link.noarp {
        return Ok(());
    }
    let (index, name, ip) = (link.index, interface.to_owned(), v4.addr());
    let answered = tokio::task::spawn_blocking(move || announce::probe(index, &name, mac, ip))
        .await
        .map_err(|e| AddressError::Probe {
            address,
            interface: interface.to_owned(),
            source: io::Error::other(e.to_string()),
        })?
        .map_err(|source| AddressError::Probe {
            address,
            interface: interface.to_owned(),
            source,
        })?;
    match answered {
        None => Ok(()),
        Some(holder) => Err(AddressError::HeldElsewhere {
            address,
            interface: interface.to_owned(),
            mac: holder
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":"),
        }),
    }
}

/// Announces an address just added on `link`, or says why it cannot.
fn announce_on(
    announcer: &mut Announcer,
    link: &Link,
    interface: &str,
    address: IpAddr,
) -> Result<Effect, AddressError> {
    let skip = |reason: &str| {
        Ok(Effect::NotAnnounced {
            address,
            interface: interface.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if !link.up {
        return skip("the interface is down");
    }
    if link.noarp {
        return skip("the interface does not use ARP or neighbour discovery");
    }
    let Some(mac) = link.mac else {
        return skip("the interface has no Ethernet address");
    };
    let (frame, how) = match address {
        IpAddr::V4(ip) => (
            announce::gratuitous_arp(mac, ip),
            Announcement::GratuitousArp,
        ),
        IpAddr::V6(ip) => (
            announce::unsolicited_neighbor_advertisement(mac, ip),
            Announcement::UnsolicitedNeighborAdvertisement,
        ),
    };
    announcer
        .send(link.index, interface, &frame)
        .map_err(|source| AddressError::Announce {
            address,
            interface: interface.to_owned(),
            source,
        })?;
    Ok(Effect::Announced {
        address,
        interface: interface.to_owned(),
        how,
    })
}

fn errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(message) => Some(message.raw_code().abs()),
        _ => None,
    }
}

/// `net.ipv4.conf.all.promote_secondaries` of the calling thread's network
/// namespace; the kernel promotes when it or the interface's own setting is on.
fn promote_secondaries_all() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv4/conf/all/promote_secondaries")
        .is_ok_and(|value| value.trim() != "0")
}

fn link_of(message: &LinkMessage, promote_all: bool) -> Link {
    let mac = if message.header.link_layer_type == LinkLayerType::Ether {
        message.attributes.iter().find_map(|a| match a {
            LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
            _ => None,
        })
    } else {
        None
    };
    let promote_own = message.attributes.iter().any(|a| match a {
        LinkAttribute::AfSpecUnspec(specs) => specs.iter().any(|spec| match spec {
            AfSpecUnspec::Inet(inet) => inet.iter().any(|attr| match attr {
                AfSpecInet::DevConf(conf) => conf.promote_secondaries != 0,
                _ => false,
            }),
            _ => false,
        }),
        _ => false,
    });
    Link {
        index: message.header.index,
        mac,
        up: message.header.flags.contains(LinkFlags::Up),
        noarp: message.header.flags.contains(LinkFlags::Noarp),
        promote_secondaries: promote_all || promote_own,
    }
}

fn observed_address(message: &AddressMessage, interface: &str) -> Option<ObservedAddress> {
    let attrs = &message.attributes;
    // IFA_LOCAL is the address itself; IFA_ADDRESS is the peer on
    // point-to-point links and the only one IPv6 usually sends.
    let ip = attrs
        .iter()
        .find_map(|a| match a {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        })
        .or_else(|| {
            attrs.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })
        })?;
    let address = IpNet::new(ip, message.header.prefix_len).ok()?;
    let label = attrs.iter().find_map(|a| match a {
        AddressAttribute::Label(label) => Some(label.clone()),
        _ => None,
    });
    let flags = attrs
        .iter()
        .find_map(|a| match a {
            AddressAttribute::Flags(flags) => Some(*flags),
            _ => None,
        })
        .unwrap_or_else(|| AddressFlags::from_bits_retain(u32::from(message.header.flags.bits())));
    Some(ObservedAddress {
        interface: interface.to_owned(),
        address,
        label,
        secondary: flags.contains(AddressFlags::Secondary),
        tentative: flags.contains(AddressFlags::Tentative),
        dad_failed: flags.contains(AddressFlags::Dadfailed),
    })
}

/// What can go wrong converging addresses. Every message names the address
/// and the interface and, where there is one, the way out.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    #[error(
        "address {address} on {interface}: no interface {interface} on this host; create it or fix `interface` in the manifest"
    )]
    NoSuchInterface { address: IpNet, interface: String },
    #[error("{what}: netlink request failed")]
    Netlink {
        what: NetlinkTarget,
        #[source]
        source: rtnetlink::Error,
    },
    #[error(
        "address {address} on {interface}: removing it would also remove the secondary addresses {} (net.ipv4.conf.{interface}.promote_secondaries is off); set it to 1 or declare those addresses absent too",
        list(secondaries)
    )]
    WouldRemoveSecondaries {
        address: IpNet,
        interface: String,
        secondaries: Vec<IpNet>,
    },
    #[error(
        "address {address} on {interface}: duplicate address detection failed, another host on the link holds it; remove it there, the next reconcile adds it again"
    )]
    DuplicateAddress { address: IpNet, interface: String },
    #[error(
        "exclusive address {address} on {interface}: another machine answers for it (MAC {mac}); it is not added while that machine holds it (is the old host still up? the controller waits for its agent to release it)"
    )]
    HeldElsewhere {
        address: IpNet,
        interface: String,
        mac: String,
    },
    #[error("exclusive address {address} on {interface}: cannot probe the link for another holder")]
    Probe {
        address: IpNet,
        interface: String,
        #[source]
        source: io::Error,
    },
    #[error("address {address} on {interface}: cannot send the announcement")]
    Announce {
        address: IpAddr,
        interface: String,
        #[source]
        source: io::Error,
    },
}

impl AddressError {
    /// Whether trying again, with the host as it is, can help: a missing
    /// interface or a removal that would take secondaries along fails the
    /// same way until someone changes the host or the manifest.
    pub fn retry_can_help(&self) -> bool {
        !matches!(
            self,
            AddressError::NoSuchInterface { .. } | AddressError::WouldRemoveSecondaries { .. }
        )
    }
}

/// What a netlink request was about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetlinkTarget {
    /// Listing interfaces.
    Links,
    /// Listing the addresses of these interfaces.
    Addresses { interfaces: Vec<String> },
    /// Adding an address.
    Add { address: IpNet, interface: String },
    /// Removing an address.
    Remove { address: IpNet, interface: String },
}

impl fmt::Display for NetlinkTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetlinkTarget::Links => f.write_str("listing interfaces"),
            NetlinkTarget::Addresses { interfaces } => {
                write!(f, "listing addresses on {}", interfaces.join(", "))
            }
            NetlinkTarget::Add { address, interface } => {
                write!(f, "adding address {address} on {interface}")
            }
            NetlinkTarget::Remove { address, interface } => {
                write!(f, "removing address {address} on {interface}")
            }
        }
    }
}

/// The first line of each item, `; `-separated (for error messages).
pub(crate) fn list<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|item| {
            item.to_string()
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect::<Vec<_>>()
        .join("; ")
}
