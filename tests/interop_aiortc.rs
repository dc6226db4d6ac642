//! A WebRTC stack other than a browser: aiortc (Python) publishes VP8 + Opus numbered its
//! own way (Opus 96, VP8 97) and a second aiortc peer plays with yet another numbering
//! (Opus 109, VP8 110); every video picture carries a frame counter that the player reads
//! back from the decoded picture, and audio a tone. Once on one server, once through a
//! relay to a second server. Needs the venv `scripts/test` makes in tests/aiortc/.venv;
//! HOPCAST_SKIP_AIORTC=1 leaves these out knowingly.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{script_result, Server};

fn python() -> Option<PathBuf> {
    if std::env::var_os("HOPCAST_SKIP_AIORTC").is_some() {
        eprintln!("HOPCAST_SKIP_AIORTC is set: aiortc test skipped");
        return None;
    }
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aiortc/.venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/test (it makes the venv)", python.display());
    Some(python)
}

/// Run interop.py; returns its JSON result after checking what it saw.
fn interop(python: &Path, args: &[String]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/aiortc/interop.py");
    let result = script_result(Command::new(python).arg(script).args(args), "interop.py");
    // The two peers really numbered the codecs differently, and each answer kept the
    // numbering of the offer it answered.
    let (publisher, player) = (&result["publisherPts"]["answer"], &result["playerPts"]["answer"]);
    assert_eq!(publisher["video"]["97"], "VP8/90000", "{result}");
    assert_eq!(player["video"]["110"], "VP8/90000", "{result}");
    assert_eq!(publisher["audio"]["96"], "opus/48000/2", "{result}");
    assert_eq!(player["audio"]["109"], "opus/48000/2", "{result}");
    assert!(result["videoFrames"].as_u64().unwrap() >= 20, "{result}");
    assert_eq!(result["videoBadFrames"], 0, "{result}");
    assert!(result["audioToneFrames"].as_u64().unwrap() >= 20, "{result}");
    result
}

#[test]
fn aiortc_publishes_and_plays_with_its_own_payload_types() {
    let Some(python) = python() else { return };
    let server = Server::start(&[]);
    interop(&python, &["--ws".into(), server.ws_url(), "--name".into(), "aiortc-cam".into()]);
}

#[test]
fn aiortc_plays_a_stream_relayed_to_a_second_server() {
    let Some(python) = python() else { return };
    let (s1, s2) = (Server::start(&[]), Server::start(&[]));
    let args = [
        "--ws".to_string(),
        s1.ws_url(),
        "--play-ws".into(),
        s2.ws_url(),
        "--name".into(),
        "aiortc-relay".into(),
        "--relay-rest".into(),
        format!("http://127.0.0.1:{}", s1.http),
        "--relay-uri".into(),
        s2.ws_url(),
    ];
    interop(&python, &args);
}
