//! `user =` and `group =` resolved once per name, not on every spawn: an NSS lookup may read a
//! large `/etc/passwd` or ask a slow directory service, on the loop. Answers (also "no such
//! user") are kept in a cache of at most [`MAX_NAMES`] names per kind, emptied on SIGHUP
//! ([`forget`]), so a user added to the system is seen after the next SIGHUP.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::sync::Mutex;

use nix::unistd::{Group, Uid, User};

/// Names kept per kind (users, groups); the cache is emptied when it would hold more.
pub const MAX_NAMES: usize = 256;

/// What a `user =` name or number stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserIds {
    /// The uid.
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
    /// Its passwd entry's name and home directory, for `USER`, `LOGNAME` and `HOME` (none for a
    /// numeric uid without an entry).
    pub entry: Option<(String, OsString)>,
}

/// A bounded map from names to lookup results.
#[derive(Debug)]
pub struct Cache<V> {
    map: BTreeMap<String, Option<V>>,
    limit: usize,
}

impl<V: Clone> Cache<V> {
    /// An empty cache of at most `limit` names.
    pub const fn new(limit: usize) -> Cache<V> {
        Cache {
            map: BTreeMap::new(),
            limit,
        }
    }

    /// The cached answer for `name`, else `lookup(name)`, remembered.
    pub fn get(&mut self, name: &str, lookup: impl FnOnce(&str) -> Option<V>) -> Option<V> {
        if let Some(v) = self.map.get(name) {
            return v.clone();
        }
        let v = lookup(name);
        if self.map.len() >= self.limit {
            self.map.clear();
        }
        self.map.insert(name.to_string(), v.clone());
        v
    }

    /// Forgets every answer.
    pub fn clear(&mut self) {
        self.map.clear();
    }

    /// Names held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

static USERS: Mutex<Cache<UserIds>> = Mutex::new(Cache::new(MAX_NAMES));
static GROUPS: Mutex<Cache<u32>> = Mutex::new(Cache::new(MAX_NAMES));

/// The ids of `user` (a name or a number); `None` when no such user exists.
pub fn user(user: &str) -> Option<UserIds> {
    let mut cache = USERS.lock().unwrap_or_else(|e| e.into_inner());
    cache.get(user, lookup_user)
}

/// The gid of `group` (a name or a number); `None` when no such group exists.
pub fn group(group: &str) -> Option<u32> {
    if let Ok(gid) = group.parse::<u32>() {
        return Some(gid);
    }
    let mut cache = GROUPS.lock().unwrap_or_else(|e| e.into_inner());
    cache.get(group, |g| Some(Group::from_name(g).ok()??.gid.as_raw()))
}

/// Forgets every answer (SIGHUP).
pub fn forget() {
    USERS.lock().unwrap_or_else(|e| e.into_inner()).clear();
    GROUPS.lock().unwrap_or_else(|e| e.into_inner()).clear();
}

fn lookup_user(user: &str) -> Option<UserIds> {
    let entry = match user.parse::<u32>() {
        // A numeric uid need not have a passwd entry; its group is then the same number.
        Ok(uid) => match User::from_uid(Uid::from_raw(uid)).ok().flatten() {
            Some(u) => u,
            None => {
                return Some(UserIds {
                    uid,
                    gid: uid,
                    entry: None,
                })
            }
        },
        Err(_) => User::from_name(user).ok().flatten()?,
    };
    Some(UserIds {
        uid: entry.uid.as_raw(),
        gid: entry.gid.as_raw(),
        entry: Some((entry.name, entry.dir.into_os_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_name_is_looked_up_once_until_forgotten_and_the_cache_is_bounded() {
        let mut cache = Cache::new(3);
        let lookups = std::cell::Cell::new(0);
        let get = |cache: &mut Cache<u32>, name: &str| {
            cache.get(name, |n| {
                lookups.set(lookups.get() + 1);
                (n != "ghost").then_some(n.len() as u32)
            })
        };
        assert_eq!(get(&mut cache, "daemon"), Some(6));
        assert_eq!(get(&mut cache, "daemon"), Some(6));
        assert_eq!(get(&mut cache, "ghost"), None);
        assert_eq!(get(&mut cache, "ghost"), None, "a miss is remembered too");
        assert_eq!(lookups.get(), 2);
        for name in ["a", "bb", "ccc", "dddd"] {
            get(&mut cache, name);
        }
        assert!(cache.len() <= 3, "bounded: {}", cache.len());
        cache.clear();
        assert!(cache.is_empty());
        get(&mut cache, "daemon");
        assert_eq!(lookups.get(), 7, "looked up again once forgotten");
    }

    #[test]
    fn root_and_numbers_resolve() {
        let root = user("root").expect("root exists");
        assert_eq!((root.uid, root.gid), (0, 0));
        assert_eq!(user("0"), Some(root));
        let nobody_number = user("4000000").expect("a bare number is a uid");
        assert_eq!(
            (nobody_number.uid, nobody_number.gid),
            (4_000_000, 4_000_000)
        );
        assert_eq!(user("no-such-user-medic"), None);
        assert_eq!(group("0"), Some(0));
        assert_eq!(group("no-such-group-medic"), None);
        forget();
    }
}
