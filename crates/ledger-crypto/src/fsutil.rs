//! Private key files: created 0600, written atomically, refused when readable by others.

use crate::error::CryptoError;
use crate::random_bytes;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;
use zeroize::Zeroizing;

/// Creates `dir` (0700 on Unix) if it does not exist yet.
pub fn ensure_dir(dir: &Path) -> Result<(), CryptoError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| CryptoError::io("create directory", dir, e))
}

/// Reads a private file, or `None` if it does not exist.
///
/// The mode is checked on the opened handle, not the path, so the file that is
/// checked is the file that is read.
pub fn read_private(
    path: &Path,
    max_len_bytes: u64,
) -> Result<Option<Zeroizing<Vec<u8>>>, CryptoError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CryptoError::io("open", path, e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| CryptoError::io("stat", path, e))?;
    let mode = file_mode(&meta);
    if !meta.is_file() || mode & 0o077 != 0 {
        return Err(CryptoError::KeyFilePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut bytes = Zeroizing::new(Vec::new());
    // One byte past the limit tells "too long" apart from "exactly the limit".
    file.take(max_len_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| CryptoError::io("read", path, e))?;
    if bytes.len() as u64 > max_len_bytes {
        return Err(CryptoError::io(
            "read",
            path,
            io::Error::new(io::ErrorKind::InvalidData, "file too large"),
        ));
    }
    Ok(Some(bytes))
}

/// Creates `dir/name` with `bytes` unless it exists; returns whether it was created.
///
/// The content goes to a temporary file first and is hard-linked into place, so a
/// crash or a concurrent reader never sees a half-written key file, and of two
/// processes racing to create it exactly one wins.
pub fn create_private(dir: &Path, name: &str, bytes: &[u8]) -> Result<bool, CryptoError> {
    let target = dir.join(name);
    let tmp = write_temp(dir, name, bytes, 0o600)?;
    let linked = fs::hard_link(&tmp, &target);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            sync_dir(dir)?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(CryptoError::io("link", &target, e)),
    }
}

/// Replaces `dir/name` with `bytes` atomically (temporary file, fsync, rename, fsync dir), mode 0600.
pub fn replace_private(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), CryptoError> {
    replace_file(dir, name, bytes, 0o600)
}

/// Replaces `dir/name` with `bytes` atomically, created with `mode` (Unix).
pub fn replace_file(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> Result<(), CryptoError> {
    let target = dir.join(name);
    let tmp = write_temp(dir, name, bytes, mode)?;
    if let Err(e) = fs::rename(&tmp, &target) {
        let _ = fs::remove_file(&tmp);
        return Err(CryptoError::io("rename", &target, e));
    }
    sync_dir(dir)
}

fn write_temp(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    mode: u32,
) -> Result<std::path::PathBuf, CryptoError> {
    let suffix: [u8; 8] = random_bytes();
    let tmp = dir.join(format!(".{name}.tmp-{}", hex::encode(suffix)));
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options
        .open(&tmp)
        .map_err(|e| CryptoError::io("create", &tmp, e))?;
    let written = file
        .write_all(bytes)
        .map_err(|e| CryptoError::io("write", &tmp, e))
        .and_then(|()| {
            file.sync_all()
                .map_err(|e| CryptoError::io("sync", &tmp, e))
        });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

/// Makes a new or renamed directory entry durable; without it a crash can lose the file.
fn sync_dir(dir: &Path) -> Result<(), CryptoError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| CryptoError::io("sync directory", dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(unix)]
fn file_mode(meta: &fs::Metadata) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777
}

#[cfg(not(unix))]
fn file_mode(_meta: &fs::Metadata) -> u32 {
    0o600
}
