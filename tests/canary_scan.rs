//! The canary scan, run by `scripts/test.sh` after every other test: every secret value the
//! tests saw (collected in `$VS_TEST_LOG_DIR/canaries.txt`) is searched for in every log and
//! state-store file the run produced. One hit fails the run. This target has `test = false`, so
//! only an explicit `cargo test --test canary_scan` runs it.

mod common;

#[test]
fn no_secret_value_appears_in_any_log_or_state_file() {
    let dir = common::daemon::log_dir();
    let canaries: Vec<String> = std::fs::read_to_string(dir.join("canaries.txt"))
        .expect("canaries.txt: the integration tests record the secrets they saw")
        .lines()
        .filter(|l| l.len() >= 8)
        .map(str::to_string)
        .collect();
    assert!(
        canaries.len() >= 10,
        "only {} canaries recorded; the scan would prove little",
        canaries.len()
    );
    let mut files = 0;
    let mut bytes = 0;
    for entry in std::fs::read_dir(&dir).expect("log dir") {
        let path = entry.expect("entry").path();
        if path.file_name().is_some_and(|n| n == "canaries.txt") || !path.is_file() {
            continue;
        }
        let content = std::fs::read(&path).expect("read");
        files += 1;
        bytes += content.len();
        for c in &canaries {
            assert!(
                !content.windows(c.len()).any(|w| w == c.as_bytes()),
                "secret canary found in {}",
                path.display()
            );
        }
    }
    assert!(
        files >= 3,
        "only {files} files scanned in {}",
        dir.display()
    );
    println!(
        "scanned {files} files ({bytes} bytes) for {} canaries: clean",
        canaries.len()
    );
}
