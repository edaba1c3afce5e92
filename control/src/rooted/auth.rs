//! Authenticated admission: a root and its leaves prove to each other that they hold the
//! same pre-shared [`Key`], without sending it.
//!
//! # The exchange
//!
//! A root with a key ([`RootConfig::key`](super::RootConfig::key)) answers every
//! [`Join`](Frame::Join), asked by the leaf or sent in answer to an invitation, with a
//! [`Challenge`](Frame::Challenge) carrying its nonce `Nr`. The leaf answers with a
//! [`Proof`](Frame::Proof): its own nonce `Nl` and
//!
//! ```text
//! leaf mac = HMAC-SHA256(key, "multipoint-join-v1" || Nr || Nl || join)
//! ```
//!
//! where `join` is the leaf's `Join` frame exactly as it goes on the wire (length prefix,
//! version and type included), so the proof covers the transport, the direction, the
//! data address and the name. The root checks it in constant time; a leaf that answers
//! anything else, or nothing within the timeout, or a proof that does not match, is
//! refused with the reason [`AUTH_FAILED`] ("authentication failed") and nothing else:
//! its admission hooks are not asked, and no data plane is set up for it. A leaf that
//! proved the key goes on to the usual admission. Admitting it, the root sends a
//! [`RootProof`](Frame::RootProof) right before the [`Admit`](Frame::Admit):
//!
//! ```text
//! root mac = HMAC-SHA256(key, "multipoint-root-v1" || Nl || Nr || join || admit)
//! ```
//!
//! with `admit` the Admit frame as it goes on the wire. A leaf with a key
//! ([`LeafConfig::key`](super::LeafConfig::key)) takes the admission only if that proof
//! matches: an Admit without a challenge before it (a root without a key), or with a
//! proof that does not match, fails the join with [`Error::AuthenticationFailed`] and the
//! leaf leaves at once. A leaf without a key that is challenged declines (a
//! [`Refuse`](Frame::Refuse)), and the root refuses it with `authentication failed`.
//!
//! Both nonces are 32 bytes from the OS's random generator (`getrandom`), drawn fresh
//! for every connection: a recorded exchange replayed to the root fails, for the root's
//! nonce is another; replayed to a leaf, it fails for the leaf's. The two labels differ,
//! so neither side's proof can be reflected back as the other's.
//!
//! # What this does not do
//!
//! The exchange authenticates admission, not the connection after it: frames are
//! neither encrypted nor authenticated one by one, so someone able to rewrite the TCP
//! stream could still end a session or relay one (data still goes only to the data
//! address the leaf proved). Keep rooted sessions on networks you trust for that, or
//! under a VPN.
//!
//! # Key files
//!
//! [`Key::from_file`] reads a key from a file that only its owner may read or write
//! (mode `0600` or `0400`; anything for group or others is refused, saying to `chmod 600`
//! it). The file holds either hex digits (an even number of them, at least 32; ASCII
//! whitespace around them is ignored), decoded to the key's bytes, or, when it is
//! anything else, raw bytes, taken exactly as they are. Either way the key is 16 to
//! 1,024 bytes. `openssl rand -hex 32 > F` or `head -c 32 /dev/urandom > F` make one.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::proto::{Frame, MAC_LEN, NONCE_LEN};
use crate::error::{Error, Result};

/// The reason a root gives a leaf that did not prove the key: exactly this, so that
/// nothing else is learnt without the key.
pub const AUTH_FAILED: &str = "authentication failed";

/// Fewest bytes a key has.
pub const MIN_KEY_LEN: usize = 16;
/// Most bytes a key has (and a key file is read to).
pub const MAX_KEY_LEN: usize = 1024;

/// A pre-shared key for authenticated admission. Cloning is cheap; neither `Debug` nor
/// any message shows its bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(Arc<[u8]>);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl Key {
    /// A key of these bytes.
    ///
    /// # Errors
    ///
    /// [`Error::BadKey`] if it is shorter than [`MIN_KEY_LEN`] or longer than
    /// [`MAX_KEY_LEN`] bytes.
    pub fn new(bytes: impl AsRef<[u8]>) -> Result<Key> {
        Key::checked(bytes.as_ref(), None)
    }

    /// Reads the key in `path` (see [the module docs](self#key-files) for the format).
    ///
    /// # Errors
    ///
    /// [`Error::BadKey`] naming the file, if it cannot be read, is not a regular file,
    /// may be read or written by group or others, or holds no key of 16 to 1,024 bytes.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Key> {
        let path = path.as_ref();
        let bad = |why: String| Error::BadKey {
            path: Some(path.to_owned()),
            why,
        };
        let file = std::fs::File::open(path).map_err(|e| bad(format!("cannot open it: {e}")))?;
        let meta = file
            .metadata()
            .map_err(|e| bad(format!("cannot read its permissions: {e}")))?;
        if !meta.is_file() {
            return Err(bad("it is not a regular file".into()));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(bad(format!(
                "its mode {mode:04o} makes it {}; a pre-shared key must be private to its \
                 owner: run `chmod 600 {}`",
                exposure(mode),
                path.display()
            )));
        }
        let mut content = Vec::new();
        let limit = u64::try_from(2 * MAX_KEY_LEN + 64).unwrap_or(u64::MAX);
        file.take(limit)
            .read_to_end(&mut content)
            .map_err(|e| bad(format!("cannot read it: {e}")))?;
        if content.is_empty() {
            return Err(bad(
                "it is empty; put a key of at least 16 bytes in it (`openssl rand -hex 32`)".into(),
            ));
        }
        let bytes = decode_hex(content.trim_ascii()).unwrap_or(content);
        Key::checked(&bytes, Some(path.to_owned()))
    }

    fn checked(bytes: &[u8], path: Option<PathBuf>) -> Result<Key> {
        let why = if bytes.len() < MIN_KEY_LEN {
            format!(
                "the key is {} bytes; at least {MIN_KEY_LEN} are needed (`openssl rand -hex \
                 32` makes a good one)",
                bytes.len()
            )
        } else if bytes.len() > MAX_KEY_LEN {
            format!("the key is longer than the {MAX_KEY_LEN} bytes allowed")
        } else {
            return Ok(Key(Arc::from(bytes)));
        };
        Err(Error::BadKey { path, why })
    }

    /// A MAC keyed with this key; HMAC takes a key of any length (a longer one is hashed
    /// first), so `None` does not happen.
    fn mac(&self) -> Option<Hmac<Sha256>> {
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).ok()
    }
}

/// What a file of `mode` is to others than its owner, in words: the worst first.
fn exposure(mode: u32) -> &'static str {
    if mode & 0o004 != 0 {
        "world-readable"
    } else if mode & 0o040 != 0 {
        "group-readable"
    } else if mode & 0o022 != 0 {
        "writable by group or others"
    } else {
        "executable by group or others"
    }
}

/// The bytes `text` spells in hex (an even number of digits, at least 32), if it does.
fn decode_hex(text: &[u8]) -> Option<Vec<u8>> {
    if text.len() < 2 * MIN_KEY_LEN || text.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16);
    text.chunks_exact(2)
        .map(|pair| match pair {
            [hi, lo] => Some(u8::try_from(digit(*hi)? * 16 + digit(*lo)?).ok()?),
            _ => None,
        })
        .collect()
}

/// A nonce of the exchange.
pub(crate) type Nonce = [u8; NONCE_LEN];
/// An HMAC-SHA256 of the exchange.
pub(crate) type Tag = [u8; MAC_LEN];

/// Where a core's nonces come from: the OS's random generator, or (in tests) a counter.
/// The one input of a core besides frames, commands and the time.
pub(crate) struct Nonces(Box<dyn FnMut() -> Option<Nonce> + Send>);

impl fmt::Debug for Nonces {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Nonces")
    }
}

impl Nonces {
    /// Nonces from the OS (`getrandom`); `None` when it fails.
    pub(crate) fn os() -> Nonces {
        Nonces(Box::new(|| {
            let mut nonce = [0; NONCE_LEN];
            match getrandom::fill(&mut nonce) {
                Ok(()) => Some(nonce),
                Err(e) => {
                    tracing::error!("rooted: the OS gave no random nonce: {e}");
                    None
                }
            }
        }))
    }

    /// Nonces that are all `seed`, but for a count in the last 8 bytes: deterministic,
    /// and never the same twice (tests and the fuzz entry points).
    pub(crate) fn counter(seed: u8) -> Nonces {
        let mut count = 0u64;
        Nonces(Box::new(move || {
            count += 1;
            let mut nonce = [seed; NONCE_LEN];
            nonce[NONCE_LEN - 8..].copy_from_slice(&count.to_be_bytes());
            Some(nonce)
        }))
    }

    /// The next nonce; `None` if none can be had.
    pub(crate) fn draw(&mut self) -> Option<Nonce> {
        (self.0)()
    }
}

/// Domain labels of the two proofs.
const LEAF_LABEL: &[u8] = b"multipoint-join-v1";
const ROOT_LABEL: &[u8] = b"multipoint-root-v1";

/// One connection's exchange as far as both sides know it: the nonces and the Join.
#[derive(Debug, Clone)]
pub(crate) struct Transcript {
    pub(crate) root_nonce: Nonce,
    pub(crate) leaf_nonce: Nonce,
    /// The Join frame as encoded on the wire.
    join: Vec<u8>,
}

impl Transcript {
    /// The exchange of `join` under these nonces; `None` if the frame does not encode
    /// (it then never went on the wire).
    pub(crate) fn new(root_nonce: Nonce, leaf_nonce: Nonce, join: &Frame) -> Option<Transcript> {
        let mut bytes = Vec::new();
        join.encode(&mut bytes).ok()?;
        Some(Transcript {
            root_nonce,
            leaf_nonce,
            join: bytes,
        })
    }

    fn leaf_mac(&self, key: &Key) -> Option<Hmac<Sha256>> {
        let mut mac = key.mac()?;
        mac.update(LEAF_LABEL);
        mac.update(&self.root_nonce);
        mac.update(&self.leaf_nonce);
        mac.update(&self.join);
        Some(mac)
    }

    /// `None` if `admit` does not encode.
    fn root_mac(&self, key: &Key, admit: &Frame) -> Option<Hmac<Sha256>> {
        let mut bytes = Vec::new();
        admit.encode(&mut bytes).ok()?;
        let mut mac = key.mac()?;
        mac.update(ROOT_LABEL);
        mac.update(&self.leaf_nonce);
        mac.update(&self.root_nonce);
        mac.update(&self.join);
        mac.update(&bytes);
        Some(mac)
    }

    /// The leaf's proof; `None` if it cannot be made.
    pub(crate) fn leaf_proof(&self, key: &Key) -> Option<Tag> {
        Some(self.leaf_mac(key)?.finalize().into_bytes().into())
    }

    /// Whether `tag` is the leaf's proof, compared in constant time.
    pub(crate) fn leaf_proves(&self, key: &Key, tag: &Tag) -> bool {
        self.leaf_mac(key)
            .is_some_and(|mac| mac.verify_slice(tag).is_ok())
    }

    /// The root's proof for `admit`; `None` if the frame does not encode.
    pub(crate) fn root_proof(&self, key: &Key, admit: &Frame) -> Option<Tag> {
        Some(self.root_mac(key, admit)?.finalize().into_bytes().into())
    }

    /// Whether `tag` is the root's proof for `admit`, compared in constant time.
    pub(crate) fn root_proves(&self, key: &Key, admit: &Frame, tag: &Tag) -> bool {
        self.root_mac(key, admit)
            .is_some_and(|mac| mac.verify_slice(tag).is_ok())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::io::Write;

    use super::*;
    use crate::socket::Direction;
    use crate::transport::Transport;

    fn key(byte: u8) -> Key {
        Key::new([byte; 32]).unwrap()
    }

    fn join(name: &str) -> Frame {
        Frame::Join {
            transport: Transport::RootedUnicast,
            direction: Direction::ReceiverOnly,
            data: Some("127.0.0.1:5000".parse().unwrap()),
            name: name.into(),
        }
    }

    fn admit() -> Frame {
        Frame::Admit {
            session: *b"SESSION001",
            timeout_ms: 3000,
            next_sequence: 1,
            plan: crate::rooted::DataPlan::Unicast {
                root: "127.0.0.1:7000".parse().unwrap(),
                uplink: None,
            },
        }
    }

    /// A file in a fresh temporary directory holding `content`, with `mode`.
    fn key_file(name: &str, content: &[u8], mode: u32) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mp-key-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("key");
        let _ = std::fs::remove_file(&path);
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_proof_holds_for_the_same_key_nonces_and_join_only() {
        let t = Transcript::new([1; 32], [2; 32], &join("a")).unwrap();
        let proof = t.leaf_proof(&key(7)).unwrap();
        assert!(t.leaf_proves(&key(7), &proof));
        assert!(!t.leaf_proves(&key(8), &proof), "another key");
        let other_root_nonce = Transcript::new([3; 32], [2; 32], &join("a")).unwrap();
        assert!(!other_root_nonce.leaf_proves(&key(7), &proof), "a replay");
        let other_name = Transcript::new([1; 32], [2; 32], &join("b")).unwrap();
        assert!(!other_name.leaf_proves(&key(7), &proof), "another name");
        let mut cut = proof;
        cut[31] ^= 1;
        assert!(!t.leaf_proves(&key(7), &cut));
    }

    #[test]
    fn the_roots_proof_covers_the_admit_and_is_not_the_leafs() {
        let t = Transcript::new([1; 32], [2; 32], &join("a")).unwrap();
        let proof = t.root_proof(&key(7), &admit()).unwrap();
        assert!(t.root_proves(&key(7), &admit(), &proof));
        assert!(!t.root_proves(&key(8), &admit(), &proof));
        let Frame::Admit { plan, .. } = admit() else {
            unreachable!()
        };
        let changed = Frame::Admit {
            session: *b"SESSION002",
            timeout_ms: 3000,
            next_sequence: 1,
            plan,
        };
        assert!(!t.root_proves(&key(7), &changed, &proof));
        assert!(!t.leaf_proves(&key(7), &proof), "labels keep the two apart");
        // Swapping the nonces does not turn a leaf's proof into anything.
        let swapped = Transcript::new([2; 32], [1; 32], &join("a")).unwrap();
        assert_ne!(swapped.leaf_proof(&key(7)), t.leaf_proof(&key(7)));
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let k = Key::new(b"0123456789abcdef-secret").unwrap();
        let shown = format!("{k:?}");
        assert_eq!(shown, "Key(<redacted>)");
        let mut config = crate::rooted::LeafConfig::new("x");
        config.key = Some(k);
        assert!(!format!("{config:?}").contains("secret"));
    }

    #[test]
    fn keys_shorter_than_16_bytes_are_refused() {
        let err = Key::new([1; 15]).unwrap_err();
        assert!(err.to_string().contains("at least 16"), "{err}");
        assert!(Key::new([1; 16]).is_ok());
        assert!(Key::new(vec![1; MAX_KEY_LEN + 1]).is_err());
    }

    #[test]
    fn a_key_file_of_hex_is_decoded_and_anything_else_taken_raw() {
        let hex = key_file("hex", b"000102030405060708090a0b0c0d0e0F\n", 0o600);
        assert_eq!(
            Key::from_file(&hex).unwrap(),
            Key::new((0..16).collect::<Vec<u8>>()).unwrap()
        );
        let raw = key_file("raw", b"correct horse battery staple\n", 0o400);
        assert_eq!(
            Key::from_file(&raw).unwrap(),
            Key::new(b"correct horse battery staple\n").unwrap()
        );
    }

    #[test]
    fn a_key_file_others_may_read_is_refused_saying_to_chmod_600() {
        for (mode, says) in [
            (0o644, "world-readable"),
            (0o640, "group-readable"),
            (0o620, "writable by group or others"),
            (0o601, "executable"),
        ] {
            let path = key_file(&format!("mode{mode:o}"), &[b'k'; 32], mode);
            let err = Key::from_file(&path).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(says), "{text}");
            assert!(
                text.contains(&format!("chmod 600 {}", path.display())),
                "{text}"
            );
            assert!(!text.contains("kkkk"), "the key is not shown: {text}");
        }
    }

    #[test]
    fn an_empty_short_or_missing_key_file_is_refused_with_the_reason() {
        let empty = key_file("empty", b"", 0o600);
        assert!(Key::from_file(&empty)
            .unwrap_err()
            .to_string()
            .contains("empty"));
        let short = key_file("short", b"abcd\n", 0o600);
        assert!(Key::from_file(&short)
            .unwrap_err()
            .to_string()
            .contains("the key is 5 bytes"));
        let missing = std::env::temp_dir().join("mp-key-does-not-exist/key");
        assert!(Key::from_file(&missing)
            .unwrap_err()
            .to_string()
            .contains("cannot open it"));
    }
}
