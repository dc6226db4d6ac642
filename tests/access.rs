//! Access control with real parts: a hook backend (a small HTTP server in this test, on
//! loopback) admitting and refusing connections, publishes and plays, renaming a stream,
//! slow or down; the events it hears, in order; the REST API's credential; the relay
//! allow-list (asserted on the target's side: no connection); ownership of streams.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use common::*;
use hopcast::media::{MediaEvent, MediaHandle};
use hopcast::testkit::process::http_exchange;
use hopcast::wcs::client::{ClientError, ClientStream, SignalingClient};
use hopcast::wcs::protocol::{reason, ClientMessage, ServerMessage, StreamInfo, StreamRef, StreamStatus};
use serde_json::{json, Map, Value};

const WAIT: Duration = Duration::from_secs(10);

/// The operator's backend: admits the token "good", refuses names starting with
/// "forbidden", renames "alias" to "real", refuses plays of "secret"; records every call.
#[derive(Default)]
struct Backend {
    calls: Mutex<Vec<(String, Value)>>,
    delay_ms: AtomicU64,
    /// Extra time the status events take to be answered.
    event_delay_ms: AtomicU64,
}

async fn hook(
    State(backend): State<Arc<Backend>>,
    Path(method): Path<String>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    backend.calls.lock().unwrap().push((method.clone(), body.clone()));
    let mut delay = backend.delay_ms.load(Ordering::Relaxed);
    if method.ends_with("Event") {
        delay += backend.event_delay_ms.load(Ordering::Relaxed);
    }
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let name = body["name"].as_str().unwrap_or_default();
    let refuse = |why: String| (StatusCode::FORBIDDEN, Json(json!({ "reason": why })));
    match method.as_str() {
        "connect" if body["custom"]["token"] != "good" => refuse("Bad token".into()),
        "publishStream" if name.starts_with("forbidden") => refuse(format!("Publishing '{name}' is not allowed")),
        "publishStream" if name == "alias" => (StatusCode::OK, Json(json!({ "name": "real" }))),
        "playStream" if name == "secret" => refuse("Not for you".into()),
        _ => (StatusCode::OK, Json(json!({}))),
    }
}

impl Backend {
    async fn start() -> (Arc<Backend>, SocketAddr) {
        let backend = Arc::new(Backend::default());
        let app = Router::new().route("/app/{method}", post(hook)).with_state(backend.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (backend, addr)
    }

    /// The calls so far: (method, body), for one session.
    fn calls_of(&self, session: &str) -> Vec<(String, Value)> {
        let calls = self.calls.lock().unwrap();
        calls.iter().filter(|(_, b)| b["sessionId"] == session).cloned().collect()
    }
}

fn token(t: &str) -> Map<String, Value> {
    let Value::Object(m) = json!({ "token": t }) else { unreachable!() };
    m
}

async fn connect_with(server: &Server, t: &str) -> Result<Arc<SignalingClient>, ClientError> {
    SignalingClient::connect_as(&server.ws_url(), None, token(t)).await
}

/// Publish a synthetic source as a client with token "good": the session, and the
/// reason the publish was refused (if it was).
async fn publish(server: &Server, media: &MediaHandle, name: &str) -> (Arc<SignalingClient>, Option<String>) {
    let session = connect_with(server, "good").await.unwrap();
    let source = media.next_id();
    media.add_source(source);
    let refused = match session.publish(media, name, source).await {
        Ok(mut stream) => match next_settled(&mut stream).await {
            s if s.status == StreamStatus::Failed => s.info,
            _ => None,
        },
        Err(ClientError::Failed(why)) => Some(why),
        Err(e) => panic!("{e}"),
    };
    (session, refused)
}

async fn next_settled(stream: &mut ClientStream) -> StreamInfo {
    tokio::time::timeout(WAIT, async {
        loop {
            match stream.next_status().await {
                Some(s) if s.status != StreamStatus::Pending => return s,
                Some(_) => continue,
                None => panic!("session closed"),
            }
        }
    })
    .await
    .expect("no status")
}

fn hooked(addr: SocketAddr, extra: &[&str]) -> Server {
    let url = format!("hooks.url=http://{addr}/app");
    let mut args = vec!["--set", url.as_str()];
    args.extend_from_slice(extra);
    Server::start(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_admit_refuse_and_rename_and_hear_every_status_in_order() {
    let (backend, addr) = Backend::start().await;
    let server = hooked(addr, &[]);
    let ClientMedia { media, .. } = client_media();

    // A wrong token: refused with the backend's reason, and the connection closed.
    match connect_with(&server, "bad").await {
        Err(ClientError::Failed(why)) => assert_eq!(why, "Bad token"),
        other => panic!("expected a refusal, got {:?}", other.map(|c| c.session_id.clone())),
    }

    // The right token: admitted; publishes and plays as the backend decides.
    let (session, refused) = publish(&server, &media, "forbidden-cam").await;
    assert_eq!(refused.as_deref(), Some("Publishing 'forbidden-cam' is not allowed"));
    let source = media.next_id();
    media.add_source(source);
    let mut renamed = session.publish(&media, "alias", source).await.unwrap();
    let status = next_settled(&mut renamed).await;
    assert_eq!((status.status, status.name.as_str()), (StreamStatus::Publishing, "real"));
    let (code, found) = http(server.http, "POST", "/rest-api/stream/find", Some(r#"{"name":"real"}"#));
    assert_eq!(code, 200, "{found}");

    let viewer = connect_with(&server, "good").await.unwrap();
    match viewer.play(&media, "secret", media.next_id()).await {
        Err(ClientError::Failed(why)) => assert_eq!(why, "Not for you"),
        other => panic!("expected a refusal, got {:?}", other.map(|s| s.media_session_id)),
    }
    let sink = media.next_id();
    let mut tap = media.tap(sink);
    let mut player = viewer.play(&media, "real", sink).await.unwrap();
    player.wait_for(StreamStatus::Playing, WAIT).await.unwrap();
    let got = received_after(&media, source, &mut tap, 1).await;
    assert!(got.last > got.first);

    // The publisher stops and leaves: the backend heard everything, in order, with the
    // documented fields.
    renamed.stop_and_wait(WAIT).await.expect("no final status");
    let id = session.session_id.clone();
    session.close();
    eventually("the backend hears the disconnect", || {
        backend.calls_of(&id).iter().any(|(m, b)| m == "ConnectionStatusEvent" && b["status"] == "DISCONNECTED")
    })
    .await;
    let calls = backend.calls_of(&id);
    let seen: Vec<String> = calls
        .iter()
        .map(|(m, b)| match b["status"].as_str() {
            Some(s) if m.ends_with("Event") => format!("{m} {} {s}", b["name"].as_str().unwrap_or("-")),
            _ => format!("{m} {}", b["name"].as_str().unwrap_or("-")),
        })
        .collect();
    assert_eq!(
        seen,
        [
            "connect -",
            "ConnectionStatusEvent - ESTABLISHED",
            "publishStream forbidden-cam",
            "StreamStatusEvent forbidden-cam FAILED",
            "publishStream alias",
            "StreamStatusEvent real PUBLISHING",
            "unPublishStream real",
            "StreamStatusEvent real UNPUBLISHED",
            "ConnectionStatusEvent - DISCONNECTED",
        ],
        "{calls:#?}"
    );
    let (_, connect) = &calls[0];
    assert_eq!((connect["appKey"].as_str(), connect["custom"]["token"].as_str()), (Some("defaultApp"), Some("good")));
    assert!(connect["nodeId"].as_str().is_some_and(|n| !n.is_empty()));
    let (_, publish) = &calls[4];
    for field in
        ["nodeId", "appKey", "sessionId", "mediaSessionId", "name", "published", "status", "hasVideo", "hasAudio"]
    {
        assert!(!publish[field].is_null(), "/publishStream lacks {field}: {publish}");
    }
    assert_eq!(publish["status"], "NEW");
    let (_, event) = &calls[5];
    assert_eq!((event["internal"].as_bool(), event["published"].as_bool()), (Some(false), Some(true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_down_or_slow_refuses_with_fail_and_lets_through_with_log() {
    let (backend, addr) = Backend::start().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let down_fail = hooked(closed, &[]);
    let down_log = hooked(closed, &["--set", "hooks.on_error=LOG"]);
    let slow_fail = hooked(addr, &["--set", "rest_request_timeout=300"]);
    let slow_log = hooked(addr, &["--set", "rest_request_timeout=300", "--set", "hooks.on_error=LOG"]);
    backend.delay_ms.store(2000, Ordering::Relaxed);

    let unanswered = "Failed by REST hook: the backend did not answer";
    for server in [&down_fail, &slow_fail] {
        match connect_with(server, "good").await {
            Err(ClientError::Failed(why)) => assert_eq!(why, unanswered),
            other => panic!("expected a refusal, got {:?}", other.map(|c| c.session_id.clone())),
        }
    }
    for server in [&down_log, &slow_log] {
        connect_with(server, "any").await.expect("LOG lets the client through");
    }
    assert_eq!(stats(&slow_fail)["refused"]["hooks"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_and_pulls_are_internal_to_the_hooks() {
    let (backend, addr) = Backend::start().await;
    let (origin, edge) = (Server::start(&[]), hooked(addr, &[]));
    let ClientMedia { media, .. } = client_media();
    let (_source, _s, _p) = publish_source(&origin, &media, "far").await;
    let body = format!(r#"{{"uri":"{}","remoteStreamName":"far","localStreamName":"near"}}"#, origin.ws_url());
    assert_eq!(http(edge.http, "POST", "/rest-api/pull/pull", Some(&body)).0, 200);
    eventually("the backend hears the pulled stream", || {
        let calls = backend.calls.lock().unwrap();
        calls.iter().any(|(m, b)| m == "StreamStatusEvent" && b["name"] == "near" && b["status"] == "PUBLISHING")
    })
    .await;
    let calls = backend.calls.lock().unwrap().clone();
    assert!(calls.iter().all(|(m, _)| m != "publishStream" && m != "connect"), "{calls:#?}");
    let event = calls.iter().find(|(m, b)| m == "StreamStatusEvent" && b["name"] == "near").unwrap();
    assert_eq!(event.1["internal"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_api_takes_its_credential() {
    let server = Server::start(&["--set", "rest.token=t0ken", "--set", "rest.basic=admin:pa55"]);
    let find = |auth: Option<&str>| {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        http_exchange(server.http, "POST", "/rest-api/stream/find_all", &headers, Some("{}"))
    };
    let (code, head, body) = find(None);
    assert_eq!(code, 401, "{body}");
    assert!(head.to_ascii_lowercase().contains("www-authenticate: basic realm=\"hopcast\""), "{head}");
    assert_eq!(json(&body)["error"], "This REST API requires credentials");
    for wrong in ["Bearer t0ke", "Bearer t0ken2", "Basic YWRtaW46cGE1NQ", "t0ken"] {
        let (code, _, body) = find(Some(wrong));
        assert_eq!((code, json(&body)["error"].as_str()), (401, Some("Wrong credentials")), "{wrong}");
    }
    // Right: 404 here is "no streams", past the check (as WCS answers an empty find).
    for right in ["Bearer t0ken", "Basic YWRtaW46cGE1NQ=="] {
        assert_eq!(find(Some(right)).0, 404, "{right}");
        let (code, _, _) = http_exchange(server.http, "GET", "/rest-api/stats", &[("Authorization", right)], None);
        assert_eq!(code, 200);
    }
    // A CORS preflight carries no credential and needs none; the pages stay public.
    assert_eq!(http_exchange(server.http, "OPTIONS", "/rest-api/stream/find_all", &[], None).0, 204);
    assert_eq!(http(server.http, "GET", "/player.html", None).0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_dial_only_what_relay_allow_permits() {
    let target = Server::start(&[]);
    let allowed = format!("relay.allow=127.0.0.1:{}", target.ws);
    let server = Server::start(&["--set", allowed.as_str()]);
    let ClientMedia { media, .. } = client_media();
    let (_source, _s, _p) = publish_source(&server, &media, "cam").await;

    // A target that is not listed: 403 with the reason, and nothing is dialed.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    for (method, uri) in
        [("pull/push", format!("ws://127.0.0.1:{port}/")), ("pull/pull", format!("ws://localhost:{}/", target.ws))]
    {
        let body = format!(r#"{{"uri":"{uri}","localStreamName":"cam","remoteStreamName":"x"}}"#);
        let body = if method == "pull/pull" { body.replace("\"cam\"", "\"other\"") } else { body };
        let (code, answer) = http(server.http, "POST", &format!("/rest-api/{method}"), Some(&body));
        assert_eq!(code, 403, "{answer}");
        assert!(json(&answer)["error"].as_str().unwrap().contains("is not in relay.allow"), "{answer}");
    }
    let dialed = tokio::time::timeout(Duration::from_millis(1500), listener.accept()).await;
    assert!(dialed.is_err(), "the refused target was connected to");
    assert_eq!(stats(&server)["refused"]["relayTargets"], 2);

    // The listed one works.
    let body = format!(r#"{{"uri":"{}","localStreamName":"cam","remoteStreamName":"copy"}}"#, target.ws_url());
    assert_eq!(http(server.http, "POST", "/rest-api/pull/push", Some(&body)).0, 200);
}

/// The SDK sends `unPublishStream` and closes its peer connection at once; the DTLS close
/// can come first. Either way the backend hears the stop request once, before the status,
/// and the request that comes second is no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_closing_its_media_before_its_request_has_stopped() {
    let (backend, addr) = Backend::start().await;
    let server = hooked(addr, &[]);
    let ClientMedia { media, mut events } = client_media();
    let session = connect_with(&server, "good").await.unwrap();
    let source = media.next_id();
    media.add_source(source);
    let mut stream = session.publish(&media, "closer", source).await.unwrap();
    stream.wait_for(StreamStatus::Publishing, WAIT).await.unwrap();
    // The server (DTLS server) is connected once it has sent its last flight, so
    // PUBLISHING can arrive before our side has read that flight: a close before then
    // sends nothing the server can read (it would learn only by ICE timeout, 15 s).
    let peer = stream.peer;
    tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Some(MediaEvent::Connected { peer: p }) if p == peer => return,
                Some(_) => continue,
                None => panic!("client media stopped"),
            }
        }
    })
    .await
    .expect("our side of DTLS never connected");

    media.remove_peer(stream.peer, true);
    let last = next_settled(&mut stream).await;
    assert_eq!((last.status, last.info.as_deref()), (StreamStatus::Unpublished, Some(reason::USER_STOP)));
    let request =
        StreamRef { media_session_id: stream.media_session_id.clone(), name: "closer".into(), published: true };
    session.send(ClientMessage::UnPublishStream(request));
    // One queue: an unknown message, sent after, brings the first warning back.
    session.send_text(r#"{"message":"teleport","data":[{}]}"#.into());
    let warning = tokio::time::timeout(WAIT, async {
        loop {
            match session.next_unrouted().await {
                Some(ServerMessage::Fail(f)) => return f,
                Some(_) => continue,
                None => panic!("session closed"),
            }
        }
    })
    .await
    .expect("no fail warning");
    assert_eq!(warning.info, "Unknown message 'teleport'");

    let id = session.session_id.clone();
    eventually("the backend hears the status", || {
        backend.calls_of(&id).iter().any(|(m, b)| m == "StreamStatusEvent" && b["status"] == "UNPUBLISHED")
    })
    .await;
    let seen: Vec<String> = backend
        .calls_of(&id)
        .iter()
        .filter(|(m, _)| m.contains("Stream"))
        .map(|(m, b)| format!("{m} {}", b["status"].as_str().unwrap_or("-")))
        .collect();
    assert_eq!(
        seen,
        [
            "publishStream NEW",
            "StreamStatusEvent PUBLISHING",
            "unPublishStream PUBLISHING",
            "StreamStatusEvent UNPUBLISHED"
        ]
    );
}

/// The backend answers status events slowly, so a new session's ESTABLISHED waits in
/// the queue behind an earlier session's: its publishStream must still come after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_hook_never_overtakes_the_sessions_connection_event() {
    let (backend, addr) = Backend::start().await;
    backend.event_delay_ms.store(300, Ordering::Relaxed);
    let server = hooked(addr, &[]);
    let ClientMedia { media, .. } = client_media();
    let _earlier = connect_with(&server, "good").await.unwrap();
    let (session, refused) = publish(&server, &media, "prompt").await;
    assert_eq!(refused, None);
    let calls: Vec<String> = backend.calls_of(&session.session_id).iter().map(|(m, _)| m.clone()).collect();
    assert_eq!(calls[..3], ["connect", "ConnectionStatusEvent", "publishStream"], "{calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_stops_only_its_own_streams() {
    let server = Server::start(&[]);
    let ClientMedia { media, .. } = client_media();
    let (_source, _owner, published) = publish_source(&server, &media, "mine").await;
    let other = connect(&server).await;
    let stop =
        format!(r#"{{"message":"unPublishStream","data":[{{"mediaSessionId":"{}"}}]}}"#, published.media_session_id);
    other.send_text(stop);
    let warning = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(ServerMessage::Fail(f)) = other.next_unrouted().await {
                return f.info;
            }
        }
    });
    assert_eq!(warning.await.unwrap(), reason::STREAM_NOT_FOUND);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, found) = http(server.http, "POST", "/rest-api/stream/find", Some(r#"{"name":"mine"}"#));
    assert_eq!((code, json(&found)[0]["status"].as_str()), (200, Some("PUBLISHING")));
}
