//! The secret store (DESIGN §10): the only place a secret's bytes are kept.
//!
//! * **Where.** `secrets-dir` (default `STATE_DIR/secrets`): created with mode 0700; an
//!   existing one must belong to the daemon's uid and give nothing to group or others, else
//!   the store is refused (said in the log and to every `medic secret` command) and services
//!   that copy a secret wait; supervision goes on.
//! * **Files.** One file per generation, `NAME.GEN` (`authorized-keys.2`), mode 0600, written
//!   atomically: a temporary file beside it (`.NAME.GEN.tmp`), `fsync`, `rename`, `fsync` of
//!   the directory. A push that waits for `medic confirm` also has an empty marker
//!   `NAME.GEN.unconfirmed` until it is confirmed. The set time is the file's mtime; the
//!   generation is in its name: nothing else about a secret is kept anywhere.
//! * **Which generations.** The one in force, and while a push waits for its confirmation the
//!   one before it. The kernel says when a generation may go ([`Effect::DropSecret`]); the
//!   store never decides that itself.
//! * **At start** ([`Store::open`]): temporary files are removed; a generation still marked
//!   unconfirmed was pushed with `--confirm-within` and never confirmed before the daemon
//!   stopped: it is rolled back (removed) as its deadline would have; of the rest, the highest
//!   generation of each name is in force and older ones are removed.
//!
//! Nothing here runs on the loop except [`Store::open`] at start (a few small files):
//! writes and removals run on threads of their own (see the runtime).
//!
//! [`Effect::DropSecret`]: medic_kernel::Effect::DropSecret

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The largest secret: the bytes travel in one control request (at most 64 KiB, with the
/// name and framing), and an ssh key, a WireGuard key or a certificate chain is far smaller.
pub const MAX_SECRET_BYTES: usize = 60 * 1024;

/// Secrets in the store at most (each a file or two).
pub const MAX_SECRETS: usize = 1024;

/// The marker of a generation pushed with `--confirm-within`, not confirmed yet.
const UNCONFIRMED: &str = ".unconfirmed";

/// One generation of a secret, as the store knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Version {
    /// Its generation.
    pub generation: u64,
    /// Its size in bytes.
    pub size: u64,
    /// When it was set, in milliseconds since 1970 (the file's mtime).
    pub set_at_unix_ms: i64,
    /// Pushed with `--confirm-within` and not confirmed yet.
    pub unconfirmed: bool,
}

/// One secret: the generation in force and, while a push waits for its confirmation, the one
/// before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The generation in force.
    pub current: Version,
    /// The generation before it, kept until the kernel drops it.
    pub previous: Option<Version>,
}

/// The store: its directory and what is in it.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// Why the directory cannot be used, if it cannot.
    refused: Option<String>,
    entries: BTreeMap<String, Entry>,
    /// The highest generation given to each name while the daemon runs (a rolled-back or
    /// removed one included), so that a number never names two values in one history.
    highest: BTreeMap<String, u64>,
}

/// The file of `name` at `generation`.
pub fn path_of(dir: &Path, name: &str, generation: u64) -> PathBuf {
    dir.join(format!("{name}.{generation}"))
}

fn marker_of(dir: &Path, name: &str, generation: u64) -> PathBuf {
    dir.join(format!("{name}.{generation}{UNCONFIRMED}"))
}

fn euid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Creates `dir` (0700) if missing; refuses one another user could read or change. The mode
/// of a directory medic did not create is never changed (the operator may have pointed
/// `secrets-dir` somewhere that must keep its mode): it is refused with what to do.
fn prepare(dir: &Path) -> Result<(), String> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        // Ours: the umask may have taken bits away, never added any; make it exactly 0700.
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("cannot make {} mode 0700: {e}", dir.display()))?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
    }
    let meta = fs::symlink_metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("{} is not a directory", dir.display()));
    }
    if meta.uid() != euid() {
        return Err(format!(
            "{} is owned by uid {}, not by uid {} that the daemon runs as",
            dir.display(),
            meta.uid(),
            euid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{} gives access to group or others (mode {mode:04o}); medic does not change the \
             mode of a directory it did not create: `chmod 0700` it, or choose another \
             secrets-dir",
            dir.display()
        ));
    }
    Ok(())
}

/// `NAME.GEN` or `NAME.GEN.unconfirmed`: the name, the generation, whether a marker.
fn parse_file_name(file: &str) -> Option<(&str, u64, bool)> {
    let (stem, marker) = match file.strip_suffix(UNCONFIRMED) {
        Some(stem) => (stem, true),
        None => (file, false),
    };
    let (name, generation) = stem.rsplit_once('.')?;
    let generation: u64 = generation.parse().ok().filter(|g| *g > 0)?;
    medic_kernel::outputs::valid_key(name).then_some((name, generation, marker))
}

fn version_of(path: &Path, generation: u64, unconfirmed: bool) -> io::Result<Version> {
    let meta = fs::metadata(path)?;
    Ok(Version {
        generation,
        size: meta.len(),
        set_at_unix_ms: meta.mtime().saturating_mul(1000) + meta.mtime_nsec() / 1_000_000,
        unconfirmed,
    })
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

impl Store {
    /// Opens the store at `dir`, creating it if missing, and reads what is in it; returns the
    /// store and a sentence per generation rolled back or cleaned away (for the log).
    pub fn open(dir: &Path) -> (Store, Vec<String>) {
        let mut store = Store {
            dir: dir.to_path_buf(),
            refused: None,
            entries: BTreeMap::new(),
            highest: BTreeMap::new(),
        };
        let mut said = Vec::new();
        if let Err(why) = prepare(dir) {
            store.refused = Some(why);
            return (store, said);
        }
        let listing = match fs::read_dir(dir) {
            Ok(l) => l,
            Err(e) => {
                store.refused = Some(format!("cannot read {}: {e}", dir.display()));
                return (store, said);
            }
        };
        let mut found: BTreeMap<String, BTreeMap<u64, bool>> = BTreeMap::new();
        for entry in listing.flatten() {
            let file = entry.file_name();
            let Some(file) = file.to_str() else { continue };
            if file.starts_with('.') && file.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path()); // a write cut short
                continue;
            }
            if let Some((name, generation, marker)) = parse_file_name(file) {
                let unconfirmed = found
                    .entry(name.to_string())
                    .or_default()
                    .entry(generation)
                    .or_default();
                *unconfirmed |= marker;
            }
        }
        for (name, generations) in found {
            if let Some((&top, _)) = generations.last_key_value() {
                store.highest.insert(name.clone(), top);
            }
            let mut kept: Option<Version> = None;
            for (generation, unconfirmed) in generations.into_iter().rev() {
                let path = path_of(dir, &name, generation);
                let forget = |why: &str, said: &mut Vec<String>| {
                    let _ = fs::remove_file(&path);
                    let _ = fs::remove_file(marker_of(dir, &name, generation));
                    said.push(format!("secret {name}: generation {generation} {why}"));
                };
                if unconfirmed {
                    forget(
                        "was never confirmed (pushed with --confirm-within before the daemon \
                         stopped): rolled back",
                        &mut said,
                    );
                } else if kept.is_some() {
                    forget("was superseded: removed", &mut said);
                } else if store.entries.len() >= MAX_SECRETS {
                    said.push(format!(
                        "secret {name}: left out, the store holds {MAX_SECRETS} secrets at most"
                    ));
                    break;
                } else if let Ok(v) = version_of(&path, generation, false) {
                    kept = Some(v);
                }
            }
            if let Some(current) = kept {
                let entry = Entry {
                    current,
                    previous: None,
                };
                store.entries.insert(name, entry);
            }
        }
        sync_dir(dir);
        (store, said)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Why the store cannot be used, if it cannot.
    pub fn refused(&self) -> Option<&str> {
        self.refused.as_deref()
    }

    /// Every secret, by name.
    pub fn entries(&self) -> &BTreeMap<String, Entry> {
        &self.entries
    }

    /// The generation a new push of `name` gets: one more than any it had.
    pub fn next_generation(&self, name: &str) -> u64 {
        let current = self.entries.get(name).map_or(0, |e| e.current.generation);
        let highest = self.highest.get(name).copied().unwrap_or(0);
        current.max(highest).saturating_add(1)
    }

    /// A new generation was written: it is in force, the one before is kept until dropped.
    pub fn stored(&mut self, name: &str, version: Version) {
        let highest = self.highest.entry(name.to_string()).or_default();
        *highest = (*highest).max(version.generation);
        let previous = self.entries.get(name).map(|e| e.current);
        self.entries.insert(
            name.to_string(),
            Entry {
                current: version,
                previous,
            },
        );
    }

    /// The kernel dropped `generation` of `name`: the one in force (rolled back: the previous
    /// one is in force again; removed: none is) or the previous one (superseded). Returns
    /// whether the store knew it; the files go with [`remove_files`].
    pub fn dropped(&mut self, name: &str, generation: u64) -> bool {
        let Some(entry) = self.entries.get_mut(name) else {
            return false;
        };
        if entry.current.generation == generation {
            match entry.previous.take() {
                Some(p) => entry.current = p,
                None => {
                    self.entries.remove(name);
                }
            }
            true
        } else if entry.previous.is_some_and(|p| p.generation == generation) {
            entry.previous = None;
            true
        } else {
            false
        }
    }

    /// The push of `name` at `generation` is confirmed: its marker goes (with
    /// [`remove_marker`], off the loop).
    pub fn confirmed(&mut self, name: &str, generation: u64) {
        if let Some(e) = self
            .entries
            .get_mut(name)
            .filter(|e| e.current.generation == generation)
        {
            e.current.unconfirmed = false;
        }
    }
}

/// Writes `bytes` as generation `generation` of `name` (blocking: run it off the loop).
/// With `unconfirmed`, the marker is made first, so a crash at any point leaves either no
/// file or a marked one, which the next start rolls back.
pub fn write(
    dir: &Path,
    name: &str,
    generation: u64,
    bytes: &[u8],
    unconfirmed: bool,
) -> io::Result<Version> {
    if unconfirmed {
        let marker = marker_of(dir, name, generation);
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&marker)?
            .sync_all()?;
    }
    let temp = dir.join(format!(".{name}.{generation}.tmp"));
    let _ = fs::remove_file(&temp);
    let written = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&temp)?;
        // Explicitly, whatever the umask.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        let path = path_of(dir, name, generation);
        fs::rename(&temp, &path)?;
        sync_dir(dir);
        version_of(&path, generation, unconfirmed)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
        let _ = fs::remove_file(marker_of(dir, name, generation));
    }
    written
}

/// Removes generation `generation` of `name` and its marker (blocking: off the loop).
pub fn remove_files(dir: &Path, name: &str, generation: u64) {
    let _ = fs::remove_file(path_of(dir, name, generation));
    let _ = fs::remove_file(marker_of(dir, name, generation));
    sync_dir(dir);
}

/// Removes the marker of a confirmed push (blocking: off the loop).
pub fn remove_marker(dir: &Path, name: &str, generation: u64) {
    let _ = fs::remove_file(marker_of(dir, name, generation));
    sync_dir(dir);
}

/// Whether `name` may name a secret: the rule of output keys, `[a-z0-9_-]`, 1 to 64 bytes.
pub fn valid_name(name: &str) -> bool {
    medic_kernel::outputs::valid_key(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("medic-secrets-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_new_store_is_0700_and_its_files_0600() {
        let dir = scratch("new");
        let (store, said) = Store::open(&dir);
        assert!(store.refused().is_none() && said.is_empty());
        let mode = fs::metadata(&dir).unwrap().mode() & 0o7777;
        assert_eq!(mode, 0o700);
        let v = write(&dir, "wg-key", 1, b"abc", false).unwrap();
        assert_eq!((v.generation, v.size, v.unconfirmed), (1, 3, false));
        let meta = fs::metadata(path_of(&dir, "wg-key", 1)).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o600);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn at_start_an_unconfirmed_push_is_rolled_back_and_old_ones_cleaned() {
        let dir = scratch("start");
        let _ = Store::open(&dir);
        write(&dir, "keys", 1, b"one", false).unwrap();
        write(&dir, "keys", 2, b"two", false).unwrap();
        write(&dir, "keys", 3, b"three", true).unwrap();
        fs::write(dir.join(".keys.4.tmp"), b"half").unwrap();
        let (store, said) = Store::open(&dir);
        let entry = store.entries()["keys"];
        assert_eq!(entry.current.generation, 2);
        assert_eq!(entry.previous, None);
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(said[0].contains("generation 3 was never confirmed"));
        assert!(!path_of(&dir, "keys", 3).exists());
        assert!(!marker_of(&dir, "keys", 3).exists());
        assert!(!path_of(&dir, "keys", 1).exists());
        assert!(!dir.join(".keys.4.tmp").exists());
        assert_eq!(fs::read(path_of(&dir, "keys", 2)).unwrap(), b"two");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn drops_follow_the_kernel() {
        let dir = scratch("drops");
        let (mut store, _) = Store::open(&dir);
        let v1 = write(&dir, "k", 1, b"1", false).unwrap();
        store.stored("k", v1);
        let v2 = write(&dir, "k", 2, b"2", true).unwrap();
        store.stored("k", v2);
        assert_eq!(store.next_generation("k"), 3);
        // Rolled back: generation 1 is in force again; the next push is 3, not 2 again.
        assert!(store.dropped("k", 2));
        assert_eq!(store.entries()["k"].current.generation, 1);
        assert_eq!(store.next_generation("k"), 3);
        // Removed.
        assert!(store.dropped("k", 1));
        assert!(store.entries().is_empty());
        assert_eq!(store.next_generation("k"), 3);
        assert!(!store.dropped("k", 1));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_shared_directory_is_refused_and_left_alone() {
        let dir = scratch("shared");
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o750)).unwrap();
        let (store, _) = Store::open(&dir);
        let why = store.refused().expect("refused");
        assert!(
            why.contains("mode 0750") && why.contains("chmod 0700"),
            "{why}"
        );
        assert_eq!(fs::metadata(&dir).unwrap().mode() & 0o7777, 0o750);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn file_names_parse() {
        assert_eq!(parse_file_name("wg-key.12"), Some(("wg-key", 12, false)));
        assert_eq!(
            parse_file_name("wg-key.2.unconfirmed"),
            Some(("wg-key", 2, true))
        );
        assert_eq!(parse_file_name("wg-key"), None);
        assert_eq!(parse_file_name("Bad.1"), None);
        assert_eq!(parse_file_name("k.0"), None);
    }
}
