//! File-system details of the durable store that differ between Unix and
//! Windows: a data directory only the broker's user may enter, and making
//! a new directory entry durable.
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
