//! Hot reload: serve a bundle folder that `h2l export --force` republishes while the service runs.
//!
//! ```no_run
//! use std::{sync::Arc, time::Duration};
//! let reloader = Arc::new(h2l_runtime::Reloader::open("bundles/faq", h2l_runtime::OpenOptions::new())?);
//! let _watch = reloader.watch(Duration::from_millis(200));   // polls; stops when dropped
//! // per request:
//! let bundle = reloader.current();                           // an Arc: this request's version
//! let out = bundle.teacher().project(&vec![0.0; bundle.dim()])?;
//! # Ok::<(), h2l_runtime::Error>(())
//! ```
//!
//! A request takes an `Arc<Bundle>` and keeps it until it is done, so a request in flight finishes
//! on the sessions it started with.  [`Reloader::check`] compares the sha256 of the manifest bytes
//! at the path with the current bundle's; on a change it opens the new folder completely (hashes,
//! signature when a key is configured, sessions, contracts) and only then swaps the pointer.  The
//! old bundle, and its sessions, close when the last request holding it drops its `Arc`.  A folder
//! that fails to open is never swapped in: the service keeps answering from the last good bundle.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::folder::{hex, Folder};
use crate::{manifest, Bundle, OpenOptions};

/// What one [`Reloader::check`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The manifest at the path is the current one (or is mid-publish: no manifest right now).
    Unchanged,
    /// A new bundle is now current; the sha256 values are of the old and new manifest bytes.
    Swapped { from: String, to: String },
}

pub struct Reloader {
    dir: PathBuf,
    options: OpenOptions,
    current: RwLock<Arc<Bundle>>,
    retired: Mutex<Vec<Weak<Bundle>>>,
    check_lock: Mutex<()>,
    swaps: AtomicU64,
    failures: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Reloader {
    /// Open `dir` now (with `options`: library, public key); fails like [`Bundle::open`].
    pub fn open(dir: impl AsRef<Path>, options: OpenOptions) -> Result<Reloader> {
        let dir = dir.as_ref().to_path_buf();
        let bundle = options.open(&dir)?;
        Ok(Reloader {
            dir,
            options,
            current: RwLock::new(Arc::new(bundle)),
            retired: Mutex::new(Vec::new()),
            check_lock: Mutex::new(()),
            swaps: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_error: Mutex::new(None),
        })
    }

    /// The bundle a new request should use; hold the `Arc` for the whole request.
    pub fn current(&self) -> Arc<Bundle> {
        match self.current.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The sha256 of the manifest bytes at the path now; None while the folder is mid-publish.
    fn manifest_at_path(&self) -> Result<Option<String>> {
        let folder = match Folder::open(&self.dir) {
            Ok(f) => f,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match folder.read_capped("manifest.json", manifest::MAX_MANIFEST_BYTES) {
            Ok(bytes) => Ok(Some(hex(&Sha256::digest(&bytes)))),
            Err(Error::Missing { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Look once: if the folder now holds another manifest, open it fully and swap it in.
    /// An error leaves the current bundle in place (and is counted in [`Reloader::failures`]).
    pub fn check(&self) -> Result<Reload> {
        let _one_at_a_time = self.check_lock.lock().map_err(|_| Error::Poisoned("reload"))?;
        let result = self.check_locked();
        if let Err(e) = &result {
            self.failures.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut last) = self.last_error.lock() {
                *last = Some(e.to_string());
            }
        }
        result
    }

    fn check_locked(&self) -> Result<Reload> {
        let current = self.current();
        let Some(seen) = self.manifest_at_path()? else { return Ok(Reload::Unchanged) };
        if seen == current.manifest_sha256() {
            return Ok(Reload::Unchanged);
        }
        let next = match self.options.open(&self.dir) {
            Ok(b) => b,
            Err(e) => {
                // Republished again (or mid-rename) while we read it: not a bad bundle, look again later.
                return match self.manifest_at_path() {
                    Ok(now) if now.as_deref() != Some(seen.as_str()) => Ok(Reload::Unchanged),
                    _ => Err(e),
                };
            }
        };
        if next.manifest_sha256() == current.manifest_sha256() {
            return Ok(Reload::Unchanged);
        }
        let to = next.manifest_sha256().to_string();
        let next = Arc::new(next);
        let old = {
            let mut slot = self.current.write().map_err(|_| Error::Poisoned("reload"))?;
            std::mem::replace(&mut *slot, next)
        };
        let from = old.manifest_sha256().to_string();
        if let Ok(mut retired) = self.retired.lock() {
            retired.retain(|w| w.strong_count() > 0);
            retired.push(Arc::downgrade(&old));
        }
        self.swaps.fetch_add(1, Ordering::Relaxed);
        Ok(Reload::Swapped { from, to })
    }

    /// Poll every `interval` on a background thread until the returned [`Watcher`] is dropped.
    pub fn watch(self: &Arc<Self>, interval: Duration) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let (me, flag) = (Arc::clone(self), Arc::clone(&stop));
        let handle = std::thread::Builder::new()
            .name("h2l-reload".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    let _ = me.check();
                    std::thread::sleep(interval);
                }
            })
            .ok();
        Watcher { stop, handle }
    }

    /// How many bundles were swapped in since `open`.
    pub fn swaps(&self) -> u64 {
        self.swaps.load(Ordering::Relaxed)
    }
    /// How many checks failed (the bundle kept serving), and the last reason.
    pub fn failures(&self) -> (u64, Option<String>) {
        (self.failures.load(Ordering::Relaxed), self.last_error.lock().ok().and_then(|g| g.clone()))
    }
    /// Replaced bundles still held by requests in flight (their sessions are still open).
    pub fn draining(&self) -> usize {
        self.retired.lock().map(|r| r.iter().filter(|w| w.strong_count() > 0).count()).unwrap_or(0)
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Stops the polling thread when dropped.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
