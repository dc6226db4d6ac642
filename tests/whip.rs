//! WHIP and WHEP against a real server process, with the client library: a WHIP
//! publisher played over the WCS protocol, a WCS publisher played over WHEP, DELETE
//! ending a stream, and every error path with its status code.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use hopcast::testkit::process::http_exchange;
use hopcast::wcs::protocol::{reason, StreamStatus};
use hopcast::whip::client::{self as whip, WhipError};

const WAIT: Duration = Duration::from_secs(10);

fn endpoint(server: &Server, kind: &str, name: &str) -> String {
    format!("http://127.0.0.1:{}/{kind}/{name}", server.http)
}

fn tls() -> Arc<rustls::ClientConfig> {
    hopcast::net::tls::client_config(None).unwrap()
}

fn status_of(server: &Server, name: &str, published: bool) -> Option<String> {
    let filter = format!(r#"{{"name":"{name}","published":{published}}}"#);
    let (code, body) = http(server.http, "POST", "/rest-api/stream/find", Some(&filter));
    (code == 200).then(|| json(&body)[0]["status"].as_str().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whip_publisher_plays_over_the_wcs_protocol_and_delete_ends_it() {
    let server = Server::start(&[]);
    let ClientMedia { media, .. } = client_media();
    let source = media.next_id();
    media.add_source(source);
    let session =
        whip::publish(&media, &endpoint(&server, "whip", "cam"), None, tls(), media.next_id(), source).await.unwrap();
    assert!(session.resource.starts_with(&format!("http://127.0.0.1:{}/whip/resource/", server.http)));
    eventually("the WHIP stream is published", || status_of(&server, "cam", true).as_deref() == Some("PUBLISHING"))
        .await;
    let (_, sessions) = http(server.http, "GET", "/rest-api/connection/find_all", None);
    assert!(sessions.contains("WHIP"), "{sessions}");

    let viewer = connect(&server).await;
    let sink = media.next_id();
    let mut tap = media.tap(sink);
    let mut player = viewer.play(&media, "cam", sink).await.unwrap();
    player.wait_for(StreamStatus::Playing, WAIT).await.unwrap();
    received_after(&media, source, &mut tap, 1).await;

    // DELETE: the stream ends, and its player hears it as from any publisher.
    assert_eq!(session.delete().await.unwrap(), 200);
    let ended = player.wait_for(StreamStatus::Stopped, WAIT).await.unwrap();
    assert_eq!(ended.info.as_deref(), Some(reason::PUBLISHER_STOP));
    assert_eq!(session.delete().await.unwrap(), 404, "a resource is deleted once");
    assert_eq!(status_of(&server, "cam", true), None);
    player.stop();
    expect_media_peers(&server, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wcs_publisher_plays_over_whep() {
    let server = Server::start(&[]);
    let ClientMedia { media, .. } = client_media();
    let (source, _s, _p) = publish_source(&server, &media, "cam").await;
    let sink = media.next_id();
    let mut tap = media.tap(sink);
    let session =
        whip::play(&media, &endpoint(&server, "whep", "cam"), None, tls(), media.next_id(), sink).await.unwrap();
    eventually("the WHEP player plays", || status_of(&server, "cam", false).as_deref() == Some("PLAYING")).await;
    let got = received_after(&media, source, &mut tap, 1).await;
    assert!(got.first >= 1);
    assert_eq!(session.delete().await.unwrap(), 200);
    eventually("the WHEP player is gone", || status_of(&server, "cam", false).is_none()).await;
    expect_media_peers(&server, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_and_whep_errors_have_their_status_codes() {
    let backend = TokenBackend::start("good").await;
    let hooks = format!("hooks.url=http://{backend}/app");
    let server = Server::start(&["--set", &hooks]);
    let ClientMedia { media, .. } = client_media();
    let refused = |e: Result<whip::WhipSession, WhipError>| match e {
        Err(WhipError::Refused(code, text)) => (code, text),
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("admitted"),
    };
    let source = media.next_id();
    media.add_source(source);
    let publish = |name: &str, token: Option<&'static str>| {
        let url = endpoint(&server, "whip", name);
        let media = media.clone();
        async move { whip::publish(&media, &url, token, tls(), media.next_id(), source).await }
    };

    // No token, a wrong one: 401 with the backend's reason.
    assert_eq!(refused(publish("cam", None).await), (401, "Bad token".into()));
    assert_eq!(refused(publish("cam", Some("guess")).await), (401, "Bad token".into()));
    let first = publish("cam", Some("good")).await.unwrap();
    // The name is taken (by WHIP or anyone): 409.
    assert_eq!(refused(publish("cam", Some("good")).await), (409, reason::NAME_IN_USE.into()));
    // WHEP of a name nobody publishes: 404.
    let url = endpoint(&server, "whep", "nobody");
    let missing = whip::play(&media, &url, Some("good"), tls(), media.next_id(), media.next_id()).await;
    assert_eq!(refused(missing), (404, reason::STREAM_NOT_FOUND.into()));

    // Raw requests: content type, bad SDP, a player with no common codec.
    let raw = |path: &str, content_type: &str, body: &str| {
        let headers = [("Content-Type", content_type), ("Authorization", "Bearer good")];
        let (code, _, text) = http_exchange(server.http, "POST", path, &headers, Some(body));
        (code, json(&text)["error"].as_str().unwrap_or_default().to_string())
    };
    let (code, text) = raw("/whip/other", "application/json", "{}");
    assert_eq!((code, text.as_str()), (415, "The offer must be sent as application/sdp"));
    let (code, text) = raw("/whip/other", "application/sdp", "v=0 nonsense");
    assert_eq!(code, 400, "{text}");
    assert!(text.starts_with("Invalid SDP"), "{text}");
    let chrome_player = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sdp/chrome-play.sdp"));
    let (code, text) = raw("/whep/cam", "application/sdp", &strip_codec(&chrome_player.unwrap(), "VP8"));
    assert_eq!((code, text.as_str()), (422, reason::NO_COMMON_CODECS));

    // The resource: PATCH is not supported (405), unknown ones are 404, OPTIONS answers CORS.
    let path = first.resource.split_once(&format!(":{}", server.http)).unwrap().1.to_string();
    let (code, head, _) =
        http_exchange(server.http, "PATCH", &path, &[("Content-Type", "application/trickle-ice-sdpfrag")], Some(""));
    assert_eq!(code, 405);
    assert!(head.to_ascii_lowercase().contains("allow: delete, options"), "{head}");
    assert_eq!(http_exchange(server.http, "DELETE", "/whip/resource/nope", &[], None).0, 404);
    assert_eq!(http_exchange(server.http, "PATCH", "/whep/resource/nope", &[], None).0, 404);
    let (code, head, _) =
        http_exchange(server.http, "OPTIONS", "/whip/cam", &[("Origin", "https://example.com")], None);
    let head = head.to_ascii_lowercase();
    assert_eq!(code, 204);
    assert!(
        head.contains("accept-post: application/sdp") && head.contains("access-control-expose-headers: location, etag"),
        "{head}"
    );
    assert_eq!(first.delete().await.unwrap(), 200);
}

/// Relays over WHIP and WHEP: server 1 pushes its stream to server 2 over WHIP, server 3
/// pulls it from server 2 over WHEP; a player on server 3 gets the bytes intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_push_over_whip_and_pull_over_whep() {
    let (s1, s2, s3) = (Server::start(&[]), Server::start(&[]), Server::start(&[]));
    let ClientMedia { media, .. } = client_media();
    let (source, _s, _p) = publish_source(&s1, &media, "cam").await;
    let push =
        format!(r#"{{"uri":"http://127.0.0.1:{}/whip","localStreamName":"cam","remoteStreamName":"hop"}}"#, s2.http);
    let (code, relay) = http(s1.http, "POST", "/rest-api/pull/push", Some(&push));
    assert_eq!(code, 200, "{relay}");
    assert_eq!(json(&relay)["status"], "PUBLISHING");
    assert!(json(&relay)["remoteMediaSessionId"].as_str().unwrap().contains("/whip/resource/"), "{relay}");
    eventually("the WHIP stream is on server 2", || status_of(&s2, "hop", true).as_deref() == Some("PUBLISHING")).await;

    let pull = format!(
        r#"{{"uri":"http://127.0.0.1:{}/whep/hop","localStreamName":"far","remoteStreamName":"hop"}}"#,
        s2.http
    );
    let (code, relay) = http(s3.http, "POST", "/rest-api/pull/pull", Some(&pull));
    assert_eq!(code, 200, "{relay}");
    assert_eq!(json(&relay)["status"], "PLAYING");
    assert_plays(&s3, &media, "far", source, 1).await;

    // Terminating the push deletes its WHIP session: the stream leaves server 2.
    let (code, _) = http(s1.http, "POST", "/rest-api/pull/terminate", Some(r#"{"localStreamName":"cam"}"#));
    assert_eq!(code, 200);
    eventually("the WHIP stream left server 2", || status_of(&s2, "hop", true).is_none()).await;
}

/// A WHIP/WHEP session holds no TCP connection, so the cap on connections per address
/// counts its sessions instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_sessions_per_address_are_capped() {
    let server = Server::start(&["--set", "limits.connections_per_ip=2"]);
    let ClientMedia { media, .. } = client_media();
    let source = media.next_id();
    media.add_source(source);
    let mut sessions = Vec::new();
    for name in ["a", "b"] {
        let url = endpoint(&server, "whip", name);
        sessions.push(whip::publish(&media, &url, None, tls(), media.next_id(), source).await.unwrap());
    }
    let third = whip::publish(&media, &endpoint(&server, "whip", "c"), None, tls(), media.next_id(), source).await;
    match third {
        Err(WhipError::Refused(429, why)) => assert!(why.contains("limits.connections_per_ip"), "{why}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a third WHIP session from one address was admitted"),
    }
    assert_eq!(sessions[0].delete().await.unwrap(), 200);
    whip::publish(&media, &endpoint(&server, "whip", "c"), None, tls(), media.next_id(), source).await.unwrap();
}
