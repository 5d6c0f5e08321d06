//! KV v2 paths as job files write them: the logical path with its mount first, exactly as
//! `vault kv get secret/api-key/default` takes it (`MOUNT/rest`), never the API's
//! `secret/data/...` form. The first segment is taken as the mount.

/// Checks that `path` is a logical KV v2 path `MOUNT/rest`.
pub fn check_kv_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err(
            "KV path is empty: write it as `MOUNT/path`, e.g. `secret/api-key/default`".into(),
        );
    }
    if path.trim() != path {
        return Err(format!("KV path `{path}` has leading or trailing spaces"));
    }
    if path.chars().any(char::is_control) {
        return Err(format!(
            "KV path `{}` contains a control character",
            path.escape_default()
        ));
    }
    if path.starts_with('/') {
        return Err(format!(
            "KV path `{path}` must not start with `/`: write `{}`",
            path.trim_start_matches('/')
        ));
    }
    if path.ends_with('/') {
        return Err(format!(
            "KV path `{path}` must not end with `/`: it names one secret, not a folder"
        ));
    }
    if path.contains('{') || path.contains('}') {
        return Err(format!(
            "KV path `{path}` still contains a `{{placeholder}}`: write the real name"
        ));
    }
    let segments: Vec<&str> = path.split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(format!("KV path `{path}` has an empty segment (`//`)"));
    }
    if let Some(s) = segments.iter().find(|s| **s == "." || **s == "..") {
        return Err(format!("KV path `{path}` contains a `{s}` segment"));
    }
    if segments.len() < 2 {
        return Err(format!(
            "KV path `{path}` has no mount: write it as `MOUNT/path`, e.g. `secret/{path}`"
        ));
    }
    if segments[0] == "v1" {
        return Err(format!(
            "KV path `{path}` starts with the API prefix `v1/`: write `{}`",
            segments[1..].join("/")
        ));
    }
    if segments[1] == "data" || segments[1] == "metadata" {
        let logical = std::iter::once(segments[0])
            .chain(segments[2..].iter().copied())
            .collect::<Vec<_>>()
            .join("/");
        return Err(format!(
            "KV path `{path}` includes the KV v2 API segment `{}/`: write the logical path `{logical}` (as `vault kv get` takes it)",
            segments[1]
        ));
    }
    Ok(())
}

/// Splits a checked KV path into its mount and the path inside the mount.
pub fn split_kv_path(path: &str) -> Option<(&str, &str)> {
    path.split_once('/')
        .filter(|(mount, rest)| !mount.is_empty() && !rest.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_logical_paths() {
        for ok in [
            "secret/api-key/default",
            "secret/database/orders",
            "secret/llm-api-key/openai",
            "secret/service/billing/credentials",
            "kv/x",
        ] {
            assert_eq!(check_kv_path(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_malformed_paths_with_a_hint() {
        let cases = [
            ("", "empty"),
            ("/secret/x", "must not start with `/`: write `secret/x`"),
            ("secret/x/", "must not end"),
            ("secret//x", "empty segment"),
            ("secret", "no mount"),
            (
                "secret/data/api-key/default",
                "write the logical path `secret/api-key/default`",
            ),
            ("secret/metadata/x", "`metadata/`"),
            ("v1/secret/x", "write `secret/x`"),
            ("secret/../x", "`..`"),
            ("secret/api-key/{name}", "placeholder"),
            (" secret/x", "spaces"),
            ("secret/a\nb", "control"),
        ];
        for (bad, fragment) in cases {
            let err = check_kv_path(bad).unwrap_err();
            assert!(err.contains(fragment), "{bad:?}: {err}");
        }
    }

    #[test]
    fn splits_mount_from_path() {
        assert_eq!(
            split_kv_path("secret/api-key/default"),
            Some(("secret", "api-key/default"))
        );
        assert_eq!(split_kv_path("secret"), None);
    }
}
