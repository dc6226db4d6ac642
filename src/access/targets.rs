//! Where relays may connect (`relay.allow`). `/pull/push` and `/pull/pull` take a URI
//! from whoever can reach the REST API; without a list that is a way to make the server
//! open connections to any host and port (a server-side request forgery). The check is
//! on the name as given, before any connection: no DNS lookup, so an operator lists the
//! names (or addresses) they trust.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    /// `*`: anywhere.
    Any,
    /// `cluster`: the relay URI of any node the cluster directory lists.
    Cluster,
    /// `host` or `host:port` (a name or an IP address; IPv6 in brackets).
    Host { host: String, port: Option<u16> },
    /// `*.example.com` or `*.example.com:port`: any name under the domain.
    Domain { suffix: String, port: Option<u16> },
}

/// The parsed allow-list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayTargets(Vec<Rule>);

/// A target the list does not allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Split `host[:port]` (with `[v6]` brackets) into a lowercase host and the port.
fn host_port(text: &str) -> Result<(String, Option<u16>), ()> {
    let text = text.trim();
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest.split_once(']').ok_or(())?;
            (host, after.strip_prefix(':'))
        }
        None => match text.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, Some(p)),
            _ => (text, None),
        },
    };
    let port = port.map(|p| p.parse::<u16>().map_err(|_| ())).transpose()?;
    if host.is_empty() || host.contains(['/', '@', ' ', '*']) {
        return Err(());
    }
    Ok((host.to_ascii_lowercase(), port))
}

impl RelayTargets {
    /// Parse `relay.allow`; an empty list allows nothing. `Err` names the bad entry.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut rules = Vec::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = |()| format!("bad relay.allow entry '{entry}'");
            rules.push(match entry {
                "*" => Rule::Any,
                "cluster" => Rule::Cluster,
                _ => match entry.strip_prefix("*.") {
                    Some(domain) => {
                        let (suffix, port) = host_port(domain).map_err(bad)?;
                        Rule::Domain { suffix: format!(".{suffix}"), port }
                    }
                    None => {
                        let (host, port) = host_port(entry).map_err(bad)?;
                        Rule::Host { host, port }
                    }
                },
            });
        }
        Ok(RelayTargets(rules))
    }

    /// Everything is allowed (`*`, the default).
    pub fn allows_any(&self) -> bool {
        self.0.contains(&Rule::Any)
    }

    /// May a relay dial `uri`? `cluster_node` says whether `uri`'s host and port are a
    /// cluster node's (asked only when the list has `cluster`).
    pub fn check(&self, uri: &str, cluster_node: impl Fn(&str, u16) -> bool) -> Result<(), Refused> {
        if self.allows_any() {
            return Ok(());
        }
        let parsed: axum::http::Uri = uri.parse().map_err(|_| Refused(format!("Bad URI: '{uri}'")))?;
        let host = parsed.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        let secure = matches!(parsed.scheme_str(), Some("wss" | "https"));
        let port = parsed.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let port_ok = |p: &Option<u16>| p.is_none_or(|p| p == port);
        let allowed = self.0.iter().any(|rule| match rule {
            Rule::Any => true,
            Rule::Cluster => cluster_node(&host, port),
            Rule::Host { host: h, port: p } => *h == host && port_ok(p),
            Rule::Domain { suffix, port: p } => host.ends_with(suffix.as_str()) && port_ok(p),
        });
        match allowed {
            true => Ok(()),
            false => Err(Refused(format!("Relay target not allowed: {host}:{port} is not in relay.allow"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(spec: &str, uri: &str) -> bool {
        RelayTargets::parse(spec).unwrap().check(uri, |h, p| h == "10.0.0.9" && p == 8080).is_ok()
    }

    #[test]
    fn rules_match_hosts_ports_domains_and_the_cluster() {
        assert!(allowed("*", "ws://anything:1/"));
        assert!(!allowed("", "ws://127.0.0.1:8080/"));
        assert!(allowed("media.example.com", "wss://MEDIA.example.com:8443/"));
        assert!(allowed("127.0.0.1:8080", "ws://127.0.0.1:8080"));
        assert!(!allowed("127.0.0.1:8080", "ws://127.0.0.1:8081"));
        assert!(allowed("*.example.com:443", "wss://a.b.example.com/"));
        assert!(!allowed("*.example.com", "ws://example.com.evil.net/"));
        assert!(!allowed("*.example.com", "ws://badexample.com/"));
        assert!(allowed("[::1]:9000", "ws://[::1]:9000/"));
        assert!(allowed("cluster", "ws://10.0.0.9:8080/"));
        assert!(!allowed("cluster", "ws://10.0.0.9:8081/"));
        assert!(!allowed("a.example.com", "ws://user@b.example.com/"));
    }

    #[test]
    fn bad_entries_are_refused() {
        for bad in ["a/b", "host:port", "[::1", "user@host", "*"] {
            let spec = if bad == "*" { "*.*" } else { bad };
            assert!(RelayTargets::parse(spec).is_err(), "{spec}");
        }
    }
}
