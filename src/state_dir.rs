//! Files in `state_dir`, opened so that whoever else may write that folder
//! (it is shared with user `dovecot`: mode 2770) cannot turn them against us.
//!
//! - nothing is opened through a symbolic link (`O_NOFOLLOW`), nor waits on a
//!   FIFO (`O_NONBLOCK`); what is opened must be a regular file (`fstat`);
//! - new content goes to a temporary file that did not exist before
//!   (`O_CREAT | O_EXCL`, a random name), renamed over the old one, so a
//!   planted temporary name or link is never written through;
//! - root refuses a `state_dir` that other users may write, or that a user
//!   other than root owns ([`check_for_root`]).

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Open `dir/name` for reading (and writing, creating it when `create`),
/// refusing links, FIFOs and anything but a regular file.
pub fn open_regular(dir: &Path, name: &str, create: bool) -> std::io::Result<File> {
    let f = File::options()
        .read(true)
        .write(create)
        .create(create)
        .truncate(false)
        .mode(0o660)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(dir.join(name))?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other(format!(
            "{} is not a regular file",
            dir.join(name).display()
        )));
    }
    Ok(f)
}

/// The whole of `dir/name` when it is a regular file of at most `max` bytes.
pub fn read_small(dir: &Path, name: &str, max: u64) -> Option<Vec<u8>> {
    let f = open_regular(dir, name, false).ok()?;
    let mut buf = Vec::new();
    f.take(max + 1).read_to_end(&mut buf).ok()?;
    (buf.len() as u64 <= max).then_some(buf)
}

/// Replace `dir/name` with `bytes`: written to a new temporary file with a
/// random name (created exclusively, never through a link), then renamed.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = format!(".{name}.{:016x}.tmp", random_u64());
    let path = dir.join(&tmp);
    let written = File::options()
        .write(true)
        .create_new(true)
        .mode(0o660)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .and_then(|mut f| f.write_all(bytes));
    let renamed = written.and_then(|()| std::fs::rename(&path, dir.join(name)));
    if renamed.is_err() {
        let _ = std::fs::remove_file(&path);
    }
    renamed
}

/// A random number from the standard library's per-process hash keys (seeded
/// from the OS), enough for a name nobody can guess in advance.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// For a command running as root: refuse a `state_dir` that other users may
/// write, or that belongs to a user other than root (either could plant files
/// there for root to act on). Ok when we are not root or the folder does not
/// exist yet.
pub fn check_for_root(dir: &Path) -> Result<(), String> {
    if crate::trusted_file::current_uid() != 0 {
        return Ok(());
    }
    let Ok(meta) = std::fs::metadata(dir) else {
        return Ok(());
    };
    judge_for_root(meta.uid(), meta.mode(), dir)
}

fn judge_for_root(owner: u32, mode: u32, dir: &Path) -> Result<(), String> {
    let d = dir.display();
    if mode & 0o002 != 0 {
        return Err(format!(
            "state_dir {d} is writable by every user (mode {:04o}); fix with: chmod o-w {d}",
            mode & 0o7777
        ));
    }
    if owner != 0 {
        return Err(format!(
            "state_dir {d} belongs to uid {owner}, not root, so root will not use it; \
             fix with: chown root {d} (the Debian package makes it root:dovecot 2770)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_refuses_foreign_or_open_folders() {
        let d = Path::new("/run/x");
        assert!(judge_for_root(0, 0o42770, d).is_ok());
        assert!(judge_for_root(0, 0o40700, d).is_ok());
        let e = judge_for_root(0, 0o41777, d).unwrap_err();
        assert!(e.contains("chmod o-w /run/x"), "{e}");
        let e = judge_for_root(110, 0o42770, d).unwrap_err();
        assert!(e.contains("chown root /run/x"), "{e}");
    }

    #[test]
    fn links_fifos_and_planted_temporaries_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let victim = d.join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        // A link under the file's name is neither read nor written through.
        std::os::unix::fs::symlink(&victim, d.join("state.json")).unwrap();
        assert!(read_small(d, "state.json", 100).is_none());
        assert!(open_regular(d, "state.json", true).is_err());
        // The atomic write replaces the link itself, never the target.
        write_atomic(d, "state.json", b"{}").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(read_small(d, "state.json", 100).unwrap(), b"{}");
        // A FIFO is refused at once instead of blocking.
        let fifo = d.join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        assert!(open_regular(d, "fifo", true).is_err());
        assert!(read_small(d, "fifo", 100).is_none());
        // Oversized files are not read.
        std::fs::write(d.join("big"), vec![b'x'; 200]).unwrap();
        assert!(read_small(d, "big", 100).is_none());
        // No temporary file is left behind.
        let left: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(left.is_empty());
    }
}
