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
    // Every canary indexed by its first 8 bytes, so that each file is read once whatever the
    // number of canaries (a naive search per canary takes hours in a debug build once the
    // database tests have recorded hundreds of passwords over megabytes of debug logs).
    let mut by_prefix: std::collections::HashMap<&[u8], Vec<&[u8]>> =
        std::collections::HashMap::new();
    for c in &canaries {
        by_prefix
            .entry(&c.as_bytes()[..8])
            .or_default()
            .push(c.as_bytes());
    }
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
        let found = content.windows(8).enumerate().any(|(at, prefix)| {
            by_prefix
                .get(prefix)
                .is_some_and(|cs| cs.iter().any(|c| content[at..].starts_with(c)))
        });
        assert!(!found, "secret canary found in {}", path.display());
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
