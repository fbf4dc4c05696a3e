//! Digests of the exact submitted bytes, as document metadata needs them.

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};
use sha2::Sha256;

/// Digests and size of a document's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Hashes {
    /// SHA-1, lowercase hex: what IHE MHD puts in `DocumentReference.content.attachment.hash`
    /// (there base64-encoded) and XDS in the `hash` slot.
    pub sha1_hex: String,
    /// SHA-256, lowercase hex: kept for integrity checks that do not rely on SHA-1.
    pub sha256_hex: String,
    /// Size in bytes.
    pub size: u64,
}

/// Hashes `bytes` exactly as given (no normalisation of any kind).
pub fn hashes(bytes: &[u8]) -> Hashes {
    Hashes {
        sha1_hex: hex(&Sha1::digest(bytes)),
        sha256_hex: hex(&Sha256::digest(bytes)),
        size: bytes.len() as u64,
    }
}

fn hex(digest: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(digest.len() * 2);
    for b in digest {
        let _ = write!(s, "{b:02x}");
    }
    s
}
