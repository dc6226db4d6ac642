//! Whole-server behaviour with real WebRTC: a str0m client publishes synthetic RTP to a
//! hopcast process, str0m clients play it, and the bytes must arrive intact.

mod common;

use std::time::Duration;

use common::*;
use hopcast::media::MediaEvent;
use hopcast::wcs::protocol::{reason, StreamStatus};

const STATUS_WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_packets_reach_several_players_intact() {
    let stats = forward_to_three_players(&[]).await;
    let count = |name: &str| stats[name].as_u64().unwrap();
    // Every media packet the server took in is in its latency histograms, and was sent
    // on to all three players.
    let packets_in = count("packetsIn");
    assert!(packets_in >= 380, "{stats}");
    assert!(count("packetsForwarded") >= 3 * packets_in - 3, "{stats}");
    assert!(count("datagramsSent") >= count("packetsForwarded"), "{stats}");
    for histogram in ["forwardLatency", "readLatency"] {
        let h = &stats[histogram];
        assert_eq!(h["count"].as_u64(), Some(packets_in), "{histogram}: {h}");
        assert!(h["p50Us"].as_u64() <= h["p99Us"].as_u64() && h["p99Us"].as_u64() <= h["maxUs"].as_u64(), "{h}");
    }
}

/// Two media threads, consumers spread from the first: players on both threads get every
/// packet intact (the home thread passes them to the other), and nothing leaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_spread_over_media_threads_get_packets_intact() {
    let stats = forward_to_three_players(&SPREAD).await;
    assert_eq!(stats["threads"], 2, "{stats}");
    // The three players' copies were sealed on both threads: more than the home thread's
    // own 400 packets' worth of forwarding happened, all counted once per copy.
    let packets_in = stats["packetsIn"].as_u64().unwrap();
    assert!(stats["packetsForwarded"].as_u64().unwrap() >= 3 * packets_in - 3, "{stats}");
}

const SPREAD: [&str; 4] = ["--set", "media.threads=2", "--set", "media.spread_after=0"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_arrive_intact_without_gso_too() {
    let stats = forward_to_three_players(&["--set", "media.gso=false"]).await;
    // One message per datagram: nothing was joined.
    assert_eq!(stats["messagesSent"], stats["datagramsSent"], "{stats}");
}

/// A publisher and three players on a server started with `args`; the 400 packets sent
/// must reach every player intact, and their peers must be gone once they stop. Returns
/// the server's media stats from before they stopped.
async fn forward_to_three_players(args: &[&str]) -> serde_json::Value {
    let server = Server::start(args);
    let client = client_media();
    let media = &client.media;

    let (source, _publisher, _published) = publish_source(&server, media, "cam").await;

    let mut taps = Vec::new();
    let mut players = Vec::new();
    for _ in 0..3 {
        let session = connect(&server).await;
        let sink = media.next_id();
        taps.push(media.tap(sink));
        let mut player = session.play(media, "cam", sink).await.unwrap();
        player.wait_for(StreamStatus::Playing, STATUS_WAIT).await.unwrap();
        players.push((session, player));
    }
    // ICE/DTLS on our side may finish a moment after the server reports PLAYING.
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_packets(media, source, 1, 200).await;
    for tap in &mut taps {
        let got = collect(tap, Duration::from_secs(2)).await;
        let (video, audio) = verify_intact(&got);
        assert!(video >= 190 && audio >= 190, "video {video}, audio {audio} of 200 each");
    }
    let (code, body) = http(server.http, "GET", "/rest-api/stats", None);
    assert_eq!(code, 200, "{body}");
    // The players leave: the server keeps the publisher's peer only, on whatever thread.
    for (_, player) in &mut players {
        player.stop_and_wait(STATUS_WAIT).await;
    }
    expect_media_peers(&server, 1).await;
    json(&body)["media"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn player_join_requests_a_keyframe_from_the_publisher() {
    keyframe_request_on_join(&[]).await;
}

/// The player sits on the other media thread: its request travels to the home thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyframe_requests_cross_media_threads() {
    keyframe_request_on_join(&SPREAD).await;
}

async fn keyframe_request_on_join(args: &[&str]) {
    let server = Server::start(args);
    let mut client = client_media();
    let (source, _publisher, _published) = publish_source(&server, &client.media, "kf").await;
    // The server can only ask for a keyframe once video has arrived.
    send_packets(&client.media, source, 1, 20).await;
    // Requests are merged within 200 ms; let the one from our own connect pass.
    tokio::time::sleep(Duration::from_millis(300)).await;
    while client.events.try_recv().is_ok() {}

    let viewer = connect(&server).await;
    let sink = client.media.next_id();
    let mut player = viewer.play(&client.media, "kf", sink).await.unwrap();
    player.wait_for(StreamStatus::Playing, STATUS_WAIT).await.unwrap();
    let requested = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match client.events.recv().await {
                Some(MediaEvent::KeyframeRequested { key }) if key == source => return true,
                Some(_) => continue,
                None => return false,
            }
        }
    })
    .await;
    assert_eq!(requested, Ok(true), "the server never asked the publisher for a keyframe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpublish_stops_players_and_the_name_can_be_published_again() {
    let server = Server::start(&[]);
    let client = client_media();
    let media = &client.media;
    let session = connect(&server).await;

    let source = media.next_id();
    media.add_source(source);
    let mut published = session.publish(media, "again", source).await.unwrap();
    published.wait_for(StreamStatus::Publishing, STATUS_WAIT).await.unwrap();
    let viewer = connect(&server).await;
    let mut player = viewer.play(media, "again", media.next_id()).await.unwrap();
    player.wait_for(StreamStatus::Playing, STATUS_WAIT).await.unwrap();

    published.stop();
    let unpublished = published.next_status().await.unwrap();
    assert_eq!(unpublished.status, StreamStatus::Unpublished);
    let stopped = player.next_status().await.unwrap();
    assert_eq!((stopped.status, stopped.info.as_deref()), (StreamStatus::Stopped, Some(reason::PUBLISHER_STOP)));

    let mut republished = session.publish(media, "again", source).await.unwrap();
    republished.wait_for(StreamStatus::Publishing, STATUS_WAIT).await.unwrap();
    let sink = media.next_id();
    let mut tap = media.tap(sink);
    let mut player = viewer.play(media, "again", sink).await.unwrap();
    player.wait_for(StreamStatus::Playing, STATUS_WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    send_packets(media, source, 1000, 50).await;
    let (video, _) = verify_intact(&collect(&mut tap, Duration::from_secs(1)).await);
    assert!(video >= 45, "only {video} of 50 packets after republish");

    player.stop();
    let stopped = player.next_status().await.unwrap();
    assert_eq!(stopped.status, StreamStatus::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_disconnect_stops_players_with_a_reason() {
    let server = Server::start(&[]);
    let client = client_media();
    let media = &client.media;
    let (_source, publisher, _published) = publish_source(&server, media, "gone").await;
    let viewer = connect(&server).await;
    let mut player = viewer.play(media, "gone", media.next_id()).await.unwrap();
    player.wait_for(StreamStatus::Playing, STATUS_WAIT).await.unwrap();

    publisher.close();
    let stopped = tokio::time::timeout(STATUS_WAIT, player.next_status()).await.unwrap().unwrap();
    assert_eq!((stopped.status, stopped.info.as_deref()), (StreamStatus::Stopped, Some(reason::PUBLISHER_STOP)));
    let (status, body) = http(server.http, "POST", "/rest-api/stream/find", Some(r#"{"name":"gone"}"#));
    assert_eq!(status, 404, "stream still listed: {body}");
    expect_media_peers(&server, 0).await;
}
