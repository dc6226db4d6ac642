//! `GET /metrics`: the Prometheus text format (0.0.4), encoded by `prometheus-client`
//! from a snapshot taken at each scrape. Names follow Prometheus conventions (`hopcast_`
//! prefix, base units, `_total` counters); labels take only bounded values (protocols,
//! directions, statuses, refusal reasons, media thread numbers), never stream names.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::Sources;
use crate::media::latency::{Histogram, LatencySnapshot};
use crate::media::MediaStats;
use crate::relay::RelayFilter;
use crate::state::hub::{Counts, Refusal};

pub async fn handler(State(sources): State<Sources>) -> Response {
    match render(&sources).await {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("# metrics unavailable: {e}\n")).into_response(),
    }
}

/// The exposition text.
pub async fn render(sources: &Sources) -> Result<String, String> {
    let media = sources.hub.media().stats().await.map_err(|e| e.to_string())?;
    let relays = sources.relays.find(&RelayFilter::default());
    let snapshot = Snapshot {
        counts: sources.hub.counts(),
        census: sources.hub.census().into_iter().collect(),
        relays: relays.iter().map(|r| (format!("{:?}", r.direction).to_lowercase(), r.status.to_string())).collect(),
        reconnects: sources.relays.reconnects_total(),
        tasks: tokio::runtime::Handle::current().metrics().num_alive_tasks() as u64,
        cluster: sources.cluster.as_ref().map(|c| c.connected()),
        media,
    };
    let mut registry = Registry::default();
    registry.register_collector(Box::new(snapshot));
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).map_err(|e| e.to_string())?;
    Ok(text)
}

/// Everything one scrape reports.
#[derive(Debug)]
struct Snapshot {
    counts: Counts,
    census: Vec<((bool, &'static str), usize)>,
    /// (direction, status) per relay.
    relays: Vec<(String, String)>,
    reconnects: u64,
    tasks: u64,
    cluster: Option<bool>,
    media: MediaStats,
}

type Labels = Vec<(&'static str, String)>;

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, values: &[(Labels, i64)]) -> Result<(), std::fmt::Error> {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in values {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, values: &[(Labels, u64)]) -> Result<(), std::fmt::Error> {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in values {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn one<T>(v: T) -> [(Labels, T); 1] {
    [(Vec::new(), v)]
}

/// A latency histogram in seconds, with buckets at the powers of two (µs) it keeps.
fn histogram(e: &mut DescriptorEncoder, name: &str, help: &str, s: &LatencySnapshot) -> Result<(), std::fmt::Error> {
    let h = Histogram::from_snapshot(s);
    // prometheus-client adds the buckets up itself.
    let buckets = h.prometheus_buckets();
    let mut m = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
    m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(h.sum_us() as f64 / 1e6, h.count(), &buckets, None)
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let c = &self.counts;
        gauge(&mut e, "hopcast_sessions", "Signaling, WHIP/WHEP and relay sessions open", &one(c.sessions as i64))?;
        gauge(&mut e, "hopcast_connections", "Open TCP connections on all ports", &one(c.connections as i64))?;
        let streams: Vec<(Labels, i64)> = [true, false]
            .iter()
            .flat_map(|published| {
                ["wcs", "whip", "relay"].iter().map(move |protocol| {
                    let n = self.census.iter().find(|(k, _)| *k == (*published, *protocol)).map_or(0, |(_, n)| *n);
                    let role = if *published { "published" } else { "played" };
                    (vec![("role", role.to_string()), ("protocol", protocol.to_string())], n as i64)
                })
            })
            .collect();
        gauge(&mut e, "hopcast_streams", "Streams by role and by the protocol of their client", &streams)?;
        let mut relays: std::collections::BTreeMap<(String, String), i64> = Default::default();
        for key in &self.relays {
            *relays.entry(key.clone()).or_default() += 1;
        }
        let relays: Vec<(Labels, i64)> =
            relays.into_iter().map(|((d, s), n)| (vec![("direction", d), ("status", s)], n)).collect();
        gauge(&mut e, "hopcast_relays", "Relays by direction and status", &relays)?;
        counter(&mut e, "hopcast_relay_reconnects", "Reconnect attempts of relays", &one(self.reconnects))?;
        let mut refused: Vec<(Labels, u64)> = vec![(vec![("reason", "connections".into())], c.refused_connections)];
        for what in Refusal::ALL {
            refused.push((vec![("reason", what.label().to_string())], c.refused[what as usize]));
        }
        counter(&mut e, "hopcast_refused", "Requests refused, by the limit or check that refused them", &refused)?;
        gauge(&mut e, "hopcast_tasks", "Tokio tasks alive", &one(self.tasks as i64))?;
        if let Some(connected) = self.cluster {
            gauge(&mut e, "hopcast_cluster_connected", "1 when connected to NATS", &one(i64::from(connected)))?;
        }

        let (r, s) = (&self.media.router, &self.media.sent);
        gauge(&mut e, "hopcast_media_threads", "Media threads", &one(self.media.threads as i64))?;
        gauge(&mut e, "hopcast_media_peers", "WebRTC peers held", &one(r.peers as i64))?;
        counter(
            &mut e,
            "hopcast_media_packets_received",
            "Media packets received from publishers",
            &one(r.packets_in),
        )?;
        counter(&mut e, "hopcast_media_bytes_received", "Payload bytes received from publishers", &one(r.bytes_in))?;
        counter(
            &mut e,
            "hopcast_media_packets_forwarded",
            "Media packets written to players (one per copy)",
            &one(r.packets_forwarded),
        )?;
        counter(&mut e, "hopcast_media_bytes_forwarded", "Payload bytes written to players", &one(r.bytes_forwarded))?;
        counter(
            &mut e,
            "hopcast_media_datagrams_dropped",
            "UDP datagrams dropped (no peer, or not WebRTC)",
            &one(r.datagrams_dropped),
        )?;
        counter(&mut e, "hopcast_media_datagrams_sent", "UDP datagrams sent", &one(s.datagrams_sent))?;
        counter(
            &mut e,
            "hopcast_media_send_calls",
            "sendmmsg calls (datagrams per call = sent / calls)",
            &one(s.send_calls),
        )?;
        counter(
            &mut e,
            "hopcast_media_keyframe_requests_received",
            "Keyframe requests (PLI, FIR) from players",
            &one(r.keyframe_requests_received),
        )?;
        counter(
            &mut e,
            "hopcast_media_keyframe_requests_sent",
            "Keyframe requests sent to publishers (merged to one per 200 ms)",
            &one(r.keyframe_requests_sent),
        )?;
        counter(&mut e, "hopcast_media_nacks_sent", "NACKs sent to publishers (loss seen here)", &one(r.nacks_sent))?;
        counter(
            &mut e,
            "hopcast_media_nacks_received",
            "NACKs from players, answered from the retransmission cache",
            &one(r.nacks_received),
        )?;
        counter(&mut e, "hopcast_media_retransmissions", "Packets retransmitted to players", &one(r.retransmissions))?;
        let busy: Vec<(Labels, u64)> =
            self.media.busy_ns.iter().enumerate().map(|(i, ns)| (vec![("thread", i.to_string())], *ns)).collect();
        let mut m = e.encode_descriptor(
            "hopcast_media_thread_busy_seconds",
            "Time each media thread spent working rather than waiting",
            None,
            MetricType::Counter,
        )?;
        for (labels, ns) in &busy {
            ConstCounter::new(*ns as f64 / 1e9).encode(m.encode_family(labels)?)?;
        }
        histogram(
            &mut e,
            "hopcast_media_forward_latency_seconds",
            "From a media packet's arrival in the kernel to every copy of it sent",
            &self.media.forward_latency,
        )?;
        histogram(
            &mut e,
            "hopcast_media_read_latency_seconds",
            "From a media packet's arrival in the kernel to its read by a media thread",
            &self.media.read_latency,
        )?;
        Ok(())
    }
}
