//! `IpList`: addresses and networks (`10.0.0.0/8`, `192.0.2.7`, `2001:db8::/32`), parsed once;
//! what `ip_whitelist`, `TRUSTED_PROXIES` and `HTTP_ALLOWED_NETWORKS` are made of.

use std::net::IpAddr;

use ipnet::IpNet;

/// A list of addresses and networks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpList(Vec<IpNet>);

impl IpList {
    /// Parses `["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]`; `what` names the field in errors.
    pub fn parse(entries: &[String], what: &str) -> Result<Self, String> {
        entries
            .iter()
            .map(|e| {
                let e = e.trim();
                e.parse::<IpNet>()
                    .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{what}: {e:?} is not an IP address or CIDR network"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl IpList {
    /// A comma-separated list (a setting); `what` names it in errors.
    pub fn parse_commas(s: &str, what: &str) -> Result<Self, String> {
        let entries: Vec<String> = s
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(ToOwned::to_owned)
            .collect();
        Self::parse(&entries, what)
    }
}

impl std::str::FromStr for IpList {
    type Err = String;
    /// The `TRUSTED_PROXIES` setting.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_commas(s, "TRUSTED_PROXIES")
    }
}
