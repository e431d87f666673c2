//! Watched files: inotify on the *parent directory* of each path, so that an editor's
//! rename-over (write a temporary file, rename it onto the old name) and a file created after
//! the daemon started are both seen.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use std::os::fd::{AsFd, AsRawFd, RawFd};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::process::resolve;

/// Events on the parent directory that mean "the file may have changed".
fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_ATTRIB
}

/// The inotify instance, as tokio needs it (`AsRawFd`).
#[derive(Debug)]
struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// One watched directory and the config paths inside it.
#[derive(Debug)]
struct Dir {
    path: PathBuf,
    /// (file name in the directory, the path exactly as the config names it)
    files: Vec<(OsString, String)>,
}

/// The inotify instance and what each directory watch stands for.
#[derive(Debug)]
pub struct Watcher {
    fd: AsyncFd<InotifyFd>,
    dirs: BTreeMap<WatchDescriptor, Dir>,
    base_dir: PathBuf,
}

impl Watcher {
    /// A watcher; relative paths are taken relative to `base_dir` (the config's directory).
    pub fn new(base_dir: &Path) -> io::Result<Watcher> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        Ok(Watcher {
            // SAFETY: the inotify descriptor is owned by `InotifyFd` and stays open as long as it.
            fd: unsafe { AsyncFd::register_with_interest(InotifyFd(inotify), Interest::READABLE)? },
            dirs: BTreeMap::new(),
            base_dir: base_dir.to_path_buf(),
        })
    }

    /// Starts watching `path` (as the config names it).
    pub fn watch(&mut self, path: &str) -> io::Result<()> {
        let full = resolve(&self.base_dir, path);
        let (Some(dir), Some(name)) = (full.parent(), full.file_name()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "path has no parent directory",
            ));
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let wd = self.fd.get_ref().0.add_watch(dir, mask())?;
        let entry = self.dirs.entry(wd).or_insert_with(|| Dir {
            path: dir.to_path_buf(),
            files: Vec::new(),
        });
        if !entry.files.iter().any(|(_, p)| p == path) {
            entry.files.push((name.to_os_string(), path.to_string()));
        }
        Ok(())
    }

    /// Stops watching `path`; the directory watch goes when nothing in it is watched.
    pub fn unwatch(&mut self, path: &str) {
        let mut empty = None;
        for (wd, dir) in self.dirs.iter_mut() {
            dir.files.retain(|(_, p)| p != path);
            if dir.files.is_empty() {
                empty = Some(*wd);
            }
        }
        if let Some(wd) = empty {
            self.dirs.remove(&wd);
            let _ = self.fd.get_ref().0.rm_watch(wd);
        }
    }

    /// Waits until inotify has events, and returns the config paths they concern (each once,
    /// in a stable order).
    pub async fn changed(&mut self) -> io::Result<Vec<String>> {
        loop {
            let mut guard = self.fd.readable().await?;
            let events =
                match guard.try_io(|fd| fd.get_ref().0.read_events().map_err(io::Error::from)) {
                    Ok(result) => result?,
                    Err(_would_block) => continue,
                };
            let mut paths = Vec::new();
            for ev in events {
                if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    // Events were lost: every watched path may have changed.
                    paths.extend(
                        self.dirs
                            .values()
                            .flat_map(|d| d.files.iter().map(|(_, p)| p.clone())),
                    );
                    continue;
                }
                if ev.mask.contains(AddWatchFlags::IN_IGNORED) {
                    // The directory itself went away; its watch is gone.
                    if let Some(dir) = self.dirs.remove(&ev.wd) {
                        tracing::warn!(dir = %dir.path.display(), "watched directory removed; its files are no longer watched");
                    }
                    continue;
                }
                let (Some(dir), Some(name)) = (self.dirs.get(&ev.wd), ev.name.as_ref()) else {
                    continue;
                };
                paths.extend(
                    dir.files
                        .iter()
                        .filter(|(n, _)| n == name)
                        .map(|(_, p)| p.clone()),
                );
            }
            paths.sort();
            paths.dedup();
            if !paths.is_empty() {
                return Ok(paths);
            }
        }
    }
}
