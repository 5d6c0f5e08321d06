//! age encryption to several recipients at once (X25519 `age1…` and SSH `ssh-ed25519` /
//! `ssh-rsa` public keys), and the identities `backups verify` / `restore` decrypt with.
//!
//! The file format is age v1, which the Go `age` CLI reads. Identities are read from a file into
//! zeroizing memory and never logged; error messages name the file, not its lines.

use std::io::{BufRead, Read};
use std::path::Path;

use base64::Engine as _;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::BackupError;

/// A recipient the encryptor accepts.
pub type BoxedRecipient = Box<dyn age::Recipient + Send + Sync>;
/// An identity the decryptor accepts.
pub type BoxedIdentity = Box<dyn age::Identity + Send + Sync>;

/// Parses the configured recipients (validated at config load; this only fails on a bug).
pub fn parse_recipients(list: &[String]) -> Result<Vec<BoxedRecipient>, BackupError> {
    if list.is_empty() {
        return Err(BackupError::Age("no recipients".into()));
    }
    list.iter()
        .map(|r| {
            let r = r.trim();
            if r.starts_with("age1") {
                r.parse::<age::x25519::Recipient>()
                    .map(|k| Box::new(k) as BoxedRecipient)
                    .map_err(|e| BackupError::Age(format!("recipient {}: {e}", fingerprint(r))))
            } else {
                r.parse::<age::ssh::Recipient>()
                    .map(|k| Box::new(k) as BoxedRecipient)
                    .map_err(|_| {
                        BackupError::Age(format!("recipient {}: not usable", fingerprint(r)))
                    })
            }
        })
        .collect()
}

/// An encryptor for `recipients`.
pub fn encryptor(recipients: &[BoxedRecipient]) -> Result<age::Encryptor, BackupError> {
    age::Encryptor::with_recipients(recipients.iter().map(|r| r.as_ref() as &dyn age::Recipient))
        .map_err(|e| BackupError::Age(format!("setting up encryption: {e}")))
}

/// How a recipient is named in manifests: an age recipient as written (it is the public key), an
/// SSH key as its `SHA256:…` fingerprint (what `ssh-keygen -lf` prints).
pub fn fingerprint(recipient: &str) -> String {
    let r = recipient.trim();
    if r.starts_with("age1") {
        return r.to_string();
    }
    let mut parts = r.split_whitespace();
    let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else {
        return "unknown".into();
    };
    match base64::engine::general_purpose::STANDARD.decode(blob) {
        Ok(bytes) => format!(
            "{kind} SHA256:{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(&bytes))
        ),
        Err(_) => format!("{kind} (unparsable)"),
    }
}

/// Reads the identities in `path`: an age identity file (`AGE-SECRET-KEY-1…` lines, `#`
/// comments) or an unencrypted OpenSSH private key (ed25519 or RSA).
pub fn load_identities(path: &Path) -> Result<Vec<BoxedIdentity>, BackupError> {
    let shown = path.display();
    let mut text = Zeroizing::new(String::new());
    std::fs::File::open(path)
        .and_then(|f| f.take(16 * 1024 * 1024).read_to_string(&mut text))
        .map_err(|e| BackupError::Usage(format!("reading identity file {shown}: {e}")))?;
    if text.contains("-----BEGIN") {
        let identity = age::ssh::Identity::from_buffer(text.as_bytes(), None)
            .map_err(|_| BackupError::Usage(format!("{shown} is not a usable SSH private key")))?;
        return match identity {
            age::ssh::Identity::Unencrypted(_) => Ok(vec![Box::new(identity)]),
            age::ssh::Identity::Encrypted(_) => Err(BackupError::Usage(format!(
                "{shown} is a passphrase-protected SSH key; use an unencrypted copy (ssh-keygen -p) on a safe machine, or an age identity"
            ))),
            age::ssh::Identity::Unsupported(_) => Err(BackupError::Usage(format!(
                "{shown}: this SSH key type cannot decrypt age files (use ed25519 or RSA)"
            ))),
        };
    }
    let file = age::IdentityFile::from_buffer(text.as_bytes())
        .map_err(|e| BackupError::Usage(format!("identity file {shown}: {e}")))?;
    let identities = file
        .into_identities()
        .map_err(|e| BackupError::Usage(format!("identity file {shown}: {e}")))?;
    if identities.is_empty() {
        return Err(BackupError::Usage(format!("{shown} holds no identity")));
    }
    // `into_identities` gives `dyn Identity` boxes without Send/Sync; X25519 keys are the only
    // kind a native identity file holds, so re-parse them as their concrete type.
    let mut out: Vec<BoxedIdentity> = Vec::new();
    for line in text.as_bytes().lines() {
        let line = Zeroizing::new(
            line.map_err(|e| BackupError::Usage(format!("identity file {shown}: {e}")))?,
        );
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Ok(id) = line.parse::<age::x25519::Identity>() {
            out.push(Box::new(id));
        }
    }
    if out.is_empty() {
        return Err(BackupError::Usage(format!(
            "{shown} holds no X25519 identity (plugin identities are not supported)"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;
    use std::io::Write;

    #[test]
    fn encrypts_to_several_recipients_and_each_identity_decrypts() {
        let a = age::x25519::Identity::generate();
        let b = age::x25519::Identity::generate();
        let recipients = vec![a.to_public().to_string(), b.to_public().to_string()];
        let parsed = parse_recipients(&recipients).unwrap();
        let mut out = Vec::new();
        let mut w = encryptor(&parsed).unwrap().wrap_output(&mut out).unwrap();
        w.write_all(b"snapshot bytes").unwrap();
        w.finish().unwrap();
        for id in [&a, &b] {
            let d = age::Decryptor::new(out.as_slice()).unwrap();
            let mut r = d
                .decrypt(std::iter::once(id as &dyn age::Identity))
                .unwrap();
            let mut plain = Vec::new();
            r.read_to_end(&mut plain).unwrap();
            assert_eq!(plain, b"snapshot bytes");
        }
    }

    #[test]
    fn identity_files_load_and_fingerprints_are_public() {
        let id = age::x25519::Identity::generate();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.txt");
        std::fs::write(
            &path,
            format!("# created: now\n{}\n", id.to_string().expose_secret()),
        )
        .unwrap();
        assert_eq!(load_identities(&path).unwrap().len(), 1);
        std::fs::write(&path, "garbage\n").unwrap();
        let err = load_identities(&path).err().unwrap().to_string();
        assert!(!err.contains("garbage"), "{err}");

        let r = id.to_public().to_string();
        assert_eq!(fingerprint(&r), r);
        let ssh = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAID+MaYBVDlVZBlqH41s25Demy8qJeYmzJ08G4kW7n2q9 someone@example.com";
        let fp = fingerprint(ssh);
        assert!(fp.starts_with("ssh-ed25519 SHA256:"), "{fp}");
        assert!(!fp.contains("someone"));
    }
}
