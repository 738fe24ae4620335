//! Which `reply_to` URLs the box may call, and where it may connect for them.
//!
//! A request names the URL, so the URL is hostile input: without these checks a submitter
//! could make the box POST to its own admin port, a neighbour on the bank's network or a
//! cloud metadata address. Three checks, each at intake and again at send time:
//! - the host is in `webhooks.allowed_hosts`, and the port is one the list allows: `443`
//!   for an entry without a port, exactly the named port for `host:port`;
//! - every address the host resolves to is public (not loopback, private, link-local,
//!   shared, multicast, unspecified, documentation or otherwise reserved), unless the
//!   entry is itself an IP address (the operator named that address) or
//!   `webhooks.allow_private_addresses` is set;
//! - the connection goes to an address that passed the check: [`Resolver`] is the
//!   sender's resolver, so the name is resolved and checked in one step and a second DNS
//!   answer (rebinding) cannot slip in between the check and the connect.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use ureq::unversioned::resolver::ResolvedSocketAddrs;

/// The port an entry without one allows.
const DEFAULT_PORT: u16 = 443;

/// One `webhooks.allowed_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    /// Lower-case host name or IP address (IPv6 without brackets).
    host: String,
    port: u16,
}

/// Why a `reply_to` may not be called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    #[error("`reply_to` is not an http:// or https:// URL with a host")]
    NotAUrl,
    #[error("`reply_to` names a host or port not in webhooks.allowed_hosts")]
    NotListed,
    #[error("`reply_to`'s host does not resolve")]
    Unresolved,
    #[error(
        "`reply_to`'s host resolves to a non-public address (see webhooks.allow_private_addresses)"
    )]
    NotPublic,
}

/// The allow list and address policy, shared by intake and the sender.
#[derive(Debug, Clone)]
pub struct Policy {
    entries: Arc<[Entry]>,
    allow_private: bool,
}

/// Splits `host[:port]` (IPv6 in brackets); `None` when malformed.
fn host_port(auth: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = auth.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        (h, after.strip_prefix(':'))
    } else {
        match auth.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (auth, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    Some((host.to_ascii_lowercase(), port))
}

/// Host and port (explicit, or the scheme's) of an http(s) URL without user info.
fn target(url: &str) -> Option<(String, u16)> {
    let (rest, default) = if let Some(r) = url.strip_prefix("https://") {
        (r, 443)
    } else {
        (url.strip_prefix("http://")?, 80)
    };
    let auth = rest.split(['/', '?', '#']).next()?;
    if auth.contains('@') {
        return None;
    }
    let (host, port) = host_port(auth)?;
    Some((host, port.unwrap_or(default)))
}

impl Policy {
    pub fn new(allowed_hosts: &[String], allow_private: bool) -> Policy {
        let entries = allowed_hosts
            .iter()
            .filter_map(|a| {
                let (host, port) = host_port(a.trim())?;
                Some(Entry {
                    host,
                    port: port.unwrap_or(DEFAULT_PORT),
                })
            })
            .collect();
        Policy {
            entries,
            allow_private,
        }
    }

    /// The list check alone (no DNS): host and port are listed. Returns the host and
    /// whether the operator listed it as an address.
    fn listed(&self, url: &str) -> Result<(String, u16, bool), Refusal> {
        let (host, port) = target(url).ok_or(Refusal::NotAUrl)?;
        let entry = self
            .entries
            .iter()
            .find(|e| e.host == host && e.port == port)
            .ok_or(Refusal::NotListed)?;
        let literal = entry.host.parse::<IpAddr>().is_ok();
        Ok((host, port, literal))
    }

    /// Whether the box may connect to `ip` for a host listed as a name (`literal: false`)
    /// or as an address.
    fn may_connect(&self, ip: IpAddr, literal: bool) -> bool {
        literal || self.allow_private || is_public(ip)
    }

    /// Every check, with a DNS lookup now (blocking): for intake and before each send.
    pub fn check(&self, url: &str) -> Result<(), Refusal> {
        let (host, port, literal) = self.listed(url)?;
        let addrs: Vec<SocketAddr> = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|_| Refusal::Unresolved)?
            .collect();
        if addrs.is_empty() {
            return Err(Refusal::Unresolved);
        }
        // All of them: the connection may go to any one.
        if addrs.iter().all(|a| self.may_connect(a.ip(), literal)) {
            Ok(())
        } else {
            Err(Refusal::NotPublic)
        }
    }

    /// The sender's resolver: resolves and keeps only addresses that pass the check.
    pub fn resolver(&self) -> Resolver {
        Resolver {
            policy: self.clone(),
            inner: crate::connector::Literal::default(),
        }
    }
}

/// A ureq resolver that connects only to checked addresses (see the module documentation).
#[derive(Debug)]
pub struct Resolver {
    policy: Policy,
    inner: crate::connector::Literal,
}

impl ureq::unversioned::resolver::Resolver for Resolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let refused = |why: Refusal| {
            ureq::Error::Io(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                why.to_string(),
            ))
        };
        let (_, _, literal) = self.policy.listed(&uri.to_string()).map_err(refused)?;
        let found = self.inner.resolve(uri, config, timeout)?;
        let mut kept = self.inner.empty();
        for addr in found.iter() {
            if self.policy.may_connect(addr.ip(), literal) {
                kept.push(*addr);
            }
        }
        if kept.is_empty() {
            return Err(refused(Refusal::NotPublic));
        }
        Ok(kept)
    }
}

/// Whether `ip` is an address on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || a == 0 // "this network"
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || ip.is_documentation()
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || ip.is_multicast()
        || a >= 240) // reserved, broadcast
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    let embedded_v4 =
        || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        // NAT64: the IPv4 address inside decides.
        return is_public_v4(embedded_v4());
    }
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || s[0..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible (deprecated)
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x2001 && s[1] < 0x0200) // IETF protocol assignments, Teredo
        || s[0] == 0x2002 // 6to4: may reach any IPv4 address
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0])) // discard-only
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(hosts: &[&str]) -> Policy {
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        Policy::new(&hosts, false)
    }

    #[test]
    fn hosts_and_ports_must_be_listed() {
        let p = policy(&["crm.example", "10.0.0.5:8443", "[fd00::1]:9000"]);
        assert!(p.listed("https://crm.example/hooks/case").is_ok());
        assert!(p.listed("https://CRM.example:443/x").is_ok());
        // An entry without a port allows 443 only.
        assert_eq!(p.listed("http://crm.example/x"), Err(Refusal::NotListed));
        assert_eq!(
            p.listed("https://crm.example:22/x"),
            Err(Refusal::NotListed)
        );
        assert!(p.listed("http://10.0.0.5:8443/x").is_ok());
        assert_eq!(p.listed("http://10.0.0.5/x"), Err(Refusal::NotListed));
        assert!(p.listed("http://[fd00::1]:9000/x").is_ok());
        assert_eq!(
            p.listed("https://evil.example@crm.example/x"),
            Err(Refusal::NotAUrl)
        );
        assert_eq!(p.listed("ftp://crm.example/x"), Err(Refusal::NotAUrl));
        assert_eq!(
            p.listed("https://crm.example.evil.example/x"),
            Err(Refusal::NotListed)
        );
    }

    #[test]
    fn non_public_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2001:db8::1",
            "2002:7f00:1::",
        ] {
            assert!(!is_public(ip.parse().expect(ip)), "{ip}");
        }
        for ip in [
            "93.184.215.14",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert!(is_public(ip.parse().expect(ip)), "{ip}");
        }
    }

    #[test]
    fn a_name_resolving_to_loopback_is_refused_unless_allowed() {
        let p = policy(&["localhost:9000"]);
        assert_eq!(p.check("http://localhost:9000/x"), Err(Refusal::NotPublic));
        let open = Policy::new(&["localhost:9000".to_string()], true);
        assert_eq!(open.check("http://localhost:9000/x"), Ok(()));
        // The operator listed the address itself.
        let literal = policy(&["127.0.0.1:9000"]);
        assert_eq!(literal.check("http://127.0.0.1:9000/x"), Ok(()));
    }

    #[test]
    fn the_sender_connects_only_to_checked_addresses() {
        // As after DNS rebinding: the name passed at intake, now it resolves to loopback.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("addr").port();
        let url = format!("http://localhost:{port}/hook");
        let roots = crate::config::Roots::load(None, "webhooks.ca_file").expect("roots");
        let timeout = std::time::Duration::from_secs(5);
        let agent = crate::connector::agent_resolving(
            timeout,
            &roots,
            policy(&[&format!("localhost:{port}")]).resolver(),
        );
        let e = agent.post(&url).send("{}").expect_err("refused");
        assert!(e.to_string().contains("non-public"), "{e}");
        assert!(listener.accept().is_err(), "the box connected anyway");
        // Allowed by configuration, the same call goes out.
        let open = Policy::new(&[format!("localhost:{port}")], true);
        let agent = crate::connector::agent_resolving(timeout, &roots, open.resolver());
        let sent = std::thread::spawn(move || agent.post(&url).send("{}").map(|_| ()));
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if listener.accept().is_ok() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no connection");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        drop(listener);
        let _ = sent.join();
    }
}
