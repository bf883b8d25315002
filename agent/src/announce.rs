//! Telling the link that an address moved here.
//!
//! When a service IP moves from the old host to the new one, every client and
//! the router still hold the old host's MAC in their neighbour cache, for
//! seconds to minutes; until it expires, SMTP to the service IP goes to a host
//! that no longer answers (LAB.md shows it). Linux sends nothing on its own
//! when an address is added, so the agent announces it:
//! - IPv4: a gratuitous ARP, i.e. an ARP request for the address sent from the
//!   address (RFC 5227 "ARP announcement", what `arping -U` sends). Linux
//!   neighbours treat it as authoritative and replace a cached MAC at once.
//! - IPv6: an unsolicited neighbour advertisement to all nodes with the
//!   override flag (RFC 4861 §7.2.6). It is sent only after duplicate address
//!   detection finished: a tentative address must not be used as a source.
//!
//! Both frames are built here and sent on an `AF_PACKET` socket bound to the
//! interface (through `pnet_datalink`, which keeps the unsafe socket calls out
//! of this crate). One frame is sent per address.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use pnet_datalink::{Channel, ChannelType, Config, DataLinkSender, MacAddr, NetworkInterface};

const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ICMPV6: u8 = 58;
const NEIGHBOR_ADVERTISEMENT: u8 = 136;
const OVERRIDE_FLAG: u8 = 0x20;
const TARGET_LINK_LAYER_ADDRESS: u8 = 2;
/// All-nodes multicast group `ff02::1`, and its Ethernet mapping (RFC 2464).
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_NODES_MAC: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];

/// An ARP announcement of `ip` at `mac`: an Ethernet broadcast ARP request
/// whose sender and target protocol addresses are both `ip`.
pub(crate) fn gratuitous_arp(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::with_capacity(42);
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    frame.extend_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    frame.extend_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    frame.extend_from_slice(&[6, 4]); // address lengths
    frame.extend_from_slice(&1u16.to_be_bytes()); // request
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&ip.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&ip.octets());
    frame
}

/// An ARP probe for `ip` from `mac` (RFC 5227 §2.1.1): a broadcast ARP
/// request whose sender protocol address is 0.0.0.0, so that nobody's
/// cache learns anything from it, and whose target is the address.
pub(crate) fn arp_probe(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let mut frame = gratuitous_arp(mac, ip);
    frame[28..32].copy_from_slice(&[0, 0, 0, 0]);
    frame
}

/// The machine another ARP frame shows holding (or probing for) `ip`: a
/// reply from `ip`, a request from `ip`, or another host's probe for `ip`
/// (RFC 5227 §2.1.1); frames from `own` are ours.
pub(crate) fn conflict(frame: &[u8], own: [u8; 6], ip: Ipv4Addr) -> Option<[u8; 6]> {
    if frame.len() < 42 || frame[12..14] != ETHERTYPE_ARP.to_be_bytes() {
        return None;
    }
    let sender_mac: [u8; 6] = frame[22..28].try_into().ok()?;
    if sender_mac == own {
        return None;
    }
    let sender_ip = Ipv4Addr::new(frame[28], frame[29], frame[30], frame[31]);
    let target_ip = Ipv4Addr::new(frame[38], frame[39], frame[40], frame[41]);
    let opcode = u16::from_be_bytes([frame[20], frame[21]]);
    let holds = sender_ip == ip;
    let probes = opcode == 1 && sender_ip.is_unspecified() && target_ip == ip;
    (holds || probes).then_some(sender_mac)
}

/// How long a probe listens for an answer, and how many probes it sends
/// in that time. RFC 5227 waits seconds (three probes 1-2 s apart); a
/// service IP moving between two hosts on one link would be down that
/// long, so mailctl sends two probes 100 ms apart and listens 300 ms:
/// enough for any host on a LAN to answer, short next to the move itself.
pub(crate) const PROBE_LISTEN: Duration = Duration::from_millis(300);
const PROBES: u32 = 2;

/// Asks the link whether another machine holds `ip`: `Some(mac)` of the
/// first that answers. Blocking (up to [`PROBE_LISTEN`]).
pub(crate) fn probe(
    index: u32,
    name: &str,
    mac: [u8; 6],
    ip: Ipv4Addr,
) -> io::Result<Option<[u8; 6]>> {
    let (mut tx, mut rx) = open_channel(index, name, Duration::from_millis(10))?;
    let frame = arp_probe(mac, ip);
    let started = tokio::time::Instant::now();
    let mut sent = 0;
    while started.elapsed() < PROBE_LISTEN {
        if sent < PROBES && started.elapsed() >= PROBE_LISTEN / 3 * sent {
            tx.send_to(&frame, None)
                .unwrap_or_else(|| Err(io::Error::other("the packet socket refused to send")))?;
            sent += 1;
        }
        match rx.next() {
            Ok(received) => {
                if let Some(holder) = conflict(received, mac, ip) {
                    return Ok(Some(holder));
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// An unsolicited neighbour advertisement of `ip` at `mac` to all nodes.
pub(crate) fn unsolicited_neighbor_advertisement(mac: [u8; 6], ip: Ipv6Addr) -> Vec<u8> {
    let mut icmp = Vec::with_capacity(32);
    icmp.extend_from_slice(&[NEIGHBOR_ADVERTISEMENT, 0, 0, 0]); // type, code, checksum
    icmp.extend_from_slice(&[OVERRIDE_FLAG, 0, 0, 0]); // not router, not solicited
    icmp.extend_from_slice(&ip.octets());
    icmp.extend_from_slice(&[TARGET_LINK_LAYER_ADDRESS, 1]); // length in units of 8 octets
    icmp.extend_from_slice(&mac);
    let checksum = icmpv6_checksum(ip, ALL_NODES, &icmp);
    icmp[2..4].copy_from_slice(&checksum.to_be_bytes());

    let mut frame = Vec::with_capacity(14 + 40 + icmp.len());
    frame.extend_from_slice(&ALL_NODES_MAC);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    frame.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, no traffic class or flow label
    frame.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    // Receivers drop neighbour discovery with a hop limit below 255: it proves
    // the packet was not routed here.
    frame.extend_from_slice(&[ICMPV6, 255]);
    frame.extend_from_slice(&ip.octets());
    frame.extend_from_slice(&ALL_NODES.octets());
    frame.extend_from_slice(&icmp);
    frame
}

/// The ICMPv6 checksum: the ones' complement sum over the IPv6 pseudo-header
/// and the message (RFC 4443 §2.3).
pub(crate) fn icmpv6_checksum(source: Ipv6Addr, destination: Ipv6Addr, message: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(40 + message.len());
    pseudo.extend_from_slice(&source.octets());
    pseudo.extend_from_slice(&destination.octets());
    pseudo.extend_from_slice(&(message.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, ICMPV6]);
    pseudo.extend_from_slice(message);
    let mut sum: u32 = pseudo
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends frames out of interfaces, keeping one packet socket per interface
/// open for as long as it lives (one apply). Closing a packet socket waits
/// for an RCU grace period in the kernel (`synchronize_net()` in
/// `packet_release`), 7-25 ms here; with one socket per frame, announcing
/// 1,000 new addresses took 13 s.
#[derive(Default)]
pub(crate) struct Announcer {
    senders: HashMap<u32, Box<dyn DataLinkSender>>,
}

impl Announcer {
    /// Sends one Ethernet frame out of the interface with this index.
    pub(crate) fn send(&mut self, index: u32, name: &str, frame: &[u8]) -> io::Result<()> {
        let tx = match self.senders.entry(index) {
            Entry::Occupied(open) => open.into_mut(),
            Entry::Vacant(slot) => slot.insert(open_sender(index, name)?),
        };
        tx.send_to(frame, None)
            .unwrap_or_else(|| Err(io::Error::other("the packet socket refused to send")))
    }
}

fn open_sender(index: u32, name: &str) -> io::Result<Box<dyn DataLinkSender>> {
    open_channel(index, name, Duration::from_millis(1)).map(|(tx, _rx)| tx)
}

/// A packet socket on the interface: its sender and its receiver.
fn open_channel(
    index: u32,
    name: &str,
    read_timeout: Duration,
) -> io::Result<(
    Box<dyn DataLinkSender>,
    Box<dyn pnet_datalink::DataLinkReceiver>,
)> {
    let interface = NetworkInterface {
        name: name.to_owned(),
        description: String::new(),
        index,
        mac: None::<MacAddr>,
        ips: Vec::new(),
        flags: 0,
    };
    let config = Config {
        channel_type: ChannelType::Layer2,
        promiscuous: false,
        write_timeout: Some(Duration::from_secs(1)),
        read_timeout: Some(read_timeout),
        ..Config::default()
    };
    match pnet_datalink::channel(&interface, config)? {
        // The receiver shares the socket with the sender.
        Channel::Ethernet(tx, rx) => Ok((tx, rx)),
        _ => Err(io::Error::other("no Ethernet channel on this interface")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x25];

    #[test]
    fn gratuitous_arp_is_a_broadcast_request_from_and_for_the_address() {
        let frame = gratuitous_arp(MAC, Ipv4Addr::new(192, 0, 2, 25));
        assert_eq!(frame.len(), 42);
        assert_eq!(&frame[0..6], &[0xff; 6]);
        assert_eq!(&frame[6..12], &MAC);
        assert_eq!(&frame[12..14], &[0x08, 0x06]);
        assert_eq!(&frame[20..22], &[0, 1], "opcode request");
        assert_eq!(&frame[22..28], &MAC, "sender hardware address");
        assert_eq!(&frame[28..32], &[192, 0, 2, 25], "sender protocol address");
        assert_eq!(&frame[38..42], &[192, 0, 2, 25], "target protocol address");
    }

    #[test]
    fn a_probe_asks_from_no_address_and_answers_name_their_holder() {
        let ip = Ipv4Addr::new(192, 0, 2, 25);
        let probe = arp_probe(MAC, ip);
        assert_eq!(&probe[28..32], &[0, 0, 0, 0], "sender protocol address");
        assert_eq!(&probe[38..42], &[192, 0, 2, 25]);
        let other = [0x02, 0, 0, 0, 0, 0x99];
        // Our own probe is no conflict; another host's reply, announcement
        // or probe for the address is.
        assert_eq!(conflict(&probe, MAC, ip), None);
        let mut reply = gratuitous_arp(other, ip);
        reply[21] = 2;
        assert_eq!(conflict(&reply, MAC, ip), Some(other));
        assert_eq!(conflict(&arp_probe(other, ip), MAC, ip), Some(other));
        assert_eq!(conflict(&gratuitous_arp(other, ip), MAC, ip), Some(other));
        // Someone else's business: no conflict.
        let elsewhere = gratuitous_arp(other, Ipv4Addr::new(192, 0, 2, 26));
        assert_eq!(conflict(&elsewhere, MAC, ip), None);
        assert_eq!(conflict(&probe[..20], MAC, ip), None);
    }

    #[test]
    fn neighbor_advertisement_has_a_valid_checksum_and_hop_limit_255() {
        let ip: Ipv6Addr = "2001:db8::25".parse().expect("literal");
        let frame = unsolicited_neighbor_advertisement(MAC, ip);
        assert_eq!(frame.len(), 14 + 40 + 32);
        assert_eq!(&frame[0..6], &ALL_NODES_MAC);
        assert_eq!(frame[14 + 7], 255, "hop limit");
        let icmp = &frame[54..];
        assert_eq!(icmp[0], NEIGHBOR_ADVERTISEMENT);
        assert_eq!(icmp[4], OVERRIDE_FLAG);
        assert_eq!(&icmp[8..24], &ip.octets(), "target");
        assert_eq!(&icmp[26..32], &MAC, "target link-layer address");
        // Summing a message that carries its own checksum gives zero.
        assert_eq!(icmpv6_checksum(ip, ALL_NODES, icmp), 0);
    }

    #[test]
    fn checksum_matches_a_known_value() {
        // Worked by hand: pseudo-header of ::1 -> ::2 with a 4-byte echo
        // request (128, 0, 0, 0): 1 + 2 + 4 + 58 + 0x8000 = 0x8041.
        let one: Ipv6Addr = "::1".parse().expect("literal");
        let two: Ipv6Addr = "::2".parse().expect("literal");
        assert_eq!(icmpv6_checksum(one, two, &[128, 0, 0, 0]), !0x8041u16);
    }
}
