//! Names nftables can carry.
//!
//! nft reads a table's name as a bare word, and a word its scanner knows as a
//! keyword is no name there: `table inet accept { }` is a syntax error
//! ("unexpected accept, expecting string"), and nft has no quoting for table
//! names. [`RESERVED`] holds the words nftables 1.0.6 (Debian 12) refuses in
//! that place, found by trying every word of nft(8) and of libnftables'
//! strings with `nft -c`; `agent/tests/netns` tries them again against the
//! installed nft. Keywords are lower case: `Accept` is a fine name.

/// Words nft 1.0.6 refuses as a table name, sorted.
pub const RESERVED: &[&str] = &[
    "accept",
    "add",
    "ah",
    "all",
    "and",
    "arp",
    "auto-merge",
    "bridge",
    "cgroup",
    "chain",
    "comment",
    "comp",
    "constant",
    "continue",
    "counter",
    "cpu",
    "create",
    "ct",
    "day",
    "dccp",
    "define",
    "delete",
    "describe",
    "device",
    "devices",
    "dnat",
    "drop",
    "dst",
    "dup",
    "dynamic",
    "ecn",
    "element",
    "elements",
    "esp",
    "ether",
    "exists",
    "expires",
    "export",
    "exthdr",
    "fib",
    "flags",
    "flow",
    "flowtable",
    "flush",
    "frag",
    "fwd",
    "gc-interval",
    "get",
    "goto",
    "handle",
    "hbh",
    "hook",
    "hour",
    "ibriport",
    "ibrname",
    "icmp",
    "icmpv6",
    "igmp",
    "iif",
    "iifgroup",
    "iifname",
    "iiftype",
    "import",
    "include",
    "index",
    "inet",
    "insert",
    "interval",
    "ip",
    "ip6",
    "ipsec",
    "jhash",
    "jump",
    "limit",
    "list",
    "log",
    "lt",
    "map",
    "mark",
    "masquerade",
    "meta",
    "meter",
    "mh",
    "missing",
    "monitor",
    "ne",
    "netdev",
    "nftrace",
    "not",
    "notrack",
    "numgen",
    "obriport",
    "obrname",
    "offload",
    "oif",
    "oifgroup",
    "oifname",
    "oiftype",
    "or",
    "osf",
    "pkttype",
    "policy",
    "position",
    "priority",
    "queue",
    "quota",
    "random",
    "redefine",
    "redirect",
    "reject",
    "rename",
    "replace",
    "reset",
    "return",
    "rt",
    "rt0",
    "rt2",
    "rtclassid",
    "rule",
    "ruleset",
    "sctp",
    "secmark",
    "set",
    "size",
    "skgid",
    "skuid",
    "snat",
    "socket",
    "srh",
    "symhash",
    "synproxy",
    "table",
    "tcp",
    "th",
    "time",
    "timeout",
    "tproxy",
    "type",
    "typeof",
    "udp",
    "udplite",
    "undefine",
    "update",
    "vlan",
    "vmap",
    "xt",
];

/// Why `name` cannot be the name of mailctl's nftables table, if it cannot.
pub fn table_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty()
        || name.len() > 64
        || !name.starts_with(|c: char| c.is_ascii_alphabetic())
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
    {
        return Some("use letters, digits, '_' and '-', starting with a letter, at most 64");
    }
    if RESERVED.binary_search(&name).is_ok() {
        return Some(
            "nft reads this word as a keyword, not a name; pick another (such as mailctl)",
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_words_are_sorted_and_refused() {
        assert!(
            RESERVED.windows(2).all(|w| w[0] < w[1]),
            "RESERVED must stay sorted"
        );
        for word in ["accept", "counter", "inet", "table", "tcp"] {
            assert!(table_name_problem(word).is_some(), "{word}");
        }
        for name in ["mailctl", "filter", "nat", "Accept", "mail-2"] {
            assert_eq!(table_name_problem(name), None, "{name}");
        }
        for bad in ["", "1x", "x;y", "a b", &"x".repeat(65)] {
            assert!(table_name_problem(bad).is_some(), "{bad:?}");
        }
    }
}
