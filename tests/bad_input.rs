//! Every bad input gets a clear answer, and none of them hurts the server: malformed or
//! unknown signaling messages, bad SDP, name and id clashes, unknown streams, codec
//! mismatches, oversized frames, bad REST calls, garbage UDP datagrams.

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use hopcast::media::Role;
use hopcast::wcs::protocol::{reason, ClientMessage, ServerMessage, StreamInfo, StreamRequest, StreamStatus};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(10);

async fn next_fail(client: &hopcast::wcs::client::SignalingClient) -> String {
    let message = tokio::time::timeout(WAIT, async {
        loop {
            match client.next_unrouted().await {
                Some(ServerMessage::Fail(f)) => return f.info,
                Some(_) => continue,
                None => panic!("connection closed instead of a fail warning"),
            }
        }
    });
    message.await.expect("no fail warning")
}

/// Send a raw publish/play request and return the first status for it.
async fn request_status(
    client: &hopcast::wcs::client::SignalingClient,
    message: ClientMessage,
    id: &str,
) -> StreamInfo {
    let mut rx = client.subscribe(id);
    client.send(message);
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(ServerMessage::StreamStatus(s)) = rx.recv().await {
                return s;
            }
        }
    })
    .await
    .expect("no stream status")
}

fn request(id: &str, name: &str, sdp: &str) -> StreamRequest {
    StreamRequest {
        media_session_id: id.into(),
        name: name.into(),
        has_audio: true,
        has_video: true,
        sdp: sdp.into(),
        media_provider: "WebRTC".into(),
        published: false,
        custom: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unknown_messages_get_a_fail_warning_and_the_session_lives() {
    let server = Server::start(&[]);
    let client = connect(&server).await;
    client.send_text("{not json".into());
    assert!(next_fail(&client).await.starts_with("Malformed message"));
    client.send_text(r#"{"message":"teleport","data":[{}]}"#.into());
    assert_eq!(next_fail(&client).await, "Unknown message 'teleport'");
    client.send_text(r#"{"message":"publishStream","data":["nonsense"]}"#.into());
    assert!(next_fail(&client).await.starts_with("Bad arguments for 'publishStream'"));
    client.send_text(r#"{"message":"stopStream","data":[{"mediaSessionId":"never-was"}]}"#.into());
    assert_eq!(next_fail(&client).await, reason::STREAM_NOT_FOUND);
    // Still alive: the session still answers (the client library keeps pongs to itself).
    assert_still_answers(&client).await;
}

/// The session is alive: a request still gets its answer.
async fn assert_still_answers(client: &hopcast::wcs::client::SignalingClient) {
    client.send_text(r#"{"message":"stopStream","data":[{"mediaSessionId":"still-there?"}]}"#.into());
    assert_eq!(next_fail(client).await, reason::STREAM_NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_requests_with_bad_sdp_names_or_ids_fail_with_reasons() {
    let server = Server::start(&[]);
    let cm = client_media();
    let media = &cm.media;
    let client = connect(&server).await;

    let status =
        request_status(&client, ClientMessage::PublishStream(request("bad-sdp", "x", "this is not SDP")), "bad-sdp")
            .await;
    assert_eq!(status.status, StreamStatus::Failed);
    assert!(status.info.as_deref().unwrap().starts_with("Invalid SDP"), "{status:?}");

    let status =
        request_status(&client, ClientMessage::PlayStream(request("nobody", "nobody-publishes", "v=0")), "nobody")
            .await;
    assert_eq!((status.status, status.info.as_deref()), (StreamStatus::Failed, Some(reason::STREAM_NOT_FOUND)));

    let source = media.next_id();
    media.add_source(source);
    let mut published = client.publish(media, "taken", source).await.unwrap();
    published.wait_for(StreamStatus::Publishing, WAIT).await.unwrap();

    let other = connect(&server).await;
    let clash = other.publish(media, "taken", source).await.err();
    assert_eq!(clash, Some(hopcast::wcs::client::ClientError::Failed(reason::NAME_IN_USE.into())));

    let reused = ClientMessage::PlayStream(request(&published.media_session_id, "taken", "v=0"));
    let status = request_status(&other, reused, &published.media_session_id).await;
    assert_eq!((status.status, status.info.as_deref()), (StreamStatus::Failed, Some(reason::MEDIA_SESSION_ID_IN_USE)));

    // A player that cannot take VP8 (the publisher's codec) is refused.
    let peer = media.next_id();
    let offer = media.offer(peer, Role::Producer(media.next_id())).await.unwrap();
    let h264_only = strip_codec(&offer, "VP8");
    assert!(!h264_only.contains("VP8") && h264_only.contains("H264"));
    let status =
        request_status(&other, ClientMessage::PlayStream(request("h264-only", "taken", &h264_only)), "h264-only").await;
    assert_eq!((status.status, status.info.as_deref()), (StreamStatus::Failed, Some(reason::NO_COMMON_CODECS)));

    // The refusals left nothing behind: only the publisher is listed and has a peer.
    expect_media_peers(&server, 1).await;
    let (code, body) = http(server.http, "POST", "/rest-api/stream/find_all", None);
    assert_eq!(code, 200);
    let streams = json(&body);
    assert_eq!(streams.as_array().unwrap().len(), 1, "{body}");
    assert_eq!(streams[0]["status"], "PUBLISHING");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_before_connection_fail_with_session_does_not_exist() {
    let server = Server::start(&[]);
    let (mut ws, _) = tokio_tungstenite::connect_async(server.ws_url()).await.unwrap();
    let publish = ClientMessage::PublishStream(request("early", "early", "v=0"));
    ws.send(Message::Text(publish.encode().into())).await.unwrap();
    let reply = tokio::time::timeout(WAIT, ws.next()).await.unwrap().unwrap().unwrap();
    let ServerMessage::StreamStatus(s) = ServerMessage::decode(reply.to_text().unwrap()).unwrap() else {
        panic!("{reply:?}")
    };
    assert_eq!((s.status, s.info.as_deref()), (StreamStatus::Failed, Some(reason::SESSION_DOES_NOT_EXIST)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_are_refused_then_cut_off() {
    let server = Server::start(&["--set", "ws.max_message_size=4096"]);
    let client = connect(&server).await;
    client.send_text(format!(r#"{{"message":"ping","data":["{}"]}}"#, "x".repeat(5000)));
    assert_eq!(next_fail(&client).await, "Message too large: 5030 bytes (limit 4096)");
    assert_still_answers(&client).await;
    // Past four times the limit the transport itself refuses and closes the connection.
    client.send_text("x".repeat(20_000));
    tokio::time::timeout(WAIT, client.wait_closed()).await.expect("connection stayed open");
    // The server is fine.
    let other = connect(&server).await;
    assert!(!other.session_id.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_on_the_media_port_do_not_disturb_streams() {
    let server = Server::start(&[]);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let junk: [&[u8]; 5] = [b"", b"\x00\x01\x00\x00garbage", &[0x80; 1400], &[0x16, 0xfe, 0xfd, 0, 0], &[0xff; 9000]];
    for _ in 0..50 {
        for j in junk {
            let _ = socket.send_to(j, server.media);
        }
    }
    let cm = client_media();
    let media = &cm.media;
    let (source, client, _published) = publish_source(&server, media, "after-junk").await;
    let sink = media.next_id();
    let mut tap = media.tap(sink);
    let mut player = client.play(media, "after-junk", sink).await.unwrap();
    player.wait_for(StreamStatus::Playing, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for j in junk {
        let _ = socket.send_to(j, server.media);
    }
    send_packets(media, source, 1, 50).await;
    let (video, audio) = verify_intact(&collect(&mut tap, Duration::from_secs(1)).await);
    assert!(video >= 45 && audio >= 45, "video {video}, audio {audio}");
}

#[test]
fn rest_answers_bad_calls_with_json_errors() {
    let server = Server::start(&[]);
    let error = |(code, body): (u16, String)| (code, json(&body)["error"].as_str().unwrap().to_string());

    let (code, msg) = error(http(server.http, "POST", "/rest-api/stream/find", Some("{broken")));
    assert_eq!(code, 400);
    assert!(msg.starts_with("Invalid request body"), "{msg}");
    assert_eq!(
        error(http(server.http, "POST", "/rest-api/stream/terminate", Some("{}"))),
        (400, "Missing field 'mediaSessionId'".into())
    );
    assert_eq!(
        error(http(server.http, "POST", "/rest-api/connection/terminate", Some(r#"{"sessionId":""}"#))),
        (400, "Missing field 'sessionId'".into())
    );
    assert_eq!(
        error(http(server.http, "POST", "/rest-api/stream/terminate", Some(r#"{"mediaSessionId":"nope"}"#))),
        (404, "Stream with mediaSessionId 'nope' not found".into())
    );
    assert_eq!(
        error(http(server.http, "POST", "/rest-api/does/not_exist", Some("{}"))),
        (404, "Unknown REST method POST /rest-api/does/not_exist".into())
    );
    assert_eq!(error(http(server.http, "GET", "/rest-api/stream/find_all", None)), (404, "No streams found".into()));
    let (code, _) = http(server.http, "POST", "/rest-api/stream/find", Some(r#"{"published":"yes"}"#));
    assert_eq!(code, 400);
    let (code, msg) = error(http(server.http, "POST", "/rest-api/stream/find", Some(r#"{"nmae":"typo"}"#)));
    assert!(code == 400 && msg.contains("unknown field `nmae`"), "{code} {msg}");
    let (code, msg) = error(http(server.http, "POST", "/rest-api/pull/find", Some(r#"{"remote":"x"}"#)));
    assert!(code == 400 && msg.contains("unknown field `remote`"), "{code} {msg}");
}

#[test]
fn rest_allows_cross_origin_calls() {
    let server = Server::start(&[]);
    let raw = |request: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", server.http)).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out.to_ascii_lowercase()
    };
    let preflight = raw("OPTIONS /rest-api/stream/find_all HTTP/1.1\r\nHost: x\r\nOrigin: http://elsewhere\r\nAccess-Control-Request-Method: POST\r\nConnection: close\r\n\r\n");
    assert!(preflight.starts_with("http/1.1 204"), "{preflight}");
    assert!(preflight.contains("access-control-allow-origin: *"));
    assert!(preflight.contains("access-control-allow-methods: get, post, delete, patch, options"));
    let get = raw(
        "GET /rest-api/stream/find_all HTTP/1.1\r\nHost: x\r\nOrigin: http://elsewhere\r\nConnection: close\r\n\r\n",
    );
    assert!(get.contains("access-control-allow-origin: *"), "{get}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_cannot_pile_up_connecting_streams() {
    let server = Server::start(&[]);
    let cm = client_media();
    let client = connect(&server).await;
    let limit = hopcast::state::registry::MAX_PENDING_PER_SESSION;
    // Offers whose ICE never starts (the client peers are never told the answer).
    for i in 0..=limit {
        let offer = cm.media.offer(cm.media.next_id(), Role::Producer(cm.media.next_id())).await.unwrap();
        let id = format!("pile-{i}");
        let mut rx = client.subscribe(&id);
        let mut req = request(&id, &format!("pile-{i}"), &offer);
        req.published = true;
        client.send(ClientMessage::PublishStream(req));
        let first = tokio::time::timeout(WAIT, rx.recv()).await.unwrap().unwrap();
        match (i < limit, first) {
            (true, ServerMessage::SetRemoteSdp { .. }) => {}
            (false, ServerMessage::StreamStatus(s)) => {
                assert_eq!(
                    (s.status, s.info.as_deref()),
                    (StreamStatus::Failed, Some(hopcast::state::registry::TOO_MANY_PENDING))
                );
            }
            (_, other) => panic!("request {i}: unexpected {other:?}"),
        }
    }
    expect_media_peers(&server, limit as u64).await;
    // Another session is not affected.
    let other = connect(&server).await;
    let offer = cm.media.offer(cm.media.next_id(), Role::Producer(cm.media.next_id())).await.unwrap();
    let mut rx = other.subscribe("other-1");
    let mut req = request("other-1", "other", &offer);
    req.published = true;
    other.send(ClientMessage::PublishStream(req));
    let first = tokio::time::timeout(WAIT, rx.recv()).await.unwrap().unwrap();
    assert!(matches!(first, ServerMessage::SetRemoteSdp { .. }), "{first:?}");
}
