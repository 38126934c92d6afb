//! The node's identity on disk: `meta.properties` in the data directory (cluster id and node
//! id, as Kafka keeps them) and an exclusive lock so two processes never share a directory.

use std::fs::File;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("cannot use data directory {path}: {why}")]
    Io { path: PathBuf, why: String },
    #[error("data directory {0} is in use by another sluice process")]
    Locked(PathBuf),
    #[error("{path} belongs to node.id {found}, but this broker is node.id {configured}")]
    NodeIdMismatch { path: PathBuf, found: i32, configured: i32 },
    #[error("{path} is corrupt: {why}")]
    Corrupt { path: PathBuf, why: String },
}

/// Holds the data directory's lock for as long as it lives.
#[derive(Debug)]
pub struct DataDirLock {
    _dir: File,
    _file: File,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> MetaError + '_ {
    move |e| MetaError::Io {
        path: path.to_path_buf(),
        why: e.to_string(),
    }
}

/// Creates the data directory if need be and locks it.
///
/// The lock is an exclusive `flock` on the directory itself, which cannot be unlinked while it
/// holds files, so deleting `<data dir>/.lock` (or anything in the directory) under a running
/// broker does not let a second one in. `.lock` is locked as well, for older binaries that
/// only know that one.
pub fn lock_data_dir(dir: &Path) -> Result<DataDirLock, MetaError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let dir_file = File::open(dir).map_err(io(dir))?;
    let locked = |f: &File, path: &Path| match f.try_lock() {
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => Err(MetaError::Locked(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(io(path)(e)),
    };
    locked(&dir_file, dir)?;
    let path = dir.join(".lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    locked(&file, &path)?;
    Ok(DataDirLock {
        _dir: dir_file,
        _file: file,
    })
}

/// Reads the cluster id from `meta.properties` (`None`: no file, a new data directory),
/// checking that it was written for `node_id`.
pub fn read(fs: &dyn storage::Fs, dir: &Path, node_id: i32) -> Result<Option<String>, MetaError> {
    let path = dir.join("meta.properties");
    match fs.read_all(&path).map(|b| String::from_utf8_lossy(&b).into_owned()) {
        Ok(text) => {
            let mut cluster_id = None;
            let mut found_node = None;
            for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
                if let Some(v) = line.strip_prefix("cluster.id=") {
                    cluster_id = Some(v.to_string());
                } else if let Some(v) = line.strip_prefix("node.id=") {
                    found_node = v.parse::<i32>().ok();
                }
            }
            let corrupt = |why: &str| MetaError::Corrupt {
                path: path.clone(),
                why: why.to_string(),
            };
            let cluster_id = cluster_id
                .filter(|c| !c.is_empty())
                .ok_or_else(|| corrupt("no cluster.id"))?;
            let found = found_node.ok_or_else(|| corrupt("no valid node.id"))?;
            if found != node_id {
                return Err(MetaError::NodeIdMismatch {
                    path,
                    found,
                    configured: node_id,
                });
            }
            Ok(Some(cluster_id))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

/// Writes `meta.properties` for `node_id` in `cluster_id` (atomically: temp file, fsync,
/// rename, fsync dir).
pub fn write(fs: &dyn storage::Fs, dir: &Path, node_id: i32, cluster_id: &str) -> Result<(), MetaError> {
    let text = format!(
        "# Written by sluice on first start; do not edit.\nversion=1\ncluster.id={cluster_id}\nnode.id={node_id}\n"
    );
    write_atomically(fs, &dir.join("meta.properties"), text.as_bytes())
}

/// Reads the cluster id from `meta.properties`, creating the file (with `fresh_id`, or a new
/// random cluster id) on first start.
pub fn load_or_create(
    fs: &dyn storage::Fs,
    dir: &Path,
    node_id: i32,
    random: &crate::random::Random,
    fresh_id: Option<&str>,
) -> Result<String, MetaError> {
    match read(fs, dir, node_id)? {
        Some(id) => Ok(id),
        None => {
            let cluster_id = fresh_id.map_or_else(|| new_cluster_id(random), str::to_string);
            write(fs, dir, node_id, &cluster_id)?;
            Ok(cluster_id)
        }
    }
}

/// A new random cluster id, in Kafka's form: 16 random bytes in URL-safe base64 without
/// padding (22 characters).
pub fn new_cluster_id(random: &crate::random::Random) -> String {
    base64_url(&random.bytes16())
}

/// The cluster id of a cluster whose metadata log holds none: one bootstrapped by Sluice
/// before the first leader wrote its id into the log, when every node derived it from the
/// voters (`controller.quorum.voters` as configured, sorted). Kept so such a cluster's nodes
/// still agree.
pub fn cluster_id_for_voters(voters: &std::collections::BTreeMap<i32, String>) -> String {
    let text: Vec<String> = voters.iter().map(|(id, addr)| format!("{id}@{addr}")).collect();
    let text = text.join(",");
    let fnv = |seed: u64| -> u64 {
        text.bytes()
            .fold(seed, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
    };
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&fnv(0xcbf2_9ce4_8422_2325).to_be_bytes());
    bytes[8..].copy_from_slice(&fnv(0x8422_2325_cbf2_9ce4).to_be_bytes());
    base64_url(&bytes)
}

/// Writes `path` so that a crash leaves either the old file or the new one, never a mix.
pub fn write_atomically(fs: &dyn storage::Fs, path: &Path, data: &[u8]) -> Result<(), MetaError> {
    fs.write_atomically(path, data).map_err(io(path))
}

/// Written once every log is synced at a clean shutdown; its content names the on-disk index
/// format, so a marker from another format is not trusted.
const CLEAN_SHUTDOWN: &str = ".clean-shutdown";
const CLEAN_SHUTDOWN_FORMAT: &str = "sluice-index-v3\n";

/// Whether the last run ended with a clean shutdown. The marker is removed (durably) before
/// anything else happens, so a crash from here on is never mistaken for a clean stop.
pub fn take_clean_shutdown_marker(fs: &dyn storage::Fs, dir: &Path) -> Result<bool, MetaError> {
    let path = dir.join(CLEAN_SHUTDOWN);
    let clean = match fs.read_all(&path) {
        Ok(text) => text == CLEAN_SHUTDOWN_FORMAT.as_bytes(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io(&path)(e)),
    };
    fs.remove(&path).map_err(io(&path))?;
    fs.sync_dir(dir).map_err(io(dir))?;
    Ok(clean)
}

/// Marks a clean shutdown: call only after every log was synced.
pub fn write_clean_shutdown_marker(fs: &dyn storage::Fs, dir: &Path) -> Result<(), MetaError> {
    write_atomically(fs, &dir.join(CLEAN_SHUTDOWN), CLEAN_SHUTDOWN_FORMAT.as_bytes())
}

/// The epoch of this broker's last registration and the machine's boot id then: read at the
/// next start to tell the controller whether its data is intact (`server.rs`).
const BROKER_EPOCH: &str = ".broker-epoch";

/// This machine's boot id (Linux: changes with every boot; `None` where there is none).
pub fn boot_id() -> Option<String> {
    let id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_string())
}

/// The last registration's epoch and boot id (`None`: never registered, or an unreadable
/// file, which counts the same: as after an unclean shutdown).
pub fn read_broker_epoch(fs: &dyn storage::Fs, dir: &Path) -> Result<Option<(i64, Option<String>)>, MetaError> {
    let path = dir.join(BROKER_EPOCH);
    let text = match fs.read_all(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path)(e)),
    };
    let text = String::from_utf8_lossy(&text);
    let mut fields = text.split_whitespace();
    let Some(Ok(epoch)) = fields.next().map(str::parse::<i64>) else {
        return Ok(None);
    };
    Ok(Some((epoch, fields.next().map(String::from))))
}

pub fn write_broker_epoch(fs: &dyn storage::Fs, dir: &Path, epoch: i64, boot: Option<&str>) -> Result<(), MetaError> {
    let text = format!("{epoch} {}\n", boot.unwrap_or("-"));
    write_atomically(fs, &dir.join(BROKER_EPOCH), text.as_bytes())
}

/// 16 random bytes (for cluster and topic ids). `RandomState` is seeded from the OS's random
/// source; two of them, mixed with the time, give 16 bytes.
pub fn random_id() -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    let mut bytes = [0u8; 16];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    bytes
}

pub fn base64_url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_look_like_kafkas_and_differ() {
        let random = crate::random::Random::from_os();
        let a = new_cluster_id(&random);
        assert_eq!(a.len(), 22);
        assert_ne!(a, new_cluster_id(&random));
        assert_eq!(base64_url(b"\xfb\xff"), "-_8");
    }

    #[test]
    fn the_cluster_id_is_stable_and_the_node_id_checked() {
        let dir = std::env::temp_dir().join(format!("sluice-meta-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let lock = lock_data_dir(&dir).unwrap();
        assert!(matches!(lock_data_dir(&dir), Err(MetaError::Locked(_))));
        let fs = storage::RealFs::default();
        let r = crate::random::Random::seeded(1);
        let id = load_or_create(&fs, &dir, 3, &r, None).unwrap();
        assert_eq!(load_or_create(&fs, &dir, 3, &r, None).unwrap(), id);
        assert!(matches!(
            load_or_create(&fs, &dir, 4, &r, None),
            Err(MetaError::NodeIdMismatch { found: 3, .. })
        ));
        // Deleting the lock file does not free the directory.
        std::fs::remove_file(dir.join(".lock")).unwrap();
        assert!(matches!(lock_data_dir(&dir), Err(MetaError::Locked(_))));
        drop(lock);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
