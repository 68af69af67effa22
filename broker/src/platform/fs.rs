//! File-system details of the durable store that differ between Unix and
//! Windows: a data directory and files only the broker's user may read,
//! and making a new directory entry durable.
//!
//! It does not choose where the store lives (that is [`super::dirs`]).

use std::io;
use std::path::Path;

/// Creates `dir` and its parents if missing; on Unix a directory it
/// creates is mode 0700 (only the broker's user may enter it). On Windows
/// the new directory inherits its parent's ACL.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Options that open a file for reading and writing, and create it (when
/// asked to) readable by the broker's user only: mode 0600 on Unix, not
/// 0644 as the process's umask would usually leave it. The store's files
/// hold every stored message and the history of who held what: a data
/// directory that others may enter (one made by an administrator, or by a
/// service manager as 0755) must not show them. On Windows a new file
/// inherits its directory's ACL.
pub fn private_file() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Takes every permission of others than the owner off the file at `path`
/// (Unix: mode 0600 at most), for a store file made by an older build
/// (0644 under the usual umask). Returns the mode it had when it changed
/// it; `None` when there was nothing to change (or no mode bits: Windows).
pub fn make_private(path: &Path) -> io::Result<Option<u32>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode() & 0o7777;
        if mode & 0o077 == 0 {
            return Ok(None);
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))?;
        Ok(Some(mode))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(None)
    }
}

/// Makes a new directory entry in `dir` durable (on Unix, by syncing the
/// directory; elsewhere the file system's own journal does). Best effort.
pub fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// The permission bits of `path` where the platform has them (Unix), for
/// tests that check a directory is private; `None` elsewhere.
pub fn mode_bits(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path)
            .ok()
            .map(|m| m.permissions().mode() & 0o777)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}
