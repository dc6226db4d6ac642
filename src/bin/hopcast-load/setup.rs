//! Setup costs: publish-to-PUBLISHING, play-to-first-packet, and how many sessions per
//! second one server sets up (connect, `connection`, publish, PUBLISHING).

use std::path::Path;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use hopcast::wcs::client::SignalingClient;
use hopcast::wcs::protocol::StreamStatus;
use tokio::sync::watch;

use crate::common::*;

async fn publish_once(client: &Client, url: &str, name: &str) -> Option<Duration> {
    let session = SignalingClient::connect(url, None).await.ok()?;
    let key = client.media.next_id();
    client.media.add_source(key);
    let t = Instant::now();
    let mut stream = session.publish(&client.media, name, key).await.ok()?;
    stream.wait_for(StreamStatus::Publishing, WAIT).await.ok()?;
    let took = t.elapsed();
    stream.stop();
    session.close();
    Some(took)
}

pub async fn run(trials: usize, sessions: usize, csv: &Path) {
    let server = start_server(&[]);
    let url = server.ws_url();
    let mut client = Client::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (_rec_tx, rec_rx) = watch::channel(false);
    // The sender must live: a closed channel would end the players at once.
    let (_done_tx, done_rx) = watch::channel(false);
    let _publisher = client.publish(&url, "setup-src", 600_000, stop_rx).await;

    let mut publish = Vec::new();
    let mut first = Vec::new();
    for i in 0..trials {
        eprint!("\r  setup: trial {}/{trials}   ", i + 1);
        if let Some(t) = publish_once(&client, &url, &format!("setup-{i}")).await {
            publish.push(t);
        }
        let mut p = play(&client, &url, "setup-src", rec_rx.clone(), done_rx.clone()).await.expect("play");
        if let Some(t) = first_packet(&mut p).await {
            first.push(t);
        }
        p.leg.end();
    }

    eprint!("\r  setup: {sessions} sessions...        ");
    let start = Instant::now();
    let mut ok = 0;
    for chunk in (0..sessions).collect::<Vec<_>>().chunks(16) {
        let names: Vec<String> = chunk.iter().map(|i| format!("rate-{i}")).collect();
        let runs = names.iter().map(|name| publish_once(&client, &url, name));
        ok += join_all(runs).await.iter().filter(|r| r.is_some()).count();
    }
    let rate = ok as f64 / start.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    eprintln!("\r                                        ");

    let (pub_median, pub_max) = median_max(publish);
    let (first_median, first_max) = median_max(first);
    println!("\nsetup (one server)");
    println!("publish -> PUBLISHING:      median {pub_median:.1} ms, max {pub_max:.1} ms ({trials} trials)");
    println!("play -> first packet:       median {first_median:.1} ms, max {first_max:.1} ms");
    println!(
        "sessions set up per second: {rate:.0} ({ok} of {sessions}, 16 at a time, each connect + publish + PUBLISHING)"
    );
    let row = format!("{},setup,{pub_median:.1},{pub_max:.1},{first_median:.1},{first_max:.1},{rate:.0}", timestamp());
    append_csv(
        &csv.with_file_name("setup.csv"),
        "unix_time,scenario,publish_median_ms,publish_max_ms,first_packet_median_ms,first_packet_max_ms,sessions_per_s",
        &row,
    );
}
