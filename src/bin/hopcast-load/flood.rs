//! Memory after a flood: how much of what a burst of sessions took the server gives
//! back to the OS once they are gone. Players (real WebRTC peers) and sessions carrying
//! the largest `connection` data allowed come and go; RSS is read before, at the peak
//! and after.

use std::time::Duration;

use futures_util::future::join_all;
use futures_util::SinkExt;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

fn mib(bytes: Option<u64>) -> f64 {
    bytes.unwrap_or(0) as f64 / (1024.0 * 1024.0)
}

pub async fn run(players: usize, sessions: usize) {
    let server = start_server(&[]);
    let url = server.ws_url();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = server.rss();
    let mut client = Client::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let (_rec_tx, rec_rx) = watch::channel(false);
    let (_done_tx, done_rx) = watch::channel(false);
    let publisher = client.publish(&url, "flood-src", 600_000, stop_rx).await;

    let mut held = Vec::new();
    for chunk in (0..players).collect::<Vec<_>>().chunks(16) {
        let runs = chunk.iter().map(|_| play(&client, &url, "flood-src", rec_rx.clone(), done_rx.clone()));
        held.extend(join_all(runs).await.into_iter().filter_map(Result::ok));
    }
    let pad = "x".repeat(15_000);
    let hello = format!(r#"{{"message":"connection","data":[{{"appKey":"defaultApp","custom":{{"pad":"{pad}"}}}}]}}"#);
    let mut raw = Vec::new();
    for _ in 0..sessions {
        if let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&url).await {
            let _ = ws.send(Message::Text(hello.clone().into())).await;
            raw.push(ws);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let peak = server.rss();
    let opened = (held.len(), raw.len());

    for p in &held {
        p.leg.end();
    }
    for mut ws in raw {
        let _ = ws.close(None).await;
    }
    drop(held);
    let _ = stop_tx.send(true);
    drop(publisher);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = server.rss();
    println!(
        "flood: {} players + {} sessions with 15 KB data: RSS {:.1} MiB before, {:.1} MiB at the peak, {:.1} MiB 5 s after they left",
        opened.0,
        opened.1,
        mib(before),
        mib(peak),
        mib(after)
    );
}
