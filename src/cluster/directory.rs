//! What this node knows of the cluster, sans-IO: the nodes it has heard from (role,
//! relay URI, load) and the streams each origin holds. Every node announces itself
//! with its streams over and over (see `cluster`), so a record lives only as long as
//! its node keeps talking: a silent node, and its streams, expire after the timeout,
//! and a restarted NATS server loses nothing for good.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One node's announcement (its heartbeat), as it travels over NATS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Announcement {
    pub id: String,
    pub origin: bool,
    pub edge: bool,
    /// Where other nodes' relay agents dial this node (ws:// or wss://).
    pub uri: String,
    /// Streams published here (an origin's, for edges to pull).
    pub streams: Vec<String>,
    /// Players on this node (its load).
    pub players: usize,
    /// The node is stopping: forget it now rather than after the silence timeout.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub leaving: bool,
}

impl Announcement {
    /// A record from the network: bounded, or refused (a warning, never a crash).
    pub fn decode(bytes: &[u8]) -> Result<Announcement, String> {
        let a: Announcement = serde_json::from_slice(bytes).map_err(|e| format!("malformed announcement: {e}"))?;
        if a.id.is_empty() || a.id.len() > 128 || a.uri.len() > 2048 || a.streams.len() > 100_000 {
            return Err("announcement out of bounds".into());
        }
        Ok(a)
    }
}

#[derive(Debug)]
pub struct Directory {
    me: String,
    timeout: Duration,
    nodes: HashMap<String, (Announcement, Instant)>,
}

impl Directory {
    pub fn new(me: String, timeout: Duration) -> Self {
        Directory { me, timeout, nodes: HashMap::new() }
    }

    /// A node spoke (this one included).
    pub fn heard(&mut self, a: Announcement, now: Instant) {
        if a.leaving {
            self.nodes.remove(&a.id);
        } else {
            self.nodes.insert(a.id.clone(), (a, now));
        }
    }

    /// Forget nodes silent for longer than the timeout; returns their ids.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let timeout = self.timeout;
        let gone: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, (_, at))| now.duration_since(*at) > timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            self.nodes.remove(id);
        }
        gone
    }

    /// The origin (other than this node) that holds `stream`. If two claim one name,
    /// the one with the lowest id answers everywhere, so every edge pulls the same.
    pub fn origin_of(&self, stream: &str) -> Option<&Announcement> {
        self.nodes
            .values()
            .map(|(a, _)| a)
            .filter(|a| a.id != self.me && a.origin && a.streams.iter().any(|s| s == stream))
            .min_by(|a, b| a.id.cmp(&b.id))
    }

    /// Every node heard from, by id.
    pub fn nodes(&self) -> Vec<&Announcement> {
        let mut nodes: Vec<&Announcement> = self.nodes.values().map(|(a, _)| a).collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        nodes
    }

    /// The least loaded edge (fewest players), for a player to be sent to.
    pub fn least_loaded_edge(&self) -> Option<&Announcement> {
        self.nodes
            .values()
            .map(|(a, _)| a)
            .filter(|a| a.edge)
            .min_by(|a, b| (a.players, &a.id).cmp(&(b.players, &b.id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, origin: bool, streams: &[&str], players: usize) -> Announcement {
        Announcement {
            id: id.into(),
            origin,
            edge: !origin,
            uri: format!("ws://{id}:8080/"),
            streams: streams.iter().map(|s| s.to_string()).collect(),
            players,
            leaving: false,
        }
    }

    #[test]
    fn streams_are_found_on_live_origins_only_and_expire_with_them() {
        let t0 = Instant::now();
        let mut d = Directory::new("edge-1".into(), Duration::from_secs(3));
        d.heard(node("origin-b", true, &["cam"], 0), t0);
        d.heard(node("origin-a", true, &["cam", "other"], 0), t0);
        d.heard(node("edge-1", false, &["cam"], 2), t0);
        // Two origins claim "cam": the lowest id answers, the same on every node.
        assert_eq!(d.origin_of("cam").map(|a| a.id.as_str()), Some("origin-a"));
        assert_eq!(d.origin_of("nothing"), None);
        // origin-a falls silent; origin-b keeps talking.
        d.heard(node("origin-b", true, &["cam"], 0), t0 + Duration::from_secs(2));
        assert!(d.expire(t0 + Duration::from_secs(2)).is_empty());
        let mut gone = d.expire(t0 + Duration::from_secs(4));
        gone.sort();
        assert_eq!(gone, ["edge-1", "origin-a"]);
        assert_eq!(d.origin_of("cam").map(|a| a.id.as_str()), Some("origin-b"));
        assert_eq!(d.origin_of("other"), None);
    }

    #[test]
    fn players_go_to_the_least_loaded_edge() {
        let t0 = Instant::now();
        let mut d = Directory::new("x".into(), Duration::from_secs(3));
        d.heard(node("e1", false, &[], 5), t0);
        d.heard(node("e2", false, &[], 1), t0);
        d.heard(node("o", true, &[], 0), t0);
        assert_eq!(d.least_loaded_edge().map(|a| a.id.as_str()), Some("e2"));
    }

    #[test]
    fn malformed_records_are_refused_not_fatal() {
        assert!(Announcement::decode(b"{not json").is_err());
        assert!(Announcement::decode(br#"{"id":"","origin":true,"edge":false,"uri":"x","streams":[],"players":0}"#)
            .is_err());
        let ok = br#"{"id":"n","origin":true,"edge":false,"uri":"ws://h:1/","streams":["a"],"players":0}"#;
        assert_eq!(Announcement::decode(ok).unwrap().streams, ["a"]);
    }
}
