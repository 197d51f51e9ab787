//! Trusted reverse proxies (`[auth] trusted_proxies`): which TCP peers may
//! say who their client is, and the client they name.
//!
//! The limit on failed attempts counts per client. Behind a proxy on the
//! same host every request comes from the proxy's address, so one guessing
//! client would lock out everyone behind it (and the local CLI with them).
//! A proxy named here is believed about the address it reports; anyone
//! else's `X-Forwarded-For` is ignored, since a client can write anything in
//! it. This decides only *who is counted*: a proxied request is still remote.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use warp::http::HeaderMap;

/// An address block, `10.0.0.0/8` or `::1/128`; a bare address is a block of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not an IP address or CIDR block (e.g. \"127.0.0.1\", \"10.0.0.0/8\", \"fd00::/8\")")]
    Syntax(String),
    #[error("{text:?}: the prefix length must be at most {max} for this address")]
    Prefix { text: String, max: u8 },
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let syntax = || CidrError::Syntax(text.to_string());
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network = unmap(address.parse::<IpAddr>().map_err(|_| syntax())?);
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| syntax())?
            }
            Some(_) => return Err(syntax()),
        };
        if prefix > max {
            return Err(CidrError::Prefix { text: text.to_string(), max });
        }
        Ok(Cidr { network, prefix })
    }
}

impl TryFrom<String> for Cidr {
    type Error = CidrError;

    fn try_from(text: String) -> Result<Cidr, CidrError> {
        text.trim().parse()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, unmap(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => same_prefix(&net.octets(), &ip.octets(), self.prefix),
            (IpAddr::V6(net), IpAddr::V6(ip)) => same_prefix(&net.octets(), &ip.octets(), self.prefix),
            _ => false,
        }
    }
}

/// `::ffff:10.1.2.3` is `10.1.2.3`, as a dual-stack socket reports it.
fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn same_prefix(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    if a[..full] != b[..full] {
        return false;
    }
    let rest = prefix % 8;
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (a[full] & mask) == (b[full] & mask)
}

/// The client a request stands for: the TCP peer, or, when the peer is a
/// trusted proxy, the rightmost address of the forwarding chain that is not
/// itself a trusted proxy. Entries to the left of that one were written by
/// whoever sent the request and prove nothing.
///
/// The chain is `X-Forwarded-For` (every such header, in order), else the
/// `for=` parameters of `Forwarded`. An entry that is no address (`unknown`,
/// an obfuscated `_name`) ends the walk: the proxy itself is then the client.
pub fn client_of(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return peer;
    }
    let chain = forwarded_chain(headers);
    let mut client = peer;
    for entry in chain.iter().rev() {
        let Some(ip) = entry else { return peer };
        client = *ip;
        if !is_trusted(*ip) {
            return *ip;
        }
    }
    // Every hop was a trusted proxy: the first one is the client.
    client
}

/// The forwarding chain, left (client side) to right (nearest proxy);
/// `None` for an entry that is not an address.
fn forwarded_chain(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let values = |name: &str| -> Vec<String> {
        headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect()
    };
    let xff = values("x-forwarded-for");
    if !xff.is_empty() {
        return xff.iter().flat_map(|v| v.split(',')).map(parse_node).collect();
    }
    values("forwarded")
        .iter()
        .flat_map(|v| v.split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (key, value) = pair.split_once('=')?;
                key.trim().eq_ignore_ascii_case("for").then(|| parse_node(value))
            })
        })
        .collect()
}

/// One hop: `203.0.113.7`, `203.0.113.7:4711`, `"[2001:db8::1]:4711"`, `2001:db8::1`.
fn parse_node(text: &str) -> Option<IpAddr> {
    let text = text.trim().trim_matches('"');
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(unmap(ip));
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port_ok =
            after.is_empty() || after.strip_prefix(':').is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
        return port_ok.then(|| inside.parse::<IpAddr>().ok().map(unmap)).flatten();
    }
    let (address, port) = text.rsplit_once(':')?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    address.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp::http::HeaderValue;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn cidr_blocks_parse_strictly_and_match_their_addresses() {
        let block: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(block.contains(ip("10.200.3.4")));
        assert!(block.contains(ip("::ffff:10.1.1.1")), "a mapped IPv4 address is that address");
        assert!(!block.contains(ip("11.0.0.1")));
        assert!(!block.contains(ip("::1")));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert!(one.contains(ip("127.0.0.1")) && !one.contains(ip("127.0.0.2")));
        let odd: Cidr = "192.168.4.0/22".parse().unwrap();
        assert!(odd.contains(ip("192.168.7.255")) && !odd.contains(ip("192.168.8.0")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fd12:3456::1")) && !v6.contains(ip("fe80::1")));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("203.0.113.9")));
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0.0/33",
            "10.0.0/8",
            "::1/129",
            "10.0.0.0/8/8",
            "10.0.0.0/+8",
            "host",
            "10.0.0.0/0008",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} must not parse");
        }
        assert!(matches!("10.0.0.0/33".parse::<Cidr>(), Err(CidrError::Prefix { max: 32, .. })));
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_hop_of_a_trusted_proxy() {
        let trusted = cidrs(&["127.0.0.1", "10.0.0.0/8"]);
        let lo = ip("127.0.0.1");
        // A direct client's own header is not believed.
        let spoof = headers(&[("x-forwarded-for", "203.0.113.7")]);
        assert_eq!(client_of(ip("198.51.100.1"), &spoof, &trusted), ip("198.51.100.1"));
        // The proxy's report is.
        assert_eq!(client_of(lo, &spoof, &trusted), ip("203.0.113.7"));
        // What the client wrote to the left of the proxy's entry is not.
        let chain = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.7")]);
        assert_eq!(client_of(lo, &chain, &trusted), ip("203.0.113.7"));
        // Trusted hops are skipped, across several headers too.
        let hops = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.7"), ("x-forwarded-for", "10.0.0.5")]);
        assert_eq!(client_of(lo, &hops, &trusted), ip("203.0.113.7"));
        let ported = headers(&[("x-forwarded-for", "203.0.113.7:5555")]);
        assert_eq!(client_of(lo, &ported, &trusted), ip("203.0.113.7"));
        // A proxy that does not know: the proxy is the client.
        let unknown = headers(&[("x-forwarded-for", "1.1.1.1, unknown")]);
        assert_eq!(client_of(lo, &unknown, &trusted), lo);
        // No header at all: the proxy itself (a local process through it).
        assert_eq!(client_of(lo, &HeaderMap::new(), &trusted), lo);
        // Every hop trusted: the first.
        let inside = headers(&[("x-forwarded-for", "10.1.1.1, 10.2.2.2")]);
        assert_eq!(client_of(lo, &inside, &trusted), ip("10.1.1.1"));
        // Without trusted proxies nothing is believed.
        assert_eq!(client_of(lo, &chain, &[]), lo);
    }

    #[test]
    fn forwarded_for_parameters_are_read_when_there_is_no_x_forwarded_for() {
        let trusted = cidrs(&["127.0.0.1"]);
        let lo = ip("127.0.0.1");
        let fwd = headers(&[("forwarded", "for=1.1.1.1;proto=http, for=\"[2001:db8::17]:4711\";by=127.0.0.1")]);
        assert_eq!(client_of(lo, &fwd, &trusted), ip("2001:db8::17"));
        let fwd = headers(&[("forwarded", "proto=https;FOR=\"203.0.113.7:80\"")]);
        assert_eq!(client_of(lo, &fwd, &trusted), ip("203.0.113.7"));
        let hidden = headers(&[("forwarded", "for=_hidden")]);
        assert_eq!(client_of(lo, &hidden, &trusted), lo);
        // X-Forwarded-For wins when both are there.
        let both = headers(&[("forwarded", "for=1.1.1.1"), ("x-forwarded-for", "203.0.113.8")]);
        assert_eq!(client_of(lo, &both, &trusted), ip("203.0.113.8"));
    }
}
