//! Browser end-to-end: headless Chromium runs the official WebSDK example apps
//! ("Two Way Streaming" publishes, "Player" plays) against real hopcast processes, and
//! the player's video must decode frames. Needs Chromium and `npm ci` in tests/browser
//! (`scripts/test` does both); set HOPCAST_SKIP_BROWSER=1 to leave these out knowingly.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::Server;

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Artifacts (screenshots) go to target/test-artifacts/<test>/.
pub fn artifacts(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts").join(test);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn skip() -> bool {
    if std::env::var_os("HOPCAST_SKIP_BROWSER").is_some() {
        eprintln!("HOPCAST_SKIP_BROWSER is set: browser test skipped");
        return true;
    }
    assert!(
        browser_dir().join("node_modules/playwright-core").exists(),
        "tests/browser/node_modules is missing: run scripts/test (or npm ci in tests/browser)"
    );
    assert!(Path::new("/usr/bin/chromium").exists(), "Chromium is missing: apt-get install chromium (see README)");
    false
}

/// Run a browser scenario script; returns its JSON result, failing with its log.
pub fn run_scenario(script: &str, args: &[String]) -> serde_json::Value {
    let output = Command::new("node")
        .arg(browser_dir().join(script))
        .args(args)
        .current_dir(browser_dir())
        .output()
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let result: serde_json::Value = stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no result from {script}\nstdout:\n{stdout}\nstderr:\n{stderr}"));
    assert!(output.status.success() && result["ok"] == true, "{script} failed: {result}\nbrowser log:\n{stderr}");
    result
}

#[test]
fn official_sdk_apps_publish_and_play_with_decoded_frames() {
    if skip() {
        return;
    }
    let server = Server::start(&[]);
    let out = artifacts("publish_play");
    let args = [
        "--publish-ws".to_string(),
        server.ws_url(),
        "--name".into(),
        "browser-cam".into(),
        "--out".into(),
        out.display().to_string(),
    ];
    let result = run_scenario("publish_play.mjs", &args);
    let video = &result["video"];
    assert!(video["width"].as_u64().unwrap() > 0, "no picture: {result}");
    assert!(
        video["framesAfter"].as_u64().unwrap() >= video["framesBefore"].as_u64().unwrap() + 10,
        "video is not decoding: {result}"
    );
    assert!(out.join("player.png").exists());
}
