//! The authority a request names (`Host`, or the URI of an absolute-form
//! request), read strictly: the loopback rule of `require = "remote"` trusts
//! only a loopback name, so anything that merely *looks* like one
//! (`[::1].evil.example`, two Host headers, a foreign absolute URI) must be
//! refused or counted as remote. That is what stops DNS rebinding: a page
//! that rebinds its own name to 127.0.0.1 still sends its own name.

use std::net::{IpAddr, Ipv6Addr};
use warp::http::{HeaderMap, Uri};

/// A host as RFC 3986 allows it here: a name, an IPv4 address or a
/// bracketed IPv6 address (no zone, no IPvFuture).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

/// `host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    pub host: Host,
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("the request has no Host header")]
    MissingHost,
    #[error("the request has more than one Host header")]
    DuplicateHost,
    #[error("invalid authority {0:?}: expected host[:port], with host a name, an IPv4 address or [IPv6]")]
    Malformed(String),
}

impl Authority {
    pub fn parse(text: &str) -> Result<Authority, AuthorityError> {
        let malformed = || AuthorityError::Malformed(text.to_string());
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (inside, after) = rest.split_once(']').ok_or_else(malformed)?;
            // Only the address itself: a zone (`%25eth0`) names an interface, not a host.
            let ip = inside.parse::<Ipv6Addr>().map_err(|_| malformed())?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or_else(malformed)?),
            };
            (Host::Ip(IpAddr::V6(ip)), port)
        } else {
            let (host, port) = match text.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (text, None),
            };
            (parse_host(host).ok_or_else(malformed)?, port)
        };
        let port = match port {
            None => None,
            Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
                Some(p.parse::<u16>().map_err(|_| malformed())?)
            }
            Some(_) => return Err(malformed()),
        };
        Ok(Authority { host, port })
    }

    /// Exactly `localhost` or a loopback address; nothing else, not even
    /// `localhost.` or a name under it, which DNS may resolve anywhere.
    pub fn is_loopback(&self) -> bool {
        match &self.host {
            Host::Name(name) => name.eq_ignore_ascii_case("localhost"),
            Host::Ip(ip) => crate::auth::is_loopback(Some(*ip)),
        }
    }
}

/// A name of letters, digits, `-`, `_` and dots, or a dotted-quad IPv4
/// address (`127.1` and the like are names, and so not loopback).
fn parse_host(text: &str) -> Option<Host> {
    if text.is_empty() || text.len() > 253 {
        return None;
    }
    if let Ok(ip) = text.parse::<std::net::Ipv4Addr>() {
        return Some(Host::Ip(IpAddr::V4(ip)));
    }
    text.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        .then(|| Host::Name(text.to_string()))
}

/// What the boundary knows about the authority of one request, put into its
/// extensions by the server for the filters to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestAuthority {
    /// As the client wrote it (`127.0.0.1:7878`): the daemon's own origin is
    /// `http(s)://` + this.
    pub text: String,
    /// Both the Host header and (in absolute form) the URI name loopback.
    pub loopback: bool,
}

impl RequestAuthority {
    /// Exactly one Host header (HTTP/1.0 included), well-formed; in absolute
    /// form (`GET http://host/path`) the URI's authority is the request's
    /// (RFC 9112 §3.2.2), and both it and Host must be loopback to count as
    /// loopback.
    pub fn of_request(uri: &Uri, headers: &HeaderMap) -> Result<RequestAuthority, AuthorityError> {
        let mut hosts = headers.get_all(warp::http::header::HOST).iter();
        let host = hosts.next().ok_or(AuthorityError::MissingHost)?;
        if hosts.next().is_some() {
            return Err(AuthorityError::DuplicateHost);
        }
        let host =
            host.to_str().map_err(|_| AuthorityError::Malformed(String::from_utf8_lossy(host.as_bytes()).into()))?;
        let from_host = Authority::parse(host)?;
        match uri.authority() {
            None => Ok(RequestAuthority { text: host.to_string(), loopback: from_host.is_loopback() }),
            Some(target) => {
                let from_uri = Authority::parse(target.as_str())?;
                Ok(RequestAuthority {
                    text: target.as_str().to_string(),
                    loopback: from_uri.is_loopback() && from_host.is_loopback(),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp::http::HeaderValue;

    fn loopback(text: &str) -> Result<bool, AuthorityError> {
        Authority::parse(text).map(|a| a.is_loopback())
    }

    #[test]
    fn loopback_names_and_addresses_are_loopback() {
        for text in
            ["localhost", "LocalHost:7878", "127.0.0.1", "127.0.0.1:7878", "127.8.9.10:1", "[::1]", "[::1]:7878"]
        {
            assert_eq!(loopback(text), Ok(true), "{text}");
        }
        assert_eq!(loopback("[::ffff:127.0.0.1]:80"), Ok(true), "a mapped IPv4 loopback address");
        let a = Authority::parse("[::1]:7878").unwrap();
        assert_eq!((a.host, a.port), (Host::Ip("::1".parse().unwrap()), Some(7878)));
    }

    #[test]
    fn names_that_only_look_like_loopback_are_remote() {
        for text in [
            "evil.example",
            "evil.example:7878",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "localhost.",
            "127.1",
            "0x7f.0.0.1",
            "2130706433",
            "[::2]",
            "10.0.0.1",
            "box.tailnet.ts.net",
        ] {
            assert_eq!(loopback(text), Ok(false), "{text}");
        }
    }

    #[test]
    fn anything_but_host_and_port_is_malformed() {
        for text in [
            "",
            ":7878",
            "[::1].evil.example",
            "[::1]evil.example",
            "[::1]:",
            "[::1]:port",
            "[::1",
            "[127.0.0.1]",
            "[fe80::1%25eth0]",
            "[v1.x]",
            "127.0.0.1:",
            "127.0.0.1:99999",
            "127.0.0.1:123456",
            "127.0.0.1:+80",
            "127.0.0.1:80:80",
            "127.0.0.1:7878.evil.example",
            "127.0.0.1:7878@evil.example",
            "user@127.0.0.1",
            "127.0.0.1 evil.example",
            "127.0.0.1/path",
            "evil.example%2e",
            "::1",
        ] {
            assert!(matches!(Authority::parse(text), Err(AuthorityError::Malformed(_))), "{text:?} must be refused");
        }
    }

    fn request(uri: &str, hosts: &[&'static str]) -> Result<RequestAuthority, AuthorityError> {
        let mut headers = HeaderMap::new();
        for h in hosts {
            headers.append("host", HeaderValue::from_static(h));
        }
        RequestAuthority::of_request(&uri.parse().unwrap(), &headers)
    }

    #[test]
    fn requests_need_exactly_one_host_and_absolute_uris_count() {
        assert!(request("/api", &["127.0.0.1:7878"]).unwrap().loopback);
        assert_eq!(request("/api", &["127.0.0.1:7878"]).unwrap().text, "127.0.0.1:7878");
        assert!(!request("/api", &["evil.example"]).unwrap().loopback);
        assert_eq!(request("/api", &[]), Err(AuthorityError::MissingHost));
        assert_eq!(request("/api", &["127.0.0.1", "evil.example"]), Err(AuthorityError::DuplicateHost));
        assert_eq!(request("/api", &["127.0.0.1", "127.0.0.1"]), Err(AuthorityError::DuplicateHost));
        let absolute = request("http://evil.example/api", &["127.0.0.1:7878"]).unwrap();
        assert_eq!((absolute.loopback, absolute.text.as_str()), (false, "evil.example"));
        assert!(!request("http://127.0.0.1:7878/api", &["evil.example"]).unwrap().loopback);
        assert!(request("http://127.0.0.1:7878/api", &["127.0.0.1:7878"]).unwrap().loopback);
        assert!(matches!(request("http://u@127.0.0.1/api", &["127.0.0.1"]), Err(AuthorityError::Malformed(_))));
        assert_eq!(request("http://127.0.0.1/api", &[]), Err(AuthorityError::MissingHost));
    }
}
