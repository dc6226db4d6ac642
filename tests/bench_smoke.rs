//! The benchmark must keep running: `hopcast-load smoke` runs every scenario with tiny
//! numbers. Only that it completes and measures something is checked, never a timing.

use std::process::Command;

#[test]
fn load_generator_smoke_run_completes_every_scenario() {
    let csv = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-smoke/fanout.csv");
    let _ = std::fs::remove_file(&csv);
    let out = Command::new(env!("CARGO_BIN_EXE_hopcast-load"))
        .args(["smoke", "--csv", csv.to_str().unwrap()])
        .output()
        .expect("run hopcast-load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "smoke run failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    for section in [
        "fan-out (1 publisher",
        "fan-out over WHIP/WHEP (1 publisher",
        "relay hops",
        "first keyframe two hops away",
        "setup (one server)",
        "caches evicted before each round",
    ] {
        assert!(stdout.contains(section), "no '{section}' in:\n{stdout}");
    }
    // The fan-out row shows packets actually forwarded.
    let rows = std::fs::read_to_string(&csv).unwrap();
    let row: Vec<&str> = rows.lines().nth(1).expect("a CSV row").split(',').collect();
    let packets: u64 = row[4].parse().unwrap();
    assert!(packets > 0, "nothing forwarded: {rows}");
    assert!(!stdout.contains("(0 of 1 trials)"), "no keyframe reached the far player:\n{stdout}");
    assert!(!stdout.contains("forwarded 0 packets"), "the router benchmark forwarded nothing:\n{stdout}");
}
