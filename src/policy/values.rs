//! The small typed values a policy is made of: durations, globs, port ranges, CIDRs and
//! signal names, each parsed once at load time and printed back the way it was written.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::{Serialize, Serializer};

/// A duration written humantime-style (`"90s"`, `"10m"`, `"2h"`, `"1h30m"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyDuration(pub Duration);

impl PolicyDuration {
    pub fn from_secs(secs: u64) -> PolicyDuration {
        PolicyDuration(Duration::from_secs(secs))
    }
    pub fn as_secs(self) -> u64 {
        self.0.as_secs()
    }
}

impl FromStr for PolicyDuration {
    type Err = crate::duration::BadDuration;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        crate::duration::parse(s).map(PolicyDuration)
    }
}

impl fmt::Display for PolicyDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::duration::Shown(self.0.as_secs()).fmt(f)
    }
}

impl Serialize for PolicyDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A shell-style glob (`java*`, `/usr/lib/jvm/*/bin/java`, `api-*.service`), matched
/// against the whole string.
#[derive(Debug, Clone)]
pub struct Pattern {
    text: String,
    matcher: globset::GlobMatcher,
}

impl Pattern {
    pub fn new(text: &str) -> Result<Pattern, globset::Error> {
        let glob = globset::GlobBuilder::new(text)
            .backslash_escape(true)
            .build()?;
        Ok(Pattern {
            text: text.to_string(),
            matcher: glob.compile_matcher(),
        })
    }
    pub fn as_str(&self) -> &str {
        &self.text
    }
    pub fn matches(&self, candidate: &str) -> bool {
        self.matcher.is_match(candidate)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.text == other.text
    }
}

impl Eq for Pattern {}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// A port or an inclusive port range (`8080` or `"8000-8100"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn single(port: u16) -> PortRange {
        PortRange {
            first: port,
            last: port,
        }
    }
    pub fn contains(self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| format!("`{}` is not a port number (0-65535)", p.trim()))
        };
        match s.split_once('-') {
            Some((a, b)) => {
                let (first, last) = (port(a)?, port(b)?);
                if first > last {
                    return Err(format!("range `{s}` runs backwards"));
                }
                Ok(PortRange { first, last })
            }
            None => port(s).map(PortRange::single),
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An IPv4 or IPv6 network (`10.0.0.0/8`, `fd00::/8`; a bare address is a /32 or /128).
/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, dual-stack sockets) match IPv4 networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn contains(self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(
                u128::from(u32::from(net)) << 96,
                u128::from(u32::from(ip)) << 96,
                self.prefix,
            ),
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(u128::from(net), u128::from(ip), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: u128, b: u128, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    let mask = u128::MAX << (128 - u32::from(prefix));
    a & mask == b & mask
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("prefix length `/{p}` must be 0-{max}")),
            },
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A signal named in a policy (`"SIGHUP"`, `"HUP"`, `"sigterm"`), kept as nix's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SignalName(pub nix::sys::signal::Signal);

impl SignalName {
    pub fn name(self) -> &'static str {
        self.0.as_str()
    }
    /// Every accepted name, for error messages.
    pub fn all_names() -> Vec<&'static str> {
        nix::sys::signal::Signal::iterator()
            .map(|s| s.as_str())
            .collect()
    }
}

/// The one signal parser (policies and flags): `SIGHUP`, `HUP`, `hup` or a number (`15`).
impl FromStr for SignalName {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use nix::sys::signal::Signal;
        let trimmed = s.trim();
        if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit()) {
            let n: i32 = trimmed.parse().map_err(|_| ())?;
            return Signal::try_from(n).map(SignalName).map_err(|_| ());
        }
        let upper = trimmed.to_ascii_uppercase();
        let full = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        Signal::from_str(&full).map(SignalName).map_err(|_| ())
    }
}

impl fmt::Display for SignalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for SignalName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_short() {
        let d = |s: &str| s.parse::<PolicyDuration>().expect(s).as_secs();
        assert_eq!(d("90s"), 90);
        assert_eq!(d("10m"), 600);
        assert_eq!(d("1h30m"), 5400);
        assert!("ten minutes".parse::<PolicyDuration>().is_err());
        assert_eq!(PolicyDuration::from_secs(5400).to_string(), "1h30m");
        assert!(
            "10".parse::<PolicyDuration>().is_err(),
            "a unit is required"
        );
    }

    /// The one signal parser: names in any case, with or without SIG, and numbers.
    #[test]
    fn signal_spellings() {
        use nix::sys::signal::Signal;
        for spelling in ["SIGHUP", "HUP", "hup", "SigHup", " 1 "] {
            assert_eq!(
                spelling.parse::<SignalName>().ok(),
                Some(SignalName(Signal::SIGHUP)),
                "{spelling}"
            );
        }
        assert_eq!(
            "15".parse::<SignalName>().ok(),
            Some(SignalName(Signal::SIGTERM))
        );
        assert_eq!(
            "kill".parse::<SignalName>().ok(),
            Some(SignalName(Signal::SIGKILL))
        );
        for bad in ["", "0", "99", "SIGFOO", "-9", "sig", "1x"] {
            assert!(bad.parse::<SignalName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn cidrs_match_v4_v6_and_mapped() {
        let c: Cidr = "10.0.0.0/8".parse().expect("cidr");
        assert!(c.contains("10.1.2.3".parse().expect("ip")));
        assert!(c.contains("::ffff:10.1.2.3".parse().expect("ip")));
        assert!(!c.contains("11.0.0.1".parse().expect("ip")));
        let c6: Cidr = "fd00::/8".parse().expect("cidr");
        assert!(c6.contains("fd12::1".parse().expect("ip")));
        assert!(!c6.contains("10.0.0.1".parse().expect("ip")));
        let any: Cidr = "0.0.0.0/0".parse().expect("cidr");
        assert!(any.contains("1.2.3.4".parse().expect("ip")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("10.0.0/8".parse::<Cidr>().is_err());
        assert_eq!("127.0.0.1".parse::<Cidr>().expect("cidr").prefix, 32);
    }

    #[test]
    fn ports_signals_and_globs() {
        assert_eq!(
            "8000-8100".parse::<PortRange>(),
            Ok(PortRange {
                first: 8000,
                last: 8100
            })
        );
        assert!("9-1".parse::<PortRange>().is_err());
        assert!("70000".parse::<PortRange>().is_err());
        assert_eq!("hup".parse::<SignalName>().map(|s| s.name()), Ok("SIGHUP"));
        assert_eq!(
            "SIGTERM".parse::<SignalName>().map(|s| s.name()),
            Ok("SIGTERM")
        );
        assert!("SIGNOPE".parse::<SignalName>().is_err());
        let p = Pattern::new("java*").expect("glob");
        assert!(p.matches("java") && p.matches("java-worker") && !p.matches("xjava"));
        assert!(Pattern::new("api[").is_err());
    }
}
