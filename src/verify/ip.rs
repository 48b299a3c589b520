//! `ip_whitelist` and the client address behind trusted proxies.

use std::net::IpAddr;

pub use crate::config::ip_list::IpList;
use crate::config::ConfigError;

/// `ip_whitelist` compiled.
pub fn compile_whitelist(entries: &[String]) -> Result<IpList, ConfigError> {
    if entries.is_empty() {
        return Err(ConfigError::Invalid(
            "`ip_whitelist` is empty: it would refuse everyone; remove it instead".into(),
        ));
    }
    IpList::parse(entries, "`ip_whitelist`").map_err(ConfigError::Invalid)
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`192.0.2.1:5678`,
/// `[2001:db8::1]:443`) or in brackets (`[2001:db8::1]`).
fn parse_hop(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<std::net::Ipv6Addr>()
                .ok()
                .map(IpAddr::V6)
        })
        .map(|ip| ip.to_canonical())
}

/// The client address: the socket peer, unless the peer is a trusted proxy; then the right-most
/// `X-Forwarded-For` entry that is not a trusted proxy. X-Forwarded-For from anyone else is ignored.
///
/// `forwarded_for` holds every `X-Forwarded-For` line, as bytes, in the order received: proxies
/// such as HAProxy append the address they saw as a line of its own, so the lines are one list.
/// Each entry is decoded on its own, so a client's non-text entry cannot hide the entries a
/// proxy appended to the same line. `None` when the walk reaches an entry that is not an address
/// (`unknown`, garbage): the client cannot be known, and the proxy's own address must not stand
/// in for it.
pub fn client_ip(peer: IpAddr, forwarded_for: &[&[u8]], trusted: &IpList) -> Option<IpAddr> {
    let peer = peer.to_canonical();
    if trusted.is_empty() || !trusted.contains(peer) {
        return Some(peer);
    }
    let mut client = peer;
    let entries = forwarded_for
        .iter()
        .rev()
        .flat_map(|line| line.rsplit(|b| *b == b','));
    for entry in entries {
        let ip = std::str::from_utf8(entry).ok().and_then(parse_hop)?;
        client = ip;
        if !trusted.contains(ip) {
            return Some(ip);
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// `client_ip` over text lines.
    fn client(peer: &str, lines: &[&str], trusted: &IpList) -> Option<IpAddr> {
        let lines: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
        client_ip(ip(peer), &lines, trusted)
    }

    #[test]
    fn whitelist_matches_addresses_and_networks() {
        let list = compile_whitelist(&[
            "10.0.0.0/8".into(),
            "192.0.2.7".into(),
            "2001:db8::/32".into(),
        ])
        .unwrap();
        assert!(list.contains(ip("10.1.2.3")));
        assert!(list.contains(ip("192.0.2.7")));
        assert!(!list.contains(ip("192.0.2.8")));
        assert!(list.contains(ip("2001:db8::1")));
        assert!(
            list.contains(ip("::ffff:10.0.0.1")),
            "IPv4-mapped IPv6 is the IPv4 address"
        );
        let err = compile_whitelist(&["nope".into()]).unwrap_err().to_string();
        assert!(
            err.contains(r#""nope" is not an IP address or CIDR network"#),
            "{err}"
        );
        let err = compile_whitelist(&[]).unwrap_err().to_string();
        assert!(err.contains("would refuse everyone"), "{err}");
    }

    #[test]
    fn forwarded_for_is_ignored_from_untrusted_peers() {
        let trusted: IpList = "10.0.0.0/8".parse().unwrap();
        assert_eq!(
            client("203.0.113.9", &["1.2.3.4"], &trusted),
            Some(ip("203.0.113.9"))
        );
        let none = IpList::default();
        assert_eq!(
            client("10.0.0.1", &["1.2.3.4"], &none),
            Some(ip("10.0.0.1"))
        );
    }

    #[test]
    fn right_most_untrusted_entry_wins_behind_trusted_proxies() {
        let trusted: IpList = "10.0.0.0/8, 172.16.0.1".parse().unwrap();
        // client spoofs a left entry; the proxies append the real address.
        let xff = "6.6.6.6, 198.51.100.4, 172.16.0.1";
        assert_eq!(
            client("10.0.0.2", &[xff], &trusted),
            Some(ip("198.51.100.4"))
        );
        assert_eq!(client("10.0.0.2", &[], &trusted), Some(ip("10.0.0.2")));
        // All hops trusted: the left-most one.
        assert_eq!(
            client("10.0.0.2", &["10.9.9.9"], &trusted),
            Some(ip("10.9.9.9"))
        );
    }

    #[test]
    fn several_header_lines_are_one_list_read_from_the_right() {
        let trusted: IpList = "10.0.0.0/8".parse().unwrap();
        // HAProxy `option forwardfor` appends the real client as its own line.
        assert_eq!(
            client("10.0.0.2", &["192.0.2.10", "203.0.113.66"], &trusted),
            Some(ip("203.0.113.66"))
        );
    }

    #[test]
    fn entries_with_ports_and_brackets_parse() {
        let trusted: IpList = "10.0.0.0/8".parse().unwrap();
        for (entry, expected) in [
            ("1.2.3.4:5678", "1.2.3.4"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            (" 2001:db8::2 ", "2001:db8::2"),
            ("::ffff:1.2.3.4", "1.2.3.4"),
        ] {
            assert_eq!(
                client("10.0.0.2", &[entry], &trusted),
                Some(ip(expected)),
                "{entry}"
            );
        }
    }

    #[test]
    fn a_non_text_entry_does_not_hide_the_entries_after_it() {
        let trusted: IpList = "10.0.0.0/8".parse().unwrap();
        let line: &[u8] = b"\xff, 198.51.100.7";
        assert_eq!(
            client_ip(ip("10.0.0.2"), &[line], &trusted),
            Some(ip("198.51.100.7"))
        );
        let line: &[u8] = b"198.51.100.7, \xff";
        assert_eq!(client_ip(ip("10.0.0.2"), &[line], &trusted), None);
    }

    #[test]
    fn an_unparsable_hop_makes_the_client_unknown() {
        let trusted: IpList = "10.0.0.0/8".parse().unwrap();
        for xff in ["garbage", "unknown", "1.2.3.4, junk", "1.2.3.4,", "_hidden"] {
            assert_eq!(client("10.0.0.2", &[xff], &trusted), None, "{xff}");
        }
        // A bad entry left of the client is never reached.
        assert_eq!(
            client("10.0.0.2", &["junk, 203.0.113.5"], &trusted),
            Some(ip("203.0.113.5"))
        );
    }
}
