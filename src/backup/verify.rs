//! The integrity check of a raft snapshot archive, fed the bytes as they stream by.
//!
//! Vault's snapshot is a gzip'd tar of `meta.json`, `state.bin`, `SHA256SUMS` and
//! `SHA256SUMS.sealed`. The archive passes when: the gzip stream reads to its end (its CRC and
//! length trailer match) with nothing after it; the tar reads to its end marker with only zero
//! padding after it; every file `SHA256SUMS` lists is present and hashes to what it says, and it
//! lists `meta.json` and `state.bin`; `state.bin`'s size equals `meta.json`'s `Size`;
//! `SHA256SUMS.sealed` is present and not empty (its signature needs the cluster's keys, which
//! only Vault has: a restore checks it); nothing else is in the archive. Only the small files
//! are held in memory; `state.bin` is hashed as it passes.
//!
//! [`check_archive`] is synchronous and meant for a blocking thread; [`ChunkReader`] turns a
//! channel of chunks into the `BufRead` it consumes (without copying them into another buffer).
//! [`check_stream`] also hashes the whole stream as it arrives: the snapshot pipeline takes the
//! manifest's plaintext SHA-256 from there, so that the encryption thread does not do that work
//! as well.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read};

use bytes::{Buf, Bytes};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

const META: &str = "meta.json";
const STATE: &str = "state.bin";
const SUMS: &str = "SHA256SUMS";
const SEALED: &str = "SHA256SUMS.sealed";
/// Largest of the small files we keep in memory.
const SMALL_LIMIT: u64 = 1024 * 1024;

/// What the archive says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveFacts {
    pub raft_index: u64,
    pub raft_term: u64,
    /// Size of `state.bin`.
    pub state_size: u64,
}

#[derive(serde::Deserialize)]
struct Meta {
    #[serde(rename = "Index")]
    index: u64,
    #[serde(rename = "Term")]
    term: u64,
    #[serde(rename = "Size")]
    size: u64,
}

/// The archive's facts, and the SHA-256 and size of the whole stream it arrived as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedStream {
    pub facts: ArchiveFacts,
    pub sha256: String,
    pub size: u64,
}

/// Checks the archive arriving on `rx` (see [`check_archive`]), hashing every chunk as it
/// arrives. A passed check has read the stream to its end, so the sums cover all of it.
pub fn check_stream(rx: mpsc::Receiver<Bytes>) -> Result<CheckedStream, String> {
    let mut input = ChunkReader::new(rx);
    input.hash = Some((Sha256::new(), 0));
    let facts = check_archive(&mut input)?;
    let (hasher, size) = input.hash.take().unwrap_or_default();
    Ok(CheckedStream {
        facts,
        sha256: hex::encode(hasher.finalize()),
        size,
    })
}

/// Reads the whole archive from `input` and checks it. The error says what failed, never what
/// the archive holds.
pub fn check_archive<R: BufRead>(input: R) -> Result<ArchiveFacts, String> {
    let mut gz = flate2::bufread::GzDecoder::new(input);
    let mut hashes: BTreeMap<String, ([u8; 32], u64)> = BTreeMap::new();
    let mut meta: Option<Vec<u8>> = None;
    let mut sums: Option<Vec<u8>> = None;
    {
        let mut archive = tar::Archive::new(&mut gz);
        let entries = archive
            .entries()
            .map_err(|e| read_error("the archive", &e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| read_error("the archive", &e))?;
            let name = entry
                .path()
                .map_err(|e| read_error("an entry name", &e))?
                .to_string_lossy()
                .into_owned();
            let name = name.trim_start_matches("./").to_string();
            if !entry.header().entry_type().is_file() {
                return Err(format!(
                    "unexpected entry `{}` (not a regular file)",
                    shown(&name)
                ));
            }
            if hashes.contains_key(&name) {
                return Err(format!("`{}` appears twice", shown(&name)));
            }
            let keep = matches!(name.as_str(), META | SUMS | SEALED);
            if keep && entry.size() > SMALL_LIMIT {
                return Err(format!("`{name}` is {} bytes, far too large", entry.size()));
            }
            let mut kept = Vec::new();
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = entry
                    .read(&mut buf)
                    .map_err(|e| read_error(&format!("`{}`", shown(&name)), &e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                size += n as u64;
                if keep {
                    kept.extend_from_slice(&buf[..n]);
                }
            }
            if size != entry.size() {
                return Err(format!("`{}` is cut short", shown(&name)));
            }
            match name.as_str() {
                META => meta = Some(kept),
                SUMS => sums = Some(kept),
                _ => {}
            }
            hashes.insert(name, (hasher.finalize().into(), size));
        }
    }
    // After the tar's end marker only zero padding may follow, up to the gzip stream's end,
    // whose CRC and length trailer the decoder checks when it reaches it.
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = gz
            .read(&mut buf)
            .map_err(|e| read_error("the end of the archive", &e))?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Err("data after the end of the tar archive".into());
        }
    }
    let mut rest = gz.into_inner();
    let trailing = rest
        .fill_buf()
        .map_err(|e| read_error("the end of the stream", &e))?;
    if !trailing.is_empty() {
        return Err("data after the end of the gzip stream".into());
    }

    let meta = meta.ok_or_else(|| format!("`{META}` is missing"))?;
    let sums = sums.ok_or_else(|| format!("`{SUMS}` is missing"))?;
    let state_size = hashes
        .get(STATE)
        .map(|(_, size)| *size)
        .ok_or_else(|| format!("`{STATE}` is missing"))?;
    match hashes.get(SEALED) {
        None => return Err(format!("`{SEALED}` is missing")),
        Some((_, 0)) => return Err(format!("`{SEALED}` is empty")),
        Some(_) => {}
    }
    let listed = parse_sums(&sums)?;
    for required in [META, STATE] {
        if !listed.contains_key(required) {
            return Err(format!("`{SUMS}` does not list `{required}`"));
        }
    }
    for (name, want) in &listed {
        let Some((got, _)) = hashes.get(name.as_str()) else {
            return Err(format!(
                "`{}` is listed in `{SUMS}` but missing",
                shown(name)
            ));
        };
        if got != want {
            return Err(format!(
                "`{}` does not match its SHA-256 in `{SUMS}`",
                shown(name)
            ));
        }
    }
    for name in hashes.keys() {
        if name != SUMS && name != SEALED && !listed.contains_key(name) {
            return Err(format!("unexpected entry `{}`", shown(name)));
        }
    }
    let meta: Meta = serde_json::from_slice(&meta)
        .map_err(|e| format!("`{META}` is not valid snapshot metadata: {e}"))?;
    if meta.size != state_size {
        return Err(format!(
            "`{STATE}` is {state_size} bytes but `{META}` says {}",
            meta.size
        ));
    }
    Ok(ArchiveFacts {
        raft_index: meta.index,
        raft_term: meta.term,
        state_size,
    })
}

/// `HEX  NAME` lines (sha256sum's format).
fn parse_sums(text: &[u8]) -> Result<BTreeMap<String, [u8; 32]>, String> {
    let text = std::str::from_utf8(text).map_err(|_| format!("`{SUMS}` is not text"))?;
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || format!("`{SUMS}` line {} is not `SHA256  NAME`", i + 1);
        let (hex_part, name) = line.split_once(char::is_whitespace).ok_or_else(bad)?;
        let name = name.trim_start().trim_start_matches('*').to_string();
        let mut digest = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut digest).map_err(|_| bad())?;
        if out.insert(name, digest).is_some() {
            return Err(format!("`{SUMS}` lists a file twice"));
        }
    }
    Ok(out)
}

/// An entry name fit for a message (they come from the archive: keep them short and printable).
fn shown(name: &str) -> String {
    name.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn read_error(what: &str, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => format!("the archive ends early (reading {what})"),
        _ => format!("reading {what}: {e}"),
    }
}

/// A blocking `BufRead` over a channel of chunks; the end of the channel is the end of the
/// stream. For use on a blocking thread only.
pub struct ChunkReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
    /// SHA-256 and size of every chunk received, when [`check_stream`] asks for them.
    hash: Option<(Sha256, u64)>,
}

impl ChunkReader {
    pub fn new(rx: mpsc::Receiver<Bytes>) -> Self {
        ChunkReader {
            rx,
            current: Bytes::new(),
            hash: None,
        }
    }
}

impl BufRead for ChunkReader {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => {
                    if let Some((hasher, size)) = &mut self.hash {
                        hasher.update(&chunk);
                        *size += chunk.len() as u64;
                    }
                    self.current = chunk;
                }
                None => break,
            }
        }
        Ok(&self.current)
    }

    fn consume(&mut self, n: usize) {
        self.current.advance(n);
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = buf.len().min(available.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// Test helpers: build archives shaped like Vault's.
#[cfg(test)]
pub(crate) mod testing {
    use std::io::Write;

    use sha2::{Digest, Sha256};

    /// The four files of a snapshot archive, in Vault's order.
    pub fn files(state: &[u8], index: u64) -> Vec<(String, Vec<u8>)> {
        let meta = format!(
            r#"{{"Version":1,"ID":"bolt-snapshot","Index":{index},"Term":3,"Peers":null,"Size":{}}}"#,
            state.len()
        )
        .into_bytes();
        let sums = format!(
            "{}  meta.json\n{}  state.bin\n",
            hex::encode(Sha256::digest(&meta)),
            hex::encode(Sha256::digest(state))
        )
        .into_bytes();
        vec![
            ("meta.json".into(), meta),
            ("state.bin".into(), state.to_vec()),
            ("SHA256SUMS".into(), sums),
            ("SHA256SUMS.sealed".into(), b"sealed-signature".to_vec()),
        ]
    }

    pub fn archive(files: &[(String, Vec<u8>)]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            tar.append_data(&mut h, name, data.as_slice()).unwrap();
        }
        let mut gz = tar.into_inner().unwrap();
        gz.flush().unwrap();
        gz.finish().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{archive, files};
    use super::*;

    fn state() -> Vec<u8> {
        (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect()
    }

    #[test]
    fn a_good_archive_passes() {
        let facts = check_archive(archive(&files(&state(), 38)).as_slice()).unwrap();
        assert_eq!(
            facts,
            ArchiveFacts {
                raft_index: 38,
                raft_term: 3,
                state_size: 800_000
            }
        );
    }

    #[test]
    fn a_flipped_byte_in_state_bin_fails() {
        let mut f = files(&state(), 1);
        f[1].1[1234] ^= 0x01;
        let err = check_archive(archive(&f).as_slice()).unwrap_err();
        assert!(err.contains("`state.bin` does not match"), "{err}");
    }

    #[test]
    fn every_cut_fails() {
        // Incompressible-ish state so the gzip stream is as long as the data.
        let small: Vec<u8> = (0..3000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let good = archive(&files(&small, 1));
        assert!(check_archive(good.as_slice()).is_ok());
        // Every prefix of the stream must fail, wherever the cut falls.
        for cut in 0..good.len() {
            let err = check_archive(&good[..cut]);
            assert!(err.is_err(), "a cut at {cut} of {} passed", good.len());
        }
    }

    #[test]
    fn size_mismatch_missing_and_extra_files_fail() {
        // meta.json's Size disagrees with state.bin (SHA256SUMS recomputed to match).
        let mut f = files(&state(), 1);
        let meta = String::from_utf8(f[0].1.clone())
            .unwrap()
            .replace("\"Size\":800000", "\"Size\":800001");
        f[0].1 = meta.into_bytes();
        f[2].1 = format!(
            "{}  meta.json\n{}  state.bin\n",
            hex::encode(Sha256::digest(&f[0].1)),
            hex::encode(Sha256::digest(&f[1].1))
        )
        .into_bytes();
        let err = check_archive(archive(&f).as_slice()).unwrap_err();
        assert!(err.contains("meta.json` says 800001"), "{err}");

        let mut f = files(&state(), 1);
        f.pop();
        let err = check_archive(archive(&f).as_slice()).unwrap_err();
        assert!(err.contains("SHA256SUMS.sealed` is missing"), "{err}");

        let mut f = files(&state(), 1);
        f[3].1.clear();
        let err = check_archive(archive(&f).as_slice()).unwrap_err();
        assert!(err.contains("is empty"), "{err}");

        let mut f = files(&state(), 1);
        f.push(("extra.bin".into(), b"x".to_vec()));
        let err = check_archive(archive(&f).as_slice()).unwrap_err();
        assert!(err.contains("unexpected entry `extra.bin`"), "{err}");

        let f = files(&state(), 1);
        let mut a = archive(&f);
        a.extend_from_slice(b"trailing");
        let err = check_archive(a.as_slice()).unwrap_err();
        assert!(err.contains("after the end of the gzip stream"), "{err}");

        let err = check_archive(&b"not gzip at all"[..]).unwrap_err();
        assert!(!err.is_empty());
    }

    #[test]
    fn chunk_reader_reassembles_the_stream() {
        let (tx, rx) = mpsc::channel(4);
        let data = archive(&files(&state(), 7));
        let chunks: Vec<Bytes> = data.chunks(1000).map(Bytes::copy_from_slice).collect();
        let feeder = std::thread::spawn(move || {
            for c in chunks {
                tx.blocking_send(c).unwrap();
            }
        });
        let facts = check_archive(ChunkReader::new(rx)).unwrap();
        feeder.join().unwrap();
        assert_eq!(facts.raft_index, 7);
    }

    /// The stream's sums cover every byte, also the chunk that ends after the gzip trailer's
    /// first bytes; a failed check gives none.
    #[test]
    fn check_stream_hashes_the_whole_stream() {
        let data = archive(&files(&state(), 9));
        let feed = |data: Vec<u8>| {
            let (tx, rx) = mpsc::channel(4);
            let feeder = std::thread::spawn(move || {
                for c in data.chunks(777) {
                    tx.blocking_send(Bytes::copy_from_slice(c)).unwrap();
                }
            });
            let result = check_stream(rx);
            feeder.join().unwrap();
            result
        };
        let checked = feed(data.clone()).unwrap();
        assert_eq!(checked.facts.raft_index, 9);
        assert_eq!(checked.sha256, hex::encode(Sha256::digest(&data)));
        assert_eq!(checked.size, data.len() as u64);
        let mut extra = data.clone();
        extra.extend_from_slice(b"trailing");
        assert!(feed(extra).is_err());
    }
}
