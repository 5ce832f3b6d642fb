//! Read a bundle folder through one directory handle.
//!
//! The folder is opened once; every file is then opened relative to that handle (`openat`) with
//! `O_NOFOLLOW` on each component.  So a bundle republished by a rename while it is being opened is
//! read entirely from the old or entirely from the new folder, never a mix; symlinks are refused,
//! not followed; and the bytes whose sha256 is checked are the bytes that are used (issue 14.2).

use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// An open bundle folder.
pub struct Folder {
    root: PathBuf,
    #[cfg(unix)]
    dir: File,
}

/// One rule in Python, Rust and Go: '/'-separated parts, none empty, "." or ".."; no '\\'; not absolute.
pub fn is_plain(rel: &str) -> bool {
    !rel.starts_with('/')
        && !rel.contains('\\')
        && !rel.contains('\0')
        && rel.split('/').all(|part| !matches!(part, "" | "." | ".."))
        && Path::new(rel).components().all(|c| matches!(c, Component::Normal(_)))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Folder {
    pub fn open(root: &Path) -> Result<Folder> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            let dir = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
                .open(root)
                .map_err(|source| Error::Io { path: root.to_path_buf(), source })?;
            Ok(Folder { root: root.to_path_buf(), dir })
        }
        #[cfg(not(unix))]
        {
            std::fs::read_dir(root).map_err(|source| Error::Io { path: root.to_path_buf(), source })?;
            Ok(Folder { root: root.to_path_buf() })
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Open `rel` for reading: a plain relative path, no symlink anywhere on it, a regular file.
    pub fn open_file(&self, rel: &str) -> Result<File> {
        if !is_plain(rel) {
            return Err(Error::UnsafePath(rel.to_string()));
        }
        let file = self.open_nofollow(rel)?;
        let meta = file.metadata().map_err(|source| Error::Io { path: self.root.join(rel), source })?;
        if !meta.is_file() {
            return Err(Error::UnsafePath(rel.to_string()));
        }
        Ok(file)
    }

    #[cfg(unix)]
    fn open_nofollow(&self, rel: &str) -> Result<File> {
        use std::ffi::CString;
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let parts: Vec<&str> = rel.split('/').collect();
        let mut held: Option<OwnedFd> = None;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let name = CString::new(*part).map_err(|_| Error::UnsafePath(rel.to_string()))?;
            let at = held.as_ref().map_or(self.dir.as_raw_fd(), |fd| fd.as_raw_fd());
            // O_NONBLOCK: a FIFO planted in the bundle cannot block the open; it is refused as not a file.
            let flags = libc::O_RDONLY
                | libc::O_NOFOLLOW
                | libc::O_CLOEXEC
                | if last { libc::O_NONBLOCK } else { libc::O_DIRECTORY };
            // SAFETY: `at` is an open directory descriptor we own; `name` is NUL-terminated.
            let fd = unsafe { libc::openat(at, name.as_ptr(), flags) };
            if fd < 0 {
                let err = std::io::Error::last_os_error();
                return Err(match err.raw_os_error() {
                    Some(libc::ELOOP) => Error::Symlink(rel.to_string()),
                    Some(libc::ENOTDIR) if !last => Error::Symlink(rel.to_string()),
                    Some(libc::ENOENT) => Error::Missing { path: rel.to_string(), source: err },
                    _ => Error::Io { path: self.root.join(rel), source: err },
                });
            }
            // SAFETY: openat returned a fresh descriptor that nothing else owns.
            held = Some(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let fd = held.ok_or_else(|| Error::UnsafePath(rel.to_string()))?;
        let file = File::from(fd);
        // Back to blocking reads for a regular file.
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            let fl = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(file.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
        Ok(file)
    }

    #[cfg(not(unix))]
    fn open_nofollow(&self, rel: &str) -> Result<File> {
        let path = self.root.join(rel);
        let mut walked = self.root.clone();
        for part in rel.split('/') {
            walked.push(part);
            match std::fs::symlink_metadata(&walked) {
                Ok(m) if m.file_type().is_symlink() => return Err(Error::Symlink(rel.to_string())),
                Ok(_) => {}
                Err(source) => return Err(Error::Missing { path: rel.to_string(), source }),
            }
        }
        File::open(&path).map_err(|source| Error::Io { path, source })
    }

    /// Read a whole file that must not exceed `limit` bytes (checked on the open handle before reading).
    pub fn read_capped(&self, rel: &str, limit: u64) -> Result<Vec<u8>> {
        let file = self.open_file(rel)?;
        let io = |source| Error::Io { path: self.root.join(rel), source };
        let size = file.metadata().map_err(io)?.len();
        if size > limit {
            return Err(Error::TooLarge { what: rel.to_string(), size, limit });
        }
        let mut out = Vec::with_capacity(size as usize);
        file.take(limit + 1).read_to_end(&mut out).map_err(io)?;
        if out.len() as u64 > limit {
            return Err(Error::TooLarge { what: rel.to_string(), size: out.len() as u64, limit });
        }
        Ok(out)
    }

    /// Stream `rel` through sha256, reading at most `bytes + 1` bytes; on a match return the bytes
    /// when `keep` (what the session and golden checks then use), else an empty vector.
    pub fn read_verified(&self, rel: &str, bytes: u64, sha256: &str, keep: bool) -> Result<Vec<u8>> {
        let mut file = self.open_file(rel)?.take(bytes.saturating_add(1));
        let mut hasher = Sha256::new();
        let mut kept = Vec::with_capacity(if keep { bytes.min(1 << 30) as usize } else { 0 });
        let mut buf = vec![0u8; 1 << 16];
        let mut seen = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(|source| Error::Io { path: self.root.join(rel), source })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            if keep {
                kept.extend_from_slice(&buf[..n]);
            }
            seen += n as u64;
        }
        if seen != bytes || hex(&hasher.finalize()) != sha256 {
            return Err(Error::Checksum(rel.to_string()));
        }
        Ok(kept)
    }
}

/// A manifest path resolved inside `root` (for callers that want a path); symlinks leaving the bundle are refused.
pub fn safe_path(root: &Path, rel: &str) -> Result<PathBuf> {
    if !is_plain(rel) {
        return Err(Error::UnsafePath(rel.to_string()));
    }
    let full = root.join(rel);
    if let (Ok(real), Ok(real_root)) = (full.canonicalize(), root.canonicalize()) {
        if !real.starts_with(&real_root) {
            return Err(Error::UnsafePath(rel.to_string()));
        }
    }
    Ok(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("h2l-rs-unit-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("sub")).unwrap();
        d
    }

    #[test]
    fn plain_paths_only() {
        for ok in ["a.onnx", "golden/inputs.npy", "a/b/c", "x..y", ".hidden"] {
            assert!(is_plain(ok), "{ok}");
        }
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "./a", "a/.", "a\\b", "C:\\x", "a/", "a\0b"] {
            assert!(!is_plain(bad), "{bad:?}");
            assert!(matches!(safe_path(Path::new("/tmp"), bad), Err(Error::UnsafePath(_))), "{bad:?}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn safe_path_refuses_symlinks_out() {
        let d = tmp("safe");
        let outside = d.with_extension("outside");
        std::fs::write(&outside, b"secret").unwrap();
        std::os::unix::fs::symlink(&outside, d.join("out")).unwrap();
        std::fs::write(d.join("sub/in"), b"ok").unwrap();
        assert!(matches!(safe_path(&d, "out"), Err(Error::UnsafePath(_))));
        assert_eq!(safe_path(&d, "sub/in").unwrap(), d.join("sub/in"));
        let _ = std::fs::remove_file(outside);
        let _ = std::fs::remove_dir_all(d);
    }

    #[cfg(unix)]
    #[test]
    fn folder_refuses_symlinks_fifos_and_checks_hash() {
        let d = tmp("folder");
        std::fs::write(d.join("sub/f"), b"hello").unwrap();
        std::os::unix::fs::symlink("sub/f", d.join("link")).unwrap();
        std::os::unix::fs::symlink("sub", d.join("dirlink")).unwrap();
        let fifo = std::ffi::CString::new(d.join("fifo").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let f = Folder::open(&d).unwrap();
        let sha = hex(&Sha256::digest(b"hello"));
        assert_eq!(f.read_verified("sub/f", 5, &sha, true).unwrap(), b"hello");
        assert!(f.read_verified("sub/f", 5, &sha, false).unwrap().is_empty());
        assert!(matches!(f.read_verified("sub/f", 4, &sha, true), Err(Error::Checksum(_))));
        assert!(matches!(f.read_verified("sub/f", 5, &"0".repeat(64), true), Err(Error::Checksum(_))));
        assert!(matches!(f.open_file("link"), Err(Error::Symlink(_))));
        assert!(matches!(f.open_file("dirlink/f"), Err(Error::Symlink(_))));
        assert!(matches!(f.open_file("fifo"), Err(Error::UnsafePath(_))));
        assert!(matches!(f.open_file("sub"), Err(Error::UnsafePath(_))));
        assert!(matches!(f.open_file("nope"), Err(Error::Missing { .. })));
        assert!(matches!(f.read_capped("sub/f", 4), Err(Error::TooLarge { size: 5, .. })));
        // Renamed away while open: reads still come from the folder that was opened.
        let moved = d.with_extension("moved");
        std::fs::rename(&d, &moved).unwrap();
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/f"), b"other").unwrap();
        assert_eq!(f.read_capped("sub/f", 100).unwrap(), b"hello");
        let _ = std::fs::remove_dir_all(&d);
        let _ = std::fs::remove_dir_all(moved);
    }
}
