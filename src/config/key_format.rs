//! The `format` of an `api-key` job: `hex:N`, `base64url:N` (N random bytes) or `alnum:N`
//! (N characters from `[A-Za-z0-9]`), plus an optional literal `prefix`.
//!
//! Bounds: every format must carry at least 128 bits of randomness, so `hex` and `base64url` take
//! 16 to 256 bytes and `alnum` 22 to 256 characters (62^22 > 2^130). 256 keeps keys small enough
//! for any header or KV field.

use super::jobs::{KeyAlphabet, KeyFormat};

impl KeyAlphabet {
    /// The name used in `format` strings.
    pub fn name(&self) -> &'static str {
        match self {
            KeyAlphabet::Hex => "hex",
            KeyAlphabet::Base64Url => "base64url",
            KeyAlphabet::Alnum => "alnum",
        }
    }

    /// Smallest and largest `N` accepted for this alphabet.
    pub fn length_bounds(&self) -> (usize, usize) {
        match self {
            KeyAlphabet::Hex | KeyAlphabet::Base64Url => (16, 256),
            KeyAlphabet::Alnum => (22, 256),
        }
    }
}

impl KeyFormat {
    /// Longest accepted `prefix`.
    pub const MAX_PREFIX_LEN: usize = 32;

    /// Parses `format` (e.g. `hex:24`) and checks `prefix`.
    pub fn parse(format: &str, prefix: &str) -> Result<KeyFormat, String> {
        let help =
            "write it as `hex:N` or `base64url:N` (N random bytes) or `alnum:N` (N characters)";
        let Some((name, n)) = format.split_once(':') else {
            return Err(format!("invalid key format `{format}`: {help}"));
        };
        let alphabet = match name {
            "hex" => KeyAlphabet::Hex,
            "base64url" => KeyAlphabet::Base64Url,
            "alnum" => KeyAlphabet::Alnum,
            other => {
                return Err(format!(
                    "invalid key format `{format}`: unknown alphabet `{other}`; {help}"
                ));
            }
        };
        let length: usize = n
            .parse()
            .map_err(|_| format!("invalid key format `{format}`: `{n}` is not a number; {help}"))?;
        let (min, max) = alphabet.length_bounds();
        if !(min..=max).contains(&length) {
            let unit = if alphabet == KeyAlphabet::Alnum {
                "characters"
            } else {
                "bytes"
            };
            return Err(format!(
                "invalid key format `{format}`: {} keys take {min} to {max} {unit} (at least 128 random bits)",
                alphabet.name()
            ));
        }
        check_prefix(prefix)?;
        Ok(KeyFormat {
            alphabet,
            length,
            prefix: prefix.to_string(),
        })
    }

    /// The `format` string this was parsed from, e.g. `hex:24` (without the prefix).
    pub fn spec(&self) -> String {
        format!("{}:{}", self.alphabet.name(), self.length)
    }

    /// Length in characters of a generated key, prefix included.
    pub fn encoded_len(&self) -> usize {
        let body = match self.alphabet {
            KeyAlphabet::Hex => self.length * 2,
            // Unpadded base64: 4 characters per 3 bytes, rounded up.
            KeyAlphabet::Base64Url => (self.length * 4).div_ceil(3),
            KeyAlphabet::Alnum => self.length,
        };
        self.prefix.chars().count() + body
    }
}

/// A prefix is a literal marker such as `sk_live_`: short, and made of characters that survive
/// headers, URLs and shells unquoted.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.chars().count() > KeyFormat::MAX_PREFIX_LEN {
        return Err(format!(
            "prefix `{prefix}` is too long (at most {} characters)",
            KeyFormat::MAX_PREFIX_LEN
        ));
    }
    if let Some(c) = prefix
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "prefix `{prefix}` contains `{}`: use only letters, digits, `_`, `-` and `.`",
            c.escape_default()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_alphabet() {
        let f = KeyFormat::parse("hex:24", "").unwrap();
        assert_eq!((f.alphabet, f.length), (KeyAlphabet::Hex, 24));
        assert_eq!(f.encoded_len(), 48);
        assert_eq!(f.spec(), "hex:24");
        let f = KeyFormat::parse("base64url:32", "sk_").unwrap();
        assert_eq!((f.alphabet, f.length), (KeyAlphabet::Base64Url, 32));
        assert_eq!(f.encoded_len(), 3 + 43);
        assert_eq!(f.prefix, "sk_");
        let f = KeyFormat::parse("alnum:40", "").unwrap();
        assert_eq!((f.alphabet, f.length), (KeyAlphabet::Alnum, 40));
        assert_eq!(f.encoded_len(), 40);
    }

    #[test]
    fn bounds_are_inclusive() {
        assert!(KeyFormat::parse("hex:16", "").is_ok());
        assert!(KeyFormat::parse("hex:256", "").is_ok());
        assert!(KeyFormat::parse("alnum:22", "").is_ok());
        assert!(KeyFormat::parse("hex:15", "").is_err());
        assert!(KeyFormat::parse("base64url:257", "").is_err());
        assert!(KeyFormat::parse("alnum:21", "").is_err());
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "hex", "hex:", "hex:abc", "hex:-1", "sha:24", ":24", "", "HEX:24", "hex:24:1",
        ] {
            let err = KeyFormat::parse(bad, "").unwrap_err();
            assert!(err.contains("invalid key format"), "{bad}: {err}");
        }
    }

    #[test]
    fn checks_the_prefix() {
        assert!(KeyFormat::parse("hex:24", "vs-live_1.").is_ok());
        assert!(KeyFormat::parse("hex:24", "has space").is_err());
        assert!(KeyFormat::parse("hex:24", "ключ").is_err());
        assert!(KeyFormat::parse("hex:24", &"p".repeat(33)).is_err());
    }
}
