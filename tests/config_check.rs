//! `vault-steward check` against broken configs, through the real binary: each must exit 2 and
//! print its problem as `FILE:LINE:COL: message` on stderr, pointing at the offending key (unknown
//! keys), value (bad values) or table header (missing keys). Needs no servers.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The environment variables that would change what `check` sees.
const ENV_OVERRIDES: &[&str] = &[
    "VAULT_ADDR",
    "VAULT_CACERT",
    "VAULT_NAMESPACE",
    "VAULT_TOKEN",
    "VAULT_ROLE_ID",
    "VAULT_SECRET_ID",
    "VAULT_STEWARD_STATE_PASSWORD",
    "VAULT_STEWARD_CONFIG",
];

/// A config directory: `steward.toml`, `jobs/`, and the AppRole secret files (mode 600).
struct Setup {
    dir: tempfile::TempDir,
}

/// A valid `steward.toml` (lines numbered for the tests below).
const STEWARD: &str = r#"[vault]
address = "http://127.0.0.1:8200"
[vault.auth]
method = "approle"
role_id_file = "role-id"
secret_id_file = "secret-id"

[[alerts.email]]
name = "ops-mail"
smtp_url = "smtp://127.0.0.1:2525"
from = "vault-steward@example.com"
to = ["ops@example.com"]
"#;

impl Setup {
    fn new(steward: &str) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("jobs")).expect("jobs dir");
        let setup = Setup { dir };
        setup.secret("role-id", 0o600);
        setup.secret("secret-id", 0o600);
        setup.write("steward.toml", steward);
        setup
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    fn secret(&self, name: &str, mode: u32) -> PathBuf {
        let path = self.write(name, "not-really-secret\n");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path
    }

    fn job(&self, name: &str, text: &str) -> PathBuf {
        self.write(&format!("jobs/{name}"), text)
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("steward.toml")
    }
}

/// Runs `vault-steward check --config CONFIG`; returns (exit code, stdout, stderr).
fn check(config: &Path, env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vault-steward"));
    for var in ENV_OVERRIDES {
        cmd.env_remove(var);
    }
    let out = cmd
        .envs(env.iter().copied())
        .arg("check")
        .arg("--config")
        .arg(config)
        .output()
        .expect("run vault-steward");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts that `check` exits 2 and reports `FILE:LINE:COL: …fragment…` on one line.
#[track_caller]
fn assert_error(setup: &Setup, file: &Path, line: usize, col: usize, fragment: &str) {
    let (code, _, stderr) = check(&setup.config(), &[]);
    let prefix = format!("{}:{line}:{col}: ", file.display());
    assert_eq!(code, Some(2), "exit code; stderr:\n{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with(&prefix) && l.contains(fragment)),
        "expected a line `{prefix}…{fragment}…` in stderr:\n{stderr}"
    );
}

fn steward_with(extra: &str) -> String {
    format!("{STEWARD}{extra}")
}

// ---- steward.toml ----------------------------------------------------------------------------

#[test]
fn toml_syntax_error() {
    let s = Setup::new("[vault]\naddress = \"http://127.0.0.1:8200\n");
    assert_error(
        &s,
        &s.config(),
        2,
        33,
        "TOML syntax error: invalid basic string",
    );
}

#[test]
fn unknown_top_level_key() {
    let s = Setup::new(&format!("colour = \"blue\"\n{STEWARD}"));
    assert_error(
        &s,
        &s.config(),
        1,
        1,
        "unknown key `colour` in the top level of steward.toml",
    );
}

#[test]
fn unknown_key_in_a_section_suggests_the_right_one() {
    let s = Setup::new(&STEWARD.replace("[vault.auth]", "adress = \"x\"\n[vault.auth]"));
    assert_error(
        &s,
        &s.config(),
        3,
        1,
        "unknown key `adress` in [vault]; did you mean `address`?",
    );
}

#[test]
fn missing_address_without_vault_addr_points_at_the_section() {
    let s = Setup::new(&STEWARD.replace("address = \"http://127.0.0.1:8200\"\n", ""));
    assert_error(
        &s,
        &s.config(),
        1,
        1,
        "missing `address` in [vault] (or set VAULT_ADDR)",
    );
    // VAULT_ADDR fills it in.
    let (code, stdout, stderr) = check(&s.config(), &[("VAULT_ADDR", "http://127.0.0.1:8200")]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
}

#[test]
fn bad_listen_address() {
    let s = Setup::new(&steward_with("[http]\nlisten = \"localhost:9464\"\n"));
    assert_error(
        &s,
        &s.config(),
        14,
        10,
        "invalid listen address `localhost:9464`",
    );
}

#[test]
fn bad_state_url_scheme() {
    let s = Setup::new(&steward_with("[state]\nurl = \"mysql://db/state\"\n"));
    assert_error(
        &s,
        &s.config(),
        14,
        7,
        "unsupported state URL `mysql://db/state`",
    );
}

#[test]
fn lease_ttl_too_short() {
    let s = Setup::new(&steward_with(
        "[state]\nurl = \"postgres://steward@db/state\"\nlease_ttl = \"1s\"\n",
    ));
    assert_error(
        &s,
        &s.config(),
        15,
        13,
        "`lease_ttl` (1s) must be at least 3s",
    );
}

#[test]
fn bad_and_zero_durations() {
    let s = Setup::new(&steward_with(
        "[engine]\njob_timeout = \"5 minutes\"\nretry_initial = \"0s\"\n",
    ));
    assert_error(&s, &s.config(), 14, 15, "invalid duration `5 minutes`");
    assert_error(
        &s,
        &s.config(),
        15,
        17,
        "duration `0s` must be greater than zero",
    );
}

#[test]
fn missing_secret_file_points_at_the_value() {
    let s = Setup::new(STEWARD);
    std::fs::remove_file(s.dir.path().join("secret-id")).expect("rm");
    assert_error(&s, &s.config(), 6, 18, "`secret_id_file`: secret file ");
    assert_error(&s, &s.config(), 6, 18, "No such file or directory");
}

#[test]
fn world_readable_secret_file_points_at_the_value() {
    let s = Setup::new(STEWARD);
    s.secret("role-id", 0o644);
    assert_error(
        &s,
        &s.config(),
        5,
        16,
        "is readable by other users (mode 644); chmod 600 it",
    );
}

#[test]
fn group_readable_or_foreign_secret_file_is_refused() {
    let s = Setup::new(STEWARD);
    s.secret("role-id", 0o640);
    assert_error(
        &s,
        &s.config(),
        5,
        16,
        "is readable by its group (mode 640); chmod 600 it",
    );
    // Owned by another user (only root can give a file away; these tests run as root).
    let path = s.secret("role-id", 0o600);
    if std::os::unix::fs::chown(&path, Some(65534), None).is_ok() {
        assert_error(&s, &s.config(), 5, 16, "is owned by uid 65534");
    }
}

#[test]
fn unreadable_jobs_dir_points_at_its_setting() {
    let s = Setup::new(&steward_with("[jobs]\ndir = \"no-such-dir\"\n"));
    assert_error(&s, &s.config(), 14, 7, "cannot read the jobs directory ");
}

#[test]
fn bad_webhook_format() {
    let s = Setup::new(&steward_with(
        "[[alerts.webhook]]\nname = \"hook\"\nurl = \"https://hooks.example.com/x\"\nformat = \"teams\"\n",
    ));
    assert_error(&s, &s.config(), 16, 10, "unknown webhook format `teams`");
}

#[test]
fn webhook_url_file_is_a_checked_secret_and_excludes_url() {
    // Line 13 is the first line after STEWARD.
    let s = Setup::new(&steward_with(
        "[[alerts.webhook]]\nname = \"chat\"\nformat = \"slack\"\nurl_file = \"slack-url\"\n",
    ));
    assert_error(&s, &s.config(), 16, 12, "`url_file`: secret file ");
    s.secret("slack-url", 0o644);
    assert_error(&s, &s.config(), 16, 12, "is readable by other users");
    s.secret("slack-url", 0o600);
    let (code, stdout, stderr) = check(&s.config(), &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");

    let s = Setup::new(&steward_with(
        "[[alerts.webhook]]\nname = \"chat\"\nurl = \"https://h/x\"\nurl_file = \"u\"\n",
    ));
    s.secret("u", 0o600);
    assert_error(
        &s,
        &s.config(),
        16,
        12,
        "give either `url` or `url_file`, not both",
    );
    let s = Setup::new(&steward_with("[[alerts.webhook]]\nname = \"chat\"\n"));
    assert_error(&s, &s.config(), 13, 1, "missing `url` (or `url_file`");
}

#[test]
fn pagerduty_needs_its_routing_key_file_and_only_it_takes_one() {
    let s = Setup::new(&steward_with(
        "[[alerts.webhook]]\nname = \"pd\"\nformat = \"pagerduty\"\n",
    ));
    assert_error(&s, &s.config(), 13, 1, "missing `routing_key_file`");
    let s = Setup::new(&steward_with(
        "[[alerts.webhook]]\nname = \"pd\"\nformat = \"pagerduty\"\nrouting_key_file = \"rk\"\n",
    ));
    assert_error(&s, &s.config(), 16, 20, "`routing_key_file`: secret file ");
    s.secret("rk", 0o600);
    let (code, stdout, stderr) = check(&s.config(), &[]);
    assert_eq!(
        code,
        Some(0),
        "the default URL is PagerDuty's: {stdout}{stderr}"
    );
    let s = Setup::new(&steward_with(
        "[[alerts.webhook]]\nname = \"g\"\nurl = \"https://h/x\"\nrouting_key_file = \"rk\"\n",
    ));
    s.secret("rk", 0o600);
    assert_error(
        &s,
        &s.config(),
        16,
        20,
        "`routing_key_file` is only used with format = \"pagerduty\"",
    );
}

#[test]
fn smtp_url_security_and_auth_in_clear() {
    let s = Setup::new(&STEWARD.replace("smtp://127.0.0.1:2525", "smtp://mx:25?tls=maybe"));
    assert_error(&s, &s.config(), 10, 12, "unknown `tls=maybe`");
    let s = Setup::new(&STEWARD.replace("smtp://127.0.0.1:2525", "smtps://mx?tls=required"));
    assert_error(&s, &s.config(), 10, 12, "smtps:// is always TLS");
    let s = Setup::new(&STEWARD.replace("smtp://127.0.0.1:2525", "smtp://alice@mx"));
    assert_error(&s, &s.config(), 10, 12, "put the SMTP user in `username`");
    // AUTH over a connection that may be plain, to another host: the password would travel in
    // clear.
    let auth = "username = \"steward\"\npassword_file = \"smtp-pw\"\n";
    let s = Setup::new(&format!(
        "{}{auth}",
        STEWARD.replace("smtp://127.0.0.1:2525", "smtp://mail.example.com:587")
    ));
    s.secret("smtp-pw", 0o600);
    assert_error(&s, &s.config(), 14, 17, "would send the password in clear");
    // Loopback, or TLS required: fine.
    for url in [
        "smtp://127.0.0.1:2525",
        "smtp://mail.example.com:587?tls=required",
    ] {
        let s = Setup::new(&format!(
            "{}{auth}",
            STEWARD.replace("smtp://127.0.0.1:2525", url)
        ));
        s.secret("smtp-pw", 0o600);
        let (code, stdout, stderr) = check(&s.config(), &[]);
        assert_eq!(code, Some(0), "{url}: {stdout}{stderr}");
    }
}

#[test]
fn alert_retry_bounds_ca_cert_and_timeout() {
    // `[alerts]` goes before STEWARD's `[[alerts.email]]`.
    let s = Setup::new(&format!(
        "[alerts]\nretry_initial = \"1m\"\nretry_max = \"10s\"\n{STEWARD}"
    ));
    assert_error(
        &s,
        &s.config(),
        3,
        13,
        "`retry_max` (10s) must not be shorter than `retry_initial` (1m)",
    );
    let s = Setup::new(&STEWARD.replace(
        "to = [\"ops@example.com\"]\n",
        "to = [\"ops@example.com\"]\nca_cert = \"no-such-ca.pem\"\ntimeout = \"soon\"\n",
    ));
    assert_error(
        &s,
        &s.config(),
        13,
        11,
        "`ca_cert` has no effect without TLS",
    );
    assert_error(&s, &s.config(), 13, 11, "cannot read ");
    assert_error(&s, &s.config(), 14, 11, "invalid duration `soon`");
}

// ---- job files -------------------------------------------------------------------------------

const API_KEY_JOB: &str = r#"[[job]]
name = "gateway-key"
kind = "api-key"
path = "secret/api-key/gateway"
"#;

#[test]
fn syntax_error_in_a_job_file() {
    let s = Setup::new(STEWARD);
    let f = s.job("a.toml", "[[job]]\nname = \"x\"\nkind = api-key\n");
    assert_error(&s, &f, 3, 8, "TOML syntax error");
}

#[test]
fn unknown_key_in_a_job() {
    let s = Setup::new(STEWARD);
    let f = s.job("a.toml", &format!("{API_KEY_JOB}evry = \"30d\"\n"));
    assert_error(
        &s,
        &f,
        5,
        1,
        "unknown key `evry` in job `gateway-key` (kind = \"api-key\"); did you mean `every`?",
    );
}

#[test]
fn unknown_key_in_job_s3() {
    let s = Setup::new(STEWARD);
    let f = s.job(
        "snap.toml",
        r#"[[job]]
name = "snap"
kind = "raft-snapshot"
recipients = ["age1mf7cn497d8dja0why0wsn8x3hpjrlw8zqwc75a6nhqnkq2danmvsrn9wws"]
[job.s3]
bucket = "backups"
storage_class = "GLACIER"
"#,
    );
    assert_error(
        &s,
        &f,
        7,
        1,
        "unknown key `storage_class` in [job.s3] of job `snap`",
    );
}

#[test]
fn s3_part_size_out_of_range() {
    let s = Setup::new(STEWARD);
    let f = s.job(
        "snap.toml",
        r#"[[job]]
name = "snap"
kind = "raft-snapshot"
recipients = ["age1mf7cn497d8dja0why0wsn8x3hpjrlw8zqwc75a6nhqnkq2danmvsrn9wws"]
[job.s3]
bucket = "backups"
part_size_mib = 4
"#,
    );
    assert_error(
        &s,
        &f,
        7,
        17,
        "`part_size_mib` must be between 5 and 512, not 4",
    );
}

#[test]
fn unknown_kind() {
    let s = Setup::new(STEWARD);
    let f = s.job("a.toml", "[[job]]\nname = \"x\"\nkind = \"ldap\"\n");
    assert_error(
        &s,
        &f,
        3,
        8,
        "unknown kind `ldap`; expected one of: api-key, postgres",
    );
}

#[test]
fn missing_kind_and_name_point_at_the_header() {
    let s = Setup::new(STEWARD);
    let f = s.job(
        "a.toml",
        "# two broken jobs\n[[job]]\nname = \"x\"\n\n[[job]]\nkind = \"vault-health\"\n",
    );
    assert_error(&s, &f, 2, 1, "missing `kind` in job `x`");
    assert_error(&s, &f, 5, 1, "missing `name` in [[job]]");
}

#[test]
fn duplicate_job_names_across_files() {
    let s = Setup::new(STEWARD);
    let first = s.job("a.toml", API_KEY_JOB);
    let second = s.job("b.toml", &format!("\n{API_KEY_JOB}"));
    assert_error(
        &s,
        &second,
        3,
        8,
        &format!(
            "duplicate job name `gateway-key`: already defined at {}:2:8",
            first.display()
        ),
    );
}

#[test]
fn cron_with_five_fields() {
    let s = Setup::new(STEWARD);
    let f = s.job(
        "a.toml",
        &format!("{API_KEY_JOB}window = \"0 9 * * 1-5\"\n"),
    );
    assert_error(
        &s,
        &f,
        5,
        10,
        "invalid cron `0 9 * * 1-5`: expected 6 fields",
    );
}

#[test]
fn cron_out_of_range() {
    let s = Setup::new(STEWARD);
    let f = s.job(
        "a.toml",
        "[[job]]\nname = \"h\"\nkind = \"vault-health\"\nschedule = \"0 0 25 * * *\"\n",
    );
    assert_error(&s, &f, 4, 12, "invalid cron `0 0 25 * * *`");
}

#[test]
fn bad_key_format() {
    let s = Setup::new(STEWARD);
    let f = s.job("a.toml", &format!("{API_KEY_JOB}format = \"hex:8\"\n"));
    assert_error(
        &s,
        &f,
        5,
        10,
        "invalid key format `hex:8`: hex keys take 16 to 256 bytes",
    );
    let f = s.job("a.toml", &format!("{API_KEY_JOB}format = \"sha256:32\"\n"));
    assert_error(&s, &f, 5, 10, "unknown alphabet `sha256`");
}

#[test]
fn zero_duration_in_a_job() {
    let s = Setup::new(STEWARD);
    let f = s.job("a.toml", &format!("{API_KEY_JOB}every = \"0d\"\n"));
    assert_error(&s, &f, 5, 9, "duration `0d` must be greater than zero");
}

#[test]
fn unknown_alert_sink_counts_columns_in_characters() {
    let s = Setup::new(STEWARD);
    // "ops-ünïcode" has two two-byte characters: the column of `"nope"` must count characters.
    let f = s.job(
        "a.toml",
        &format!("{API_KEY_JOB}alerts = [\"ops-ünïcode\", \"nope\"]\n"),
    );
    assert_error(&s, &f, 5, 11, "unknown alert sink `ops-ünïcode`");
    assert_error(
        &s,
        &f,
        5,
        26,
        "unknown alert sink `nope` in `alerts`; defined sinks: ops-mail",
    );
}

#[test]
fn kv_path_in_api_form() {
    let s = Setup::new(STEWARD);
    let f = s.job(
        "a.toml",
        &API_KEY_JOB.replace("secret/api-key/gateway", "secret/data/api-key/gateway"),
    );
    assert_error(
        &s,
        &f,
        4,
        8,
        "write the logical path `secret/api-key/gateway`",
    );
}

#[test]
fn bad_snapshot_recipient_and_no_destination() {
    let s = Setup::new(STEWARD);
    let f = s.job(
        "snap.toml",
        "[[job]]\nname = \"snap\"\nkind = \"raft-snapshot\"\nrecipients = [\"age1notakey\"]\n",
    );
    assert_error(&s, &f, 4, 15, "invalid age recipient `age1notakey`");
    assert_error(
        &s,
        &f,
        1,
        1,
        "has no destination: add [job.s3] and/or [job.local]",
    );
}

#[test]
fn alternating_needs_two_users() {
    let s = Setup::new(STEWARD);
    let f = s.job(
        "db.toml",
        r#"[[job]]
name = "orders-db"
kind = "postgres"
path = "secret/database/orders"
admin_path = "secret/database/orders-admin"
usernames = ["orders_a"]
strategy = "alternating"
"#,
    );
    assert_error(&s, &f, 6, 13, "needs exactly two different usernames");
}

#[test]
fn every_problem_of_every_file_is_reported_in_order() {
    let s = Setup::new(&steward_with("[http]\nlisten = \"nope\"\n"));
    let a = s.job(
        "a.toml",
        &format!("{API_KEY_JOB}every = \"soon\"\nformat = \"hex:1\"\n"),
    );
    let b = s.job("b.toml", "[[job]]\nname = \"b\"\nkind = \"nope\"\n");
    let (code, _, stderr) = check(&s.config(), &[]);
    assert_eq!(code, Some(2));
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains(".toml:")).collect();
    let prefixes: Vec<String> = lines
        .iter()
        .map(|l| l.split(": ").next().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        prefixes,
        [
            format!("{}:14:10", s.config().display()),
            format!("{}:5:9", a.display()),
            format!("{}:6:10", a.display()),
            format!("{}:3:8", b.display()),
        ],
        "{stderr}"
    );
}

// ---- valid configs ---------------------------------------------------------------------------

#[test]
fn a_valid_config_passes() {
    let s = Setup::new(STEWARD);
    s.job("a.toml", API_KEY_JOB);
    let (code, stdout, stderr) = check(&s.config(), &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("ok (1 jobs"), "{stdout}");
}

#[test]
fn the_example_config_passes() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // The example names /etc/vault-steward/role-id and the systemd credential for the secret-id;
    // in the source tree the environment provides them (and wins, as it does for operators).
    let (code, stdout, stderr) = check(
        &root.join("config/steward.toml"),
        &[("VAULT_ROLE_ID", "example"), ("VAULT_SECRET_ID", "example")],
    );
    // No config problem at all. Kinds this build cannot run yet are warnings, not errors.
    assert!(
        !stderr
            .lines()
            .any(|l| l.contains(".toml:") && !l.contains(": warning: ")),
        "the example config has problems:\n{stderr}"
    );
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("configuration ok"), "{stdout}");
}

#[test]
fn database_password_alphabet_and_account_host_are_checked() {
    let s = Setup::new(STEWARD);
    let f = s.job(
        "db.toml",
        r#"[[job]]
name = "orders-db"
kind = "postgres"
path = "secret/database/orders"
admin_path = "secret/database/orders-admin"
username = "orders_app"
password_alphabet = "abcdefghijklmnop'"
account_host = "%"
pending_path = "secret/database/orders"
"#,
    );
    assert_error(&s, &f, 7, 21, "`password_alphabet`: '\\'' is not allowed");
    assert_error(&s, &f, 8, 16, "`account_host` is only for kind = \"mysql\"");
    assert_error(&s, &f, 9, 16, "`pending_path` must be a path of its own");
}

#[test]
fn pending_path_must_not_be_another_jobs_path() {
    let s = Setup::new(STEWARD);
    s.job(
        "billing.toml",
        r#"[[job]]
name = "billing-db"
kind = "postgres"
path = "secret/database/billing"
admin_path = "secret/database/billing-admin"
username = "billing_app"
"#,
    );
    let f = s.job(
        "orders.toml",
        r#"[[job]]
name = "orders-db"
kind = "postgres"
path = "secret/database/orders"
admin_path = "secret/database/orders-admin"
username = "orders_app"
pending_path = "secret/database/billing"
"#,
    );
    assert_error(
        &s,
        &f,
        7,
        16,
        "`pending_path` `secret/database/billing` is job `billing-db`'s",
    );
    // Under another job's admin secret is refused as well.
    std::fs::write(
        &f,
        std::fs::read_to_string(&f).unwrap().replace(
            "pending_path = \"secret/database/billing\"",
            "pending_path = \"secret/database/billing-admin/next\"",
        ),
    )
    .unwrap();
    assert_error(&s, &f, 7, 16, "lies under job `billing-db`'s");
}

#[test]
fn database_username_is_limited_to_63_bytes() {
    let s = Setup::new(STEWARD);
    // 32 characters, 64 bytes: PostgreSQL would cut it to 63 bytes.
    let f = s.job(
        "db.toml",
        &format!(
            r#"[[job]]
name = "orders-db"
kind = "postgres"
path = "secret/database/orders"
admin_path = "secret/database/orders-admin"
username = "{}"
"#,
            "é".repeat(32)
        ),
    );
    assert_error(&s, &f, 6, 12, "is 64 bytes long; at most 63 bytes");
}

#[test]
fn plain_http_vault_off_loopback_is_a_warning() {
    // Loopback over HTTP (STEWARD's address): no warning.
    let s = Setup::new(STEWARD);
    let (code, _, stderr) = check(&s.config(), &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    // Another host: still valid (exit 0), with a warning at the value.
    let s = Setup::new(&STEWARD.replace("127.0.0.1:8200", "vault.example.com:8200"));
    let (code, stdout, stderr) = check(&s.config(), &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let prefix = format!("{}:2:11: warning: `address`", s.config().display());
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with(&prefix) && l.contains("plain HTTP")),
        "{stderr}"
    );
    // From VAULT_ADDR, at the [vault] header.
    let s = Setup::new(STEWARD);
    let (code, _, stderr) = check(&s.config(), &[("VAULT_ADDR", "http://10.1.2.3:8200")]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(": warning: VAULT_ADDR: `http://10.1.2.3:8200` is plain HTTP"),
        "{stderr}"
    );
    let (_, _, stderr) = check(&s.config(), &[("VAULT_ADDR", "https://10.1.2.3:8200")]);
    assert!(!stderr.contains("warning"), "{stderr}");
}

/// Core dumps and /proc: the process marks itself non-dumpable first thing. The kernel's honest
/// sign of that is that its /proc/PID files become owned by root although it runs as another
/// user, so that user's other processes can no longer read its /proc/PID/environ (where
/// VAULT_TOKEN may sit) or /proc/PID/mem. The process runs as `nobody` (uid 65534) and blocks
/// opening its config, a FIFO no one writes to yet; the test checks that it is alive (a zombie's
/// /proc files are root's too) while it looks.
#[test]
fn the_process_is_not_dumpable_and_its_environ_is_private() {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    const NOBODY: u32 = 65534;
    if rustix::process::geteuid().as_raw() != 0 {
        eprintln!("skipped: only root can start a process as another user");
        return;
    }
    // A copy of the binary that `nobody` may run (the build directory may be private).
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("vault-steward");
    std::fs::copy(env!("CARGO_BIN_EXE_vault-steward"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let fifo = dir.path().join("steward.toml");
    assert!(
        Command::new("mkfifo")
            .arg("-m")
            .arg("644")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let child = Command::new(&bin)
        .arg("--config")
        .arg(&fifo)
        .arg("check")
        .env("VAULT_TOKEN", "not-a-real-token-1b0e7c")
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vault-steward as nobody");
    let proc_dir = PathBuf::from(format!("/proc/{}", child.id()));
    let status = || std::fs::read_to_string(proc_dir.join("status")).unwrap();
    // Blocked in open(2) on the FIFO: that is after main's first statement.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_to_string(proc_dir.join("wchan"))
        .is_ok_and(|w| w.contains("wait_for_partner") || w.contains("fifo"))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let owner = std::fs::metadata(proc_dir.join("environ")).unwrap().uid();
    let before = status();
    // Another process of the same user tries to read the environment.
    let peek = Command::new("cat")
        .arg(proc_dir.join("environ"))
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    let after = status();
    // Let it go: an empty config is refused and the process exits.
    drop(std::fs::OpenOptions::new().write(true).open(&fifo).unwrap());
    let out = child.wait_with_output().unwrap();
    for s in [&before, &after] {
        let state = s.lines().find(|l| l.starts_with("State:")).unwrap();
        assert!(
            !state.contains('Z') && !state.contains('X'),
            "not running: {state}"
        );
        let uid = s.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(uid.contains(&NOBODY.to_string()), "{uid}");
    }
    assert_eq!(
        owner, 0,
        "/proc/PID of a live process running as uid {NOBODY} is owned by it: the process is dumpable"
    );
    assert!(
        !peek.status.success() && !String::from_utf8_lossy(&peek.stdout).contains("1b0e7c"),
        "another process of the same user read the environment: {}",
        String::from_utf8_lossy(&peek.stdout)
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
