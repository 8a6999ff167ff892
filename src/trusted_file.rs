//! Reading the files the admin trusts us with: the config file and the
//! `*_file` secrets it names.
//!
//! A file is opened once and every check is made on the open descriptor
//! (`fstat`), so the file that was checked is the file that is read. It must
//! be a regular file (a FIFO or a device is refused without blocking: the
//! open is non-blocking), owned by root or by the user we run as, writable by
//! nobody else, and — when it holds a secret — readable by nobody else but
//! its group. A config that group `dovecot` may write would let any process
//! running as `dovecot` point `ldap.hosts` at its own server and accept every
//! password; so group write is refused like other write.

use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use zeroize::Zeroizing;

/// Largest file read (the config and secrets are small; a huge file is a mistake).
const MAX_BYTES: u64 = 1 << 20;

/// Why a file was refused; the text names the command that fixes it.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("not found")]
    NotFound,
    #[error("cannot be read by uid {uid}")]
    PermissionDenied { uid: u32 },
    #[error("cannot be read: {0}")]
    Io(std::io::Error),
    #[error("is not a regular file; point the setting at a plain file")]
    NotRegular,
    #[error(
        "is owned by uid {owner}, neither root nor the uid this runs as ({uid}); \
         fix with: chown root {path}"
    )]
    Owner { owner: u32, uid: u32, path: String },
    #[error(
        "is writable by {who} (mode {mode:04o}), so anyone in it could change what this \
         program trusts; fix with: chmod go-w {path}"
    )]
    Writable {
        who: &'static str,
        mode: u32,
        path: String,
    },
    #[error(
        "holds a password and is readable by every user (mode {mode:04o}); fix with: \
         chmod o-r {path} (and chgrp dovecot {path} so Dovecot can still read it)"
    )]
    WorldReadable { mode: u32, path: String },
    #[error("is larger than {MAX_BYTES} bytes")]
    TooLarge,
    #[error("is not UTF-8 text")]
    NotUtf8,
}

/// The effective uid of this process (the owner of `/proc/self`).
pub fn current_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}

/// A file's text, read after its checks passed, with what is needed to judge
/// later whether it may hold a password.
pub struct Trusted {
    pub text: Zeroizing<String>,
    mode: u32,
    path: String,
}

impl Trusted {
    /// Refuse the file if other users may read it (for a file that turned out
    /// to hold a password). Judged on the mode of the descriptor that was read.
    pub fn require_private(&self) -> Result<(), TrustError> {
        if self.mode & 0o004 != 0 {
            return Err(TrustError::WorldReadable {
                mode: self.mode & 0o7777,
                path: self.path.clone(),
            });
        }
        Ok(())
    }
}

/// Open `path`, check the open file, and read it as text. `secret` says the
/// content is a password: then other-readable is refused too (see also
/// [`Trusted::require_private`] for a file whose content decides).
pub fn read_trusted(path: &Path, secret: bool) -> Result<Trusted, TrustError> {
    let file = File::options()
        .read(true)
        // A FIFO planted under the name must not hang us; std adds O_CLOEXEC.
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => TrustError::NotFound,
            std::io::ErrorKind::PermissionDenied => {
                TrustError::PermissionDenied { uid: current_uid() }
            }
            _ => TrustError::Io(e),
        })?;
    let meta = file.metadata().map_err(TrustError::Io)?;
    check(&meta, path, secret, current_uid())?;
    if meta.len() > MAX_BYTES {
        return Err(TrustError::TooLarge);
    }
    // Capacity reserved up front: the buffer never reallocates, so no copy
    // of a secret is left behind in a freed allocation.
    let mut bytes = Zeroizing::new(Vec::with_capacity(meta.len() as usize + 1));
    (&file)
        .take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(TrustError::Io)?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(TrustError::TooLarge);
    }
    match std::str::from_utf8(&bytes) {
        Ok(text) => Ok(Trusted {
            text: Zeroizing::new(text.to_owned()),
            mode: meta.mode(),
            path: path.display().to_string(),
        }),
        Err(_) => Err(TrustError::NotUtf8),
    }
}

/// The rules, on an already opened file's metadata (pure: unit-tested).
fn check(meta: &Metadata, path: &Path, secret: bool, uid: u32) -> Result<(), TrustError> {
    check_mode(
        meta.file_type().is_file(),
        meta.uid(),
        meta.mode(),
        path,
        secret,
        uid,
    )
}

fn check_mode(
    regular: bool,
    owner: u32,
    mode: u32,
    path: &Path,
    secret: bool,
    uid: u32,
) -> Result<(), TrustError> {
    let shown = || path.display().to_string();
    if !regular {
        return Err(TrustError::NotRegular);
    }
    if owner != 0 && owner != uid {
        return Err(TrustError::Owner {
            owner,
            uid,
            path: shown(),
        });
    }
    let mode = mode & 0o7777;
    if mode & 0o022 != 0 {
        let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (true, true) => "its group and every user",
            (true, false) => "its group",
            _ => "every user",
        };
        return Err(TrustError::Writable {
            who,
            mode,
            path: shown(),
        });
    }
    if secret && mode & 0o004 != 0 {
        return Err(TrustError::WorldReadable {
            mode,
            path: shown(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(regular: bool, owner: u32, mode: u32, secret: bool, uid: u32) -> Result<(), String> {
        check_mode(regular, owner, mode, Path::new("/etc/x.toml"), secret, uid)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn table_of_modes_and_owners() {
        // (regular, owner, mode, secret, running uid) -> accepted?
        let cases: &[(bool, u32, u32, bool, u32, bool)] = &[
            (true, 0, 0o640, true, 110, true),   // Debian: root:dovecot 0640
            (true, 0, 0o600, true, 0, true),     // root's own
            (true, 110, 0o600, true, 110, true), // the running user's own
            (true, 0, 0o644, false, 110, true),  // no secret inside
            (true, 0, 0o644, true, 110, false),  // a secret readable by all
            (true, 0, 0o660, false, 110, false), // group-writable
            (true, 0, 0o620, false, 110, false), // group-writable, not readable
            (true, 0, 0o602, false, 110, false), // other-writable
            (true, 65534, 0o600, false, 110, false), // owned by nobody
            (false, 0, 0o600, false, 110, false), // a FIFO
        ];
        for &(regular, owner, mode, secret, uid, ok) in cases {
            let got = rule(regular, owner, mode, secret, uid);
            assert_eq!(
                got.is_ok(),
                ok,
                "{regular} {owner} {mode:o} {secret}: {got:?}"
            );
        }
    }

    #[test]
    fn refusals_name_the_fix() {
        let e = rule(true, 0, 0o660, false, 0).unwrap_err();
        assert!(
            e.contains("chmod go-w /etc/x.toml") && e.contains("its group"),
            "{e}"
        );
        let e = rule(true, 65534, 0o600, false, 0).unwrap_err();
        assert!(e.contains("chown root /etc/x.toml"), "{e}");
        let e = rule(true, 0, 0o644, true, 0).unwrap_err();
        assert!(e.contains("chmod o-r /etc/x.toml"), "{e}");
    }
}
