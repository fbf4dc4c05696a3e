//! Document bytes (CDA, PDF, images) outside the database, content-addressed by SHA-256.
//!
//! A blob is named by the SHA-256 of its bytes: storing the same document twice stores it once, a name
//! always means the same bytes, and every read checks them against their name — a blob altered on disk is
//! reported as corrupt, never served. The metadata that points to a blob (its hash and size) lives in the
//! database, in the same transaction as the resource that uses it.
//!
//! [`LocalBlobs`] keeps them in a directory (`<data>/blobs` by default), durably: a blob is written to a
//! temporary file, flushed to disk, renamed into place and its directory flushed, so a `put` that returned
//! survives a crash, and a crash during a `put` leaves at most a temporary file (removed at the next open),
//! never a partial blob under its name. [`crate::s3::S3Blobs`] keeps them in an S3-compatible bucket
//! (the deployment option the architecture names), behind the same trait; [`open`] picks one from the
//! configuration.

use crate::flush::GroupFlush;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

/// A stored blob: the hex SHA-256 of its bytes (its name) and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    pub sha256: String,
    pub size: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("document introuvable dans le stockage : {0}")]
    NotFound(String),
    /// The bytes on disk no longer match their name.
    #[error("document altéré dans le stockage : {sha256} (empreinte relue {found})")]
    Corrupt { sha256: String, found: String },
    #[error("nom de document invalide (empreinte SHA-256 hexadécimale attendue) : {0}")]
    InvalidName(String),
    #[error("document trop volumineux : {size} octets (maximum {max})")]
    TooLarge { size: u64, max: u64 },
    #[error("stockage des documents : {0}")]
    Io(String),
}

fn io(context: &str, e: std::io::Error) -> BlobError {
    BlobError::Io(format!("{context} : {e}"))
}

/// Where document bytes are kept.
pub trait BlobStore: Send + Sync {
    /// Stores `bytes` (durably once this returns) and returns their name. Storing bytes already present
    /// is a no-op that returns the same name.
    fn put(&self, bytes: &[u8]) -> Result<BlobRef, BlobError>;
    /// The bytes named `sha256`, checked against their name.
    fn get(&self, sha256: &str) -> Result<Vec<u8>, BlobError>;
    /// Whether a blob of that name is stored (its bytes are not checked).
    fn contains(&self, sha256: &str) -> Result<bool, BlobError>;
    /// Removes a blob (a missing one is not an error).
    fn remove(&self, sha256: &str) -> Result<(), BlobError>;
    /// The names of the stored blobs last written before `before`, with their size (a sweep's candidates:
    /// recent blobs may belong to a feed still in flight).
    fn list_older_than(
        &self,
        before: std::time::SystemTime,
    ) -> Result<Vec<(String, u64)>, BlobError>;
}

/// Where blobs go: a local directory, or an S3-compatible bucket.
#[derive(Debug, Clone)]
pub enum BlobConfig {
    Local(PathBuf),
    S3(crate::s3::S3Config),
}

/// Opens the blob store a configuration names (an S3 bucket is checked to answer with its key).
pub fn open(cfg: &BlobConfig) -> Result<std::sync::Arc<dyn BlobStore>, BlobError> {
    Ok(match cfg {
        BlobConfig::Local(dir) => std::sync::Arc::new(LocalBlobs::open(dir)?),
        BlobConfig::S3(c) => std::sync::Arc::new(crate::s3::S3Blobs::open(c.clone())?),
    })
}

/// The hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Checks that `name` is a blob name: 64 lowercase hex digits (nothing that could walk out of the
/// directory).
pub(crate) fn check_name(name: &str) -> Result<(), BlobError> {
    if name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(BlobError::InvalidName(name.chars().take(80).collect()))
    }
}

/// Blobs in a local directory: `<root>/<2 hex>/<2 hex>/<64 hex>`, temporary files in `<root>/tmp`.
pub struct LocalBlobs {
    root: PathBuf,
    max_size: u64,
    /// Concurrent puts share one flush of the file system (`syncfs`) instead of two `fsync`s each (the file,
    /// then its directory).
    sync: GroupFlush,
    /// One bit per `<2 hex>/<2 hex>` directory known to exist (created or used by this process): a put into a
    /// known directory neither creates it nor fails a rename first.
    known_dirs: Box<[AtomicU64]>,
}

/// Flushes everything written under `root` (file contents, new directory entries) to stable storage.
#[cfg(target_os = "linux")]
fn flush(root: &Path) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let d =
        fs::File::open(root).map_err(|e| format!("ouverture du répertoire des documents : {e}"))?;
    // SAFETY: `syncfs` only reads the descriptor, which `d` keeps open for the call.
    if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!("synchronisation des documents : {e}"));
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn flush(_root: &Path) -> Result<(), String> {
    // Elsewhere each put flushes its own file and directory (see `put`).
    Ok(())
}

/// Default largest blob accepted (the DMP's own limit on a document is lower; this guards the store).
pub const DEFAULT_MAX_BLOB: u64 = 256 * 1024 * 1024;

impl LocalBlobs {
    /// Opens (creating it if needed) the blob directory `root`, and removes temporary files a crash left.
    pub fn open(root: &Path) -> Result<Self, BlobError> {
        let tmp = root.join("tmp");
        fs::create_dir_all(&tmp).map_err(|e| io("création du répertoire des documents", e))?;
        for entry in fs::read_dir(&tmp).map_err(|e| io("lecture du répertoire temporaire", e))? {
            let entry = entry.map_err(|e| io("lecture du répertoire temporaire", e))?;
            let _ = fs::remove_file(entry.path());
        }
        Ok(LocalBlobs {
            root: root.to_path_buf(),
            max_size: DEFAULT_MAX_BLOB,
            sync: GroupFlush::default(),
            known_dirs: (0..1024).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// Sets the largest blob accepted.
    pub fn with_max_size(mut self, max: u64) -> Self {
        self.max_size = max;
        self
    }

    /// Returns once everything written so far under the root is on disk (one flush shared by concurrent puts).
    fn durable(&self) -> Result<(), BlobError> {
        let ticket = self.sync.ticket();
        self.sync
            .wait(ticket, || flush(&self.root))
            .map_err(BlobError::Io)
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.root.join(&name[0..2]).join(&name[2..4]).join(name)
    }
}

/// The word and bit of `known_dirs` for the directory of the blob `name` (its first four hex digits).
fn dir_bit(name: &str) -> Option<(usize, u64)> {
    let n = usize::from_str_radix(name.get(0..4)?, 16).ok()?;
    Some((n / 64, 1u64 << (n % 64)))
}

/// `O_DIRECT` transfers start and end on this boundary (the largest logical block size of common disks).
#[cfg(target_os = "linux")]
const DIRECT_ALIGN: usize = 4096;
/// Blobs smaller than this go through the page cache: a few pages, nothing to save.
#[cfg(target_os = "linux")]
const DIRECT_MIN: usize = 32 * 1024;

/// Writes `bytes` into the new file `path` (durable once the blob directory is flushed).
///
/// On Linux a blob's whole blocks bypass the page cache (`O_DIRECT`, from an aligned copy), and only the last
/// partial block goes through it: a feed's document is not copied into the cache, nor written back from it by
/// the shared flush, and it does not push database pages out of memory. Its first read comes from the disk.
/// A file system without `O_DIRECT` (tmpfs, some network file systems) gets an ordinary write.
#[cfg(target_os = "linux")]
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let head = bytes.len() / DIRECT_ALIGN * DIRECT_ALIGN;
    if head >= DIRECT_MIN {
        match fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(mut f) => {
                let mut buf: Vec<u8> = Vec::with_capacity(head + DIRECT_ALIGN);
                let pad = buf.as_ptr().align_offset(DIRECT_ALIGN);
                buf.resize(pad, 0);
                buf.extend_from_slice(&bytes[..head]);
                f.write_all(&buf[pad..])?;
                drop(f);
                if head < bytes.len() {
                    fs::OpenOptions::new()
                        .append(true)
                        .open(path)?
                        .write_all(&bytes[head..])?;
                }
                return Ok(());
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    fs::File::create(path)?.write_all(bytes)
}

/// Writes `bytes` into the new file `path`, flushed (elsewhere than Linux each put flushes its own file).
#[cfg(not(target_os = "linux"))]
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Flushes a directory's entries (a rename is durable only once its directory is).
fn sync_dir(dir: &Path) -> Result<(), BlobError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("synchronisation du répertoire", e))
}

/// The name and size `bytes` will be stored under, if they are not larger than `max`.
pub(crate) fn name_of(bytes: &[u8], max: u64) -> Result<BlobRef, BlobError> {
    let size = bytes.len() as u64;
    if size > max {
        return Err(BlobError::TooLarge { size, max });
    }
    Ok(BlobRef {
        sha256: sha256_hex(bytes),
        size,
    })
}

impl BlobStore for LocalBlobs {
    fn put(&self, bytes: &[u8]) -> Result<BlobRef, BlobError> {
        let blob = name_of(bytes, self.max_size)?;
        let (name, size) = (blob.sha256.clone(), blob.size);
        let path = self.path_of(&name);
        // Already stored: same name, same bytes (a damaged copy is replaced below) — durable once a flush has
        // covered it: a concurrent put of the same bytes may not have seen its own yet.
        if let Ok(meta) = fs::metadata(&path)
            && meta.len() == size
            && fs::read(&path).is_ok_and(|b| sha256_hex(&b) == name)
        {
            if cfg!(target_os = "linux") {
                self.durable()?;
            }
            return Ok(blob);
        }
        let dir = path
            .parent()
            .ok_or_else(|| BlobError::Io("chemin de document sans parent".into()))?;
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{name}.{}", uuid::Uuid::new_v4()));
        // The blob's directory is created once per process, not before each put (a `mkdir` there cost ~2 % of a
        // DMP feed's CPU); one removed behind our back is created again when the rename says it is missing.
        let bit = dir_bit(&name);
        let known = bit.is_some_and(|(w, m)| self.known_dirs[w].load(Ordering::Relaxed) & m != 0);
        let written = (|| {
            write_new(&tmp, bytes)?;
            if !known {
                fs::create_dir_all(dir)?;
            }
            match fs::rename(&tmp, &path) {
                Err(e) if known && e.kind() == std::io::ErrorKind::NotFound => {
                    fs::create_dir_all(dir)?;
                    fs::rename(&tmp, &path)
                }
                done => done,
            }
        })();
        if written.is_ok()
            && let Some((w, m)) = bit
        {
            self.known_dirs[w].fetch_or(m, Ordering::Relaxed);
        }
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io("écriture du document", e));
        }
        if cfg!(target_os = "linux") {
            // The file, its rename and any directory created for it: one shared flush.
            self.durable()?;
        } else {
            sync_dir(dir)?;
        }
        Ok(blob)
    }

    fn get(&self, sha256: &str) -> Result<Vec<u8>, BlobError> {
        check_name(sha256)?;
        let bytes = match fs::read(self.path_of(sha256)) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(BlobError::NotFound(sha256.to_string()));
            }
            Err(e) => return Err(io("lecture du document", e)),
        };
        let found = sha256_hex(&bytes);
        if found != sha256 {
            tracing::error!(blob = sha256, "document altéré dans le stockage");
            return Err(BlobError::Corrupt {
                sha256: sha256.to_string(),
                found,
            });
        }
        Ok(bytes)
    }

    fn contains(&self, sha256: &str) -> Result<bool, BlobError> {
        check_name(sha256)?;
        Ok(self.path_of(sha256).is_file())
    }

    fn remove(&self, sha256: &str) -> Result<(), BlobError> {
        check_name(sha256)?;
        match fs::remove_file(self.path_of(sha256)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("suppression du document", e)),
        }
    }

    fn list_older_than(
        &self,
        before: std::time::SystemTime,
    ) -> Result<Vec<(String, u64)>, BlobError> {
        let mut out = Vec::new();
        let read =
            |d: &Path| fs::read_dir(d).map_err(|e| io("lecture du répertoire des documents", e));
        for a in read(&self.root)?.flatten() {
            let an = a.file_name().to_string_lossy().to_string();
            if an.len() != 2 || !a.path().is_dir() {
                continue;
            }
            for b in read(&a.path())?.flatten() {
                if !b.path().is_dir() {
                    continue;
                }
                for f in read(&b.path())?.flatten() {
                    let name = f.file_name().to_string_lossy().to_string();
                    if check_name(&name).is_err() {
                        continue;
                    }
                    let Ok(meta) = f.metadata() else { continue };
                    if meta.modified().is_ok_and(|m| m < before) {
                        out.push((name, meta.len()));
                    }
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, LocalBlobs) {
        let dir = tempfile::tempdir().expect("répertoire temporaire");
        let blobs = LocalBlobs::open(dir.path()).expect("ouverture");
        (dir, blobs)
    }

    const PDF: &[u8] = b"%PDF-1.4 bonjour";
    /// `printf '%%PDF-1.4 bonjour' | sha256sum`
    const PDF_SHA256: &str = "f9e1e48645b08e5d91fb7fefe2cc847a8d83717ba7bf76951e2bd8f2b2fa6646";

    #[test]
    fn round_trip_named_by_content() {
        let (_d, b) = store();
        let r = b.put(PDF).expect("put");
        assert_eq!(r.sha256, PDF_SHA256);
        assert_eq!(r.size, 16);
        assert_eq!(b.get(PDF_SHA256).expect("get"), PDF);
        assert!(b.contains(PDF_SHA256).expect("contains"));
        // Same bytes again: same name, one copy.
        assert_eq!(b.put(PDF).expect("put again"), r);
        b.remove(PDF_SHA256).expect("remove");
        assert!(matches!(b.get(PDF_SHA256), Err(BlobError::NotFound(_))));
        b.remove(PDF_SHA256).expect("remove twice");
    }

    /// A blob's directories are created with its first put, and again when an operator removed them.
    #[test]
    fn missing_directories_are_created_at_the_put() {
        let (d, b) = store();
        b.put(PDF).expect("first put of the prefix");
        let top = d.path().join(&PDF_SHA256[0..2]);
        let other: &[u8] = b"%PDF-1.4 autre";
        let other_name = sha256_hex(other);
        std::fs::remove_dir_all(&top).expect("suppression du répertoire");
        b.put(PDF).expect("put after the directory was removed");
        assert_eq!(b.get(PDF_SHA256).expect("get"), PDF);
        b.put(other).expect("another prefix");
        assert_eq!(b.get(&other_name).expect("get"), other);
        // Nothing left behind in the temporary directory.
        assert_eq!(
            std::fs::read_dir(d.path().join("tmp"))
                .expect("tmp")
                .count(),
            0
        );
    }

    #[test]
    fn altered_bytes_are_reported_never_served_and_repaired_by_a_new_put() {
        let (d, b) = store();
        b.put(PDF).expect("put");
        let path = d
            .path()
            .join(&PDF_SHA256[0..2])
            .join(&PDF_SHA256[2..4])
            .join(PDF_SHA256);
        let mut bytes = std::fs::read(&path).expect("lecture");
        bytes[3] ^= 1;
        std::fs::write(&path, &bytes).expect("altération");
        assert!(matches!(b.get(PDF_SHA256), Err(BlobError::Corrupt { .. })));
        // Storing the document again replaces the damaged copy.
        b.put(PDF).expect("put again");
        assert_eq!(b.get(PDF_SHA256).expect("get"), PDF);
    }

    #[test]
    fn names_that_are_not_hashes_are_refused() {
        let (_d, b) = store();
        for bad in [
            "../../etc/passwd",
            "",
            "ABCDEF",
            &"g".repeat(64),
            &PDF_SHA256.to_uppercase(),
        ] {
            assert!(
                matches!(b.get(bad), Err(BlobError::InvalidName(_))),
                "{bad}"
            );
            assert!(
                matches!(b.contains(bad), Err(BlobError::InvalidName(_))),
                "{bad}"
            );
            assert!(
                matches!(b.remove(bad), Err(BlobError::InvalidName(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn size_limit_and_leftover_temporary_files() {
        let dir = tempfile::tempdir().expect("répertoire temporaire");
        let b = LocalBlobs::open(dir.path())
            .expect("ouverture")
            .with_max_size(10);
        assert!(matches!(
            b.put(PDF),
            Err(BlobError::TooLarge { size: 16, max: 10 })
        ));
        assert!(!b.contains(PDF_SHA256).expect("contains"));
        // A crash mid-put leaves a temporary file: the next open removes it.
        std::fs::write(dir.path().join("tmp").join("partial"), b"%PDF-1.").expect("écriture");
        drop(b);
        LocalBlobs::open(dir.path()).expect("réouverture");
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp"))
                .expect("tmp")
                .count(),
            0
        );
    }

    #[test]
    fn sizes_around_the_direct_write_boundaries() {
        let (_d, b) = store();
        // Below the direct threshold, exact multiples of the block, one byte either side, a PDF-sized blob.
        for size in [
            0,
            1,
            4095,
            4096,
            32767,
            32768,
            32769,
            65536,
            100_000,
            1 << 20,
            (1 << 20) + 17,
        ] {
            let bytes: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
            let r = b.put(&bytes).expect("put");
            assert_eq!(r.size, size as u64);
            assert_eq!(b.get(&r.sha256).expect("get"), bytes, "{size} octets");
        }
    }

    #[test]
    fn concurrent_puts_of_the_same_document() {
        let (_d, b) = store();
        let b = std::sync::Arc::new(b);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || b.put(PDF).expect("put"))
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().expect("thread").sha256, PDF_SHA256);
        }
        assert_eq!(b.get(PDF_SHA256).expect("get"), PDF);
    }
}
