//! Outputs (DESIGN §9): what a service publishes for others to read — a DHCP client's prefix,
//! an address — as kernel state. They are facts: traced, replayed, kept in the snapshot and the
//! state file, and every change is a line in the publisher's history.
//!
//! * [`Input::SetOutputs`](crate::Input::SetOutputs) replaces one service's whole map (no
//!   half-written state); an identical map changes nothing and writes nothing.
//! * A publisher's outputs survive its restarts (the replacement overwrites them) and are
//!   cleared when it is stopped: by the operator, by removal from the config, at shutdown.
//! * A change schedules a render of every service that reads the publisher (through `needs` or
//!   `uses`) and has templates (the rules are in `kernel/src/render.rs`).
//!
//! Values are strings, lists and maps only (JSON-like, ordered by key, so deterministic);
//! numbers and booleans arrive as their text. Everything is bounded ([`limits`]); a map over a
//! bound is refused as a whole with a message that says which bound.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::kernel::Kernel;
use crate::protocol::{Effect, ServiceId};

/// One output value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Value {
    /// Text (numbers and booleans are kept as their text).
    String(String),
    /// An ordered list.
    List(Vec<Value>),
    /// A map ordered by key.
    Map(BTreeMap<String, Value>),
}

/// One service's outputs: top-level keys (`[a-z0-9_-]+`) to values.
pub type Outputs = BTreeMap<String, Value>;

/// The bounds on one service's outputs.
pub mod limits {
    /// Top-level keys in one map.
    pub const MAX_KEYS: usize = 64;
    /// Values in one map, counting every string, list and map at every depth.
    pub const MAX_VALUES: usize = 4096;
    /// Bytes of text in one map (keys and strings at every depth): a whole map fits in one
    /// control request (64 KiB).
    pub const MAX_BYTES: usize = 32 * 1024;
    /// Nesting depth (a top-level string is depth 1).
    pub const MAX_DEPTH: usize = 8;
    /// Bytes of one key (top-level or nested).
    pub const MAX_KEY_BYTES: usize = 64;
}

/// Why a map of outputs was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OutputsError {
    /// A top-level key outside `[a-z0-9_-]+`, or any key empty or too long.
    #[error("output key `{0}` is not valid: top-level keys are 1 to 64 of a-z, 0-9, `_` and `-`; nested keys 1 to 64 bytes")]
    BadKey(String),
    /// More than [`limits::MAX_KEYS`] top-level keys.
    #[error("{0} output keys; at most {max} are kept per service", max = limits::MAX_KEYS)]
    TooManyKeys(usize),
    /// More than [`limits::MAX_VALUES`] values.
    #[error("more than {max} values in the outputs", max = limits::MAX_VALUES)]
    TooManyValues,
    /// More than [`limits::MAX_BYTES`] of text.
    #[error("more than {max} bytes of text in the outputs", max = limits::MAX_BYTES)]
    TooLarge,
    /// Nested deeper than [`limits::MAX_DEPTH`].
    #[error("outputs nested deeper than {max} levels", max = limits::MAX_DEPTH)]
    TooDeep,
}

/// Whether `key` may be a top-level output key: `[a-z0-9_-]+`, at most 64 bytes.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= limits::MAX_KEY_BYTES
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Checks a map against the key syntax and every bound.
pub fn validate(outputs: &Outputs) -> Result<(), OutputsError> {
    if outputs.len() > limits::MAX_KEYS {
        return Err(OutputsError::TooManyKeys(outputs.len()));
    }
    let mut budget = Budget {
        values: 0,
        bytes: 0,
    };
    for (key, value) in outputs {
        if !valid_key(key) {
            return Err(OutputsError::BadKey(key.clone()));
        }
        budget.bytes += key.len();
        budget.walk(value, 1)?;
    }
    Ok(())
}

/// What a walk over a map has used so far.
struct Budget {
    values: usize,
    bytes: usize,
}

impl Budget {
    fn walk(&mut self, value: &Value, depth: usize) -> Result<(), OutputsError> {
        if depth > limits::MAX_DEPTH {
            return Err(OutputsError::TooDeep);
        }
        self.values += 1;
        if self.values > limits::MAX_VALUES {
            return Err(OutputsError::TooManyValues);
        }
        match value {
            Value::String(s) => self.bytes += s.len(),
            Value::List(items) => {
                for item in items {
                    self.walk(item, depth + 1)?;
                }
            }
            Value::Map(map) => {
                for (key, item) in map {
                    if key.is_empty() || key.len() > limits::MAX_KEY_BYTES {
                        return Err(OutputsError::BadKey(key.clone()));
                    }
                    self.bytes += key.len();
                    self.walk(item, depth + 1)?;
                }
            }
        }
        if self.bytes > limits::MAX_BYTES {
            return Err(OutputsError::TooLarge);
        }
        Ok(())
    }
}

/// A value shown in a history line is cut after this many characters.
const SHOWN_VALUE_CHARS: usize = 60;
/// A history line about changed outputs names at most this many keys.
const SHOWN_KEYS: usize = 4;

impl Value {
    /// Short text for a history line: a string as is, a list's items joined by `, `, a map as
    /// `{key: value, …}`; cut at 60 characters with `…`.
    pub fn short(&self) -> String {
        let mut text = String::new();
        self.write_short(&mut text);
        if text.chars().count() > SHOWN_VALUE_CHARS {
            text = text.chars().take(SHOWN_VALUE_CHARS - 1).collect();
            text.push('…');
        }
        text
    }

    fn write_short(&self, text: &mut String) {
        if text.len() > SHOWN_VALUE_CHARS * 4 {
            return; // long enough to be cut: stop walking
        }
        match self {
            Value::String(s) => text.push_str(s),
            Value::List(items) => {
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        text.push_str(", ");
                    }
                    item.write_short(text);
                }
            }
            Value::Map(map) => {
                text.push('{');
                for (i, (key, item)) in map.iter().enumerate() {
                    if i > 0 {
                        text.push_str(", ");
                    }
                    text.push_str(key);
                    text.push_str(": ");
                    item.write_short(text);
                }
                text.push('}');
            }
        }
    }
}

/// The history line for a change from `old` to `new` (`None` when nothing changed), naming
/// each changed leaf by its path: `outputs: prefixes 2001:db8:1::/56 → 2001:db8:2::/56`,
/// `outputs: ipv6.prefixes[0].address 2001:db8:100:: → 2001:db8:200::`; a new key as
/// `key (none) → v`, a removed one as `key v → (none)`; a list of strings, or one whose length
/// changed, is shown whole. At most four paths are shown, in order, then `and N more`.
pub fn change_note(old: &Outputs, new: &Outputs) -> Option<String> {
    let mut changed = Vec::new();
    diff_maps(&mut String::new(), old, new, &mut changed);
    if changed.is_empty() {
        return None;
    }
    let shown = |v: Option<&Value>| v.map_or_else(|| "(none)".to_string(), Value::short);
    let parts: Vec<String> = changed
        .iter()
        .take(SHOWN_KEYS)
        .map(|(path, before, after)| format!("{path} {} → {}", shown(*before), shown(*after)))
        .collect();
    let mut note = format!("outputs: {}", parts.join("; "));
    if changed.len() > SHOWN_KEYS {
        note.push_str(&format!("; and {} more", changed.len() - SHOWN_KEYS));
    }
    Some(note)
}

/// A changed leaf: its path, the value before and after.
type Change<'a> = (String, Option<&'a Value>, Option<&'a Value>);

/// Every changed leaf of two maps under `path`, in key order. Maps are bounded in depth and
/// size (`validate`), so the walk is too.
fn diff_maps<'a>(
    path: &mut String,
    old: &'a BTreeMap<String, Value>,
    new: &'a BTreeMap<String, Value>,
    changed: &mut Vec<Change<'a>>,
) {
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for key in keys {
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
        diff_values(path, old.get(key), new.get(key), changed);
        path.truncate(len);
    }
}

fn diff_values<'a>(
    path: &mut String,
    old: Option<&'a Value>,
    new: Option<&'a Value>,
    changed: &mut Vec<Change<'a>>,
) {
    if old == new {
        return;
    }
    match (old, new) {
        (Some(Value::Map(a)), Some(Value::Map(b))) => diff_maps(path, a, b, changed),
        // Lists of maps or lists, by index; a list of strings is shown whole (`prefixes
        // 2001:db8:1::/56 → 2001:db8:2::/56`).
        (Some(Value::List(a)), Some(Value::List(b)))
            if a.len() == b.len() && !a.iter().chain(b).all(|v| matches!(v, Value::String(_))) =>
        {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                diff_values(path, Some(x), Some(y), changed);
                path.truncate(len);
            }
        }
        _ => changed.push((path.clone(), old, new)),
    }
}

impl Kernel {
    /// The outputs `name` publishes now (empty when none).
    pub fn outputs(&self, name: &str) -> Option<&Outputs> {
        self.outputs.get(name)
    }

    /// [`crate::Input::SetOutputs`]: replaces the whole map of `name`.
    pub(crate) fn on_set_outputs(&mut self, name: &str, outputs: Outputs, out: &mut Vec<Effect>) {
        let Some(id) = self.lookup(name) else {
            out.push(Effect::Notice {
                message: format!("output set: no service called `{name}`; nothing changed"),
            });
            return;
        };
        if let Err(e) = validate(&outputs) {
            out.push(Effect::Notice {
                message: format!("output set {name}: refused: {e}; nothing changed"),
            });
            return;
        }
        let empty = Outputs::new();
        let old = self.outputs.get(name).unwrap_or(&empty);
        let Some(note) = change_note(old, &outputs) else {
            return; // the same map again (a DHCP renew that changed nothing medic keeps)
        };
        if outputs.is_empty() {
            self.outputs.remove(name);
        } else {
            self.outputs.insert(name.to_string(), outputs);
        }
        self.note(id, note, out);
        self.outputs_changed(name);
    }

    /// Forgets the outputs of `id` (stopped by the operator, removed, shut down); the history
    /// says why.
    pub(crate) fn clear_outputs(&mut self, id: ServiceId, why: &str, out: &mut Vec<Effect>) {
        let name = self.slots[id.index()].config.name.clone();
        if self.outputs.remove(&name).is_none() {
            return;
        }
        self.note(id, format!("outputs cleared: {why}"), out);
        self.outputs_changed(&name);
    }

    /// The services that read `name`'s outputs (it is in their `needs` or `uses`) and have
    /// templates: each renders again after its debounce. One pass over the services: outputs
    /// change seldom (a DHCP event), and the services are few.
    fn outputs_changed(&mut self, name: &str) {
        let readers: Vec<ServiceId> = self
            .order
            .iter()
            .copied()
            .filter(|id| {
                let c = &self.slots[id.index()].config;
                !c.templates.is_empty()
                    && (c.needs.iter().any(|n| n == name) || c.uses.iter().any(|n| n == name))
            })
            .collect();
        for id in readers {
            self.inputs_changed(id);
        }
    }

    /// The outputs of the services `id` reads (`needs`, then `uses`), by service name; a
    /// service that publishes nothing is absent, so a template that reads it fails.
    pub(crate) fn outputs_read_by(&self, id: ServiceId) -> BTreeMap<String, Outputs> {
        let config = &self.slots[id.index()].config;
        config
            .needs
            .iter()
            .chain(&config.uses)
            .filter_map(|n| Some((n.clone(), self.outputs.get(n)?.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> Value {
        Value::String(text.into())
    }

    #[test]
    fn keys_follow_the_syntax() {
        assert!(valid_key("prefixes"));
        assert!(valid_key("lease-s_2"));
        assert!(!valid_key(""));
        assert!(!valid_key("Prefixes"));
        assert!(!valid_key("a.b"));
        assert!(!valid_key(&"a".repeat(65)));
    }

    #[test]
    fn bounds_are_enforced() {
        let many: Outputs = (0..65).map(|i| (format!("k{i}"), s("v"))).collect();
        assert_eq!(validate(&many), Err(OutputsError::TooManyKeys(65)));
        let big: Outputs = [("k".to_string(), s(&"x".repeat(limits::MAX_BYTES + 1)))].into();
        assert_eq!(validate(&big), Err(OutputsError::TooLarge));
        let mut deep = s("x");
        for _ in 0..limits::MAX_DEPTH {
            deep = Value::List(vec![deep]);
        }
        let deep: Outputs = [("k".to_string(), deep)].into();
        assert_eq!(validate(&deep), Err(OutputsError::TooDeep));
        let wide: Outputs = [(
            "k".to_string(),
            Value::List(vec![s(""); limits::MAX_VALUES]),
        )]
        .into();
        assert_eq!(validate(&wide), Err(OutputsError::TooManyValues));
        let nested_bad: Outputs = [(
            "k".to_string(),
            Value::Map([(String::new(), s("v"))].into()),
        )]
        .into();
        assert_eq!(
            validate(&nested_bad),
            Err(OutputsError::BadKey(String::new()))
        );
        let good: Outputs = [
            (
                "prefixes".to_string(),
                Value::List(vec![s("2001:db8::/56")]),
            ),
            (
                "raw".to_string(),
                Value::Map([("RA_ADDRESSES".to_string(), s("x"))].into()),
            ),
        ]
        .into();
        assert_eq!(validate(&good), Ok(()));
    }

    #[test]
    fn change_note_names_the_keys_that_changed() {
        let old: Outputs = [
            (
                "prefixes".to_string(),
                Value::List(vec![s("2001:db8:1::/56")]),
            ),
            ("state".to_string(), s("bound")),
            ("gone".to_string(), s("x")),
        ]
        .into();
        let new: Outputs = [
            (
                "prefixes".to_string(),
                Value::List(vec![s("2001:db8:2::/56")]),
            ),
            ("state".to_string(), s("bound")),
            ("dns".to_string(), s("2001:db8::53")),
        ]
        .into();
        assert_eq!(
            change_note(&old, &new).as_deref(),
            Some(
                "outputs: dns (none) → 2001:db8::53; gone x → (none); \
                 prefixes 2001:db8:1::/56 → 2001:db8:2::/56"
            )
        );
        assert_eq!(change_note(&new, &new), None);
    }

    #[test]
    fn change_note_names_the_leaves_of_nested_maps_by_path() {
        let map = |entries: &[(&str, Value)]| {
            Value::Map(
                entries
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect(),
            )
        };
        let prefix = |address: &str, valid: &str| {
            map(&[
                ("address", s(address)),
                ("length", s("56")),
                ("valid-s", s(valid)),
            ])
        };
        let hook = |address: &str, valid: &str, dns: Vec<Value>| -> Outputs {
            [
                (
                    "ipv6".to_string(),
                    map(&[
                        ("dns", Value::List(dns)),
                        ("prefixes", Value::List(vec![prefix(address, valid)])),
                    ]),
                ),
                ("state".to_string(), s("bound")),
            ]
            .into()
        };
        let old = hook("2001:db8:100::", "600", vec![s("2001:db8::53")]);
        let renumbered = hook("2001:db8:200::", "600", vec![s("2001:db8::53")]);
        assert_eq!(
            change_note(&old, &renumbered).as_deref(),
            Some("outputs: ipv6.prefixes[0].address 2001:db8:100:: → 2001:db8:200::")
        );
        // A list that grew is shown whole; a lifetime is a leaf like any other.
        let more = hook(
            "2001:db8:100::",
            "700",
            vec![s("2001:db8::53"), s("2001:db8::54")],
        );
        assert_eq!(
            change_note(&old, &more).as_deref(),
            Some(
                "outputs: ipv6.dns 2001:db8::53 → 2001:db8::53, 2001:db8::54; \
                 ipv6.prefixes[0].valid-s 600 → 700"
            )
        );
        // A map where a string was, and back.
        let flat: Outputs = [("ipv6".to_string(), s("none"))].into();
        assert_eq!(
            change_note(&flat, &old)
                .as_deref()
                .map(|n| n.starts_with("outputs: ipv6 none → {")),
            Some(true)
        );
    }

    #[test]
    fn short_values_are_cut() {
        let long = s(&"a".repeat(100));
        assert_eq!(long.short().chars().count(), SHOWN_VALUE_CHARS);
        assert!(long.short().ends_with('…'));
        let map = Value::Map([("address".to_string(), s("10.0.0.2"))].into());
        assert_eq!(map.short(), "{address: 10.0.0.2}");
    }

    /// Every bound holds exactly at its limit and refuses one past it, at the top level and
    /// nested, through lists and through maps.
    #[test]
    fn every_bound_is_exact() {
        let one = |key: &str, value: Value| -> Outputs { [(key.to_string(), value)].into() };
        // A DHCPv6 client's map of some KiB is taken: the limit is 32 KiB, not about 1.
        assert_eq!(limits::MAX_BYTES, 32 * 1024);
        assert_eq!(validate(&one("k", s(&"x".repeat(20_000)))), Ok(()));
        // Keys: 64 are taken.
        let keys: Outputs = (0..64).map(|i| (format!("k{i}"), s("v"))).collect();
        assert_eq!(validate(&keys), Ok(()));
        // Bytes: keys count, top-level and nested; exactly MAX_BYTES is taken.
        let text = |n: usize| s(&"x".repeat(n));
        assert_eq!(validate(&one("k", text(limits::MAX_BYTES - 1))), Ok(()));
        assert_eq!(
            validate(&one("kk", text(limits::MAX_BYTES - 1))),
            Err(OutputsError::TooLarge),
            "the top-level key's bytes count"
        );
        let nested = |n: usize| -> Outputs {
            [
                ("a".to_string(), text(n)),
                (
                    "b".to_string(),
                    Value::Map([("y".repeat(64), s(""))].into()),
                ),
            ]
            .into()
        };
        assert_eq!(validate(&nested(limits::MAX_BYTES - 66)), Ok(()));
        assert_eq!(
            validate(&nested(limits::MAX_BYTES - 65)),
            Err(OutputsError::TooLarge),
            "a nested key's bytes count"
        );
        // Nested keys: 64 bytes are taken, 65 are not.
        let key = |n: usize| one("k", Value::Map([("y".repeat(n), s("v"))].into()));
        assert_eq!(validate(&key(64)), Ok(()));
        assert_eq!(
            validate(&key(65)),
            Err(OutputsError::BadKey("y".repeat(65)))
        );
        // Depth, through lists and through maps: MAX_DEPTH is taken, one more is not.
        let lists = |levels: usize| (1..levels).fold(s("x"), |v, _| Value::List(vec![v]));
        let maps = |levels: usize| {
            (1..levels).fold(s("x"), |v, _| Value::Map([("m".to_string(), v)].into()))
        };
        for deep in [lists, maps] {
            assert_eq!(validate(&one("k", deep(limits::MAX_DEPTH))), Ok(()));
            assert_eq!(
                validate(&one("k", deep(limits::MAX_DEPTH + 1))),
                Err(OutputsError::TooDeep)
            );
        }
        // Values: the list counts as one, so MAX_VALUES - 1 items fill it exactly.
        let wide = |n: usize| one("k", Value::List(vec![s(""); n]));
        assert_eq!(validate(&wide(limits::MAX_VALUES - 1)), Ok(()));
        assert_eq!(
            validate(&wide(limits::MAX_VALUES)),
            Err(OutputsError::TooManyValues)
        );
    }

    #[test]
    fn short_values_are_cut_by_characters_not_bytes() {
        // Exactly 60 characters is not cut.
        let sixty = "a".repeat(SHOWN_VALUE_CHARS);
        assert_eq!(s(&sixty).short(), sixty);
        // 33 two-byte characters (66 bytes) then more: nothing is cut short of 60 characters.
        let wide = Value::List(vec![s(&"é".repeat(33)), s("b"), s("c")]);
        assert_eq!(wide.short(), format!("{}, b, c", "é".repeat(33)));
        let items = Value::List(vec![s(&"a".repeat(16)), s(&"b".repeat(10))]);
        assert_eq!(
            items.short(),
            format!("{}, {}", "a".repeat(16), "b".repeat(10))
        );
        let map = Value::Map([("a".to_string(), s("1")), ("b".to_string(), s("2"))].into());
        assert_eq!(map.short(), "{a: 1, b: 2}");
    }

    #[test]
    fn change_note_shows_four_keys_then_counts_the_rest() {
        let map =
            |n: usize, v: &str| -> Outputs { (0..n).map(|i| (format!("k{i}"), s(v))).collect() };
        let four = change_note(&map(4, "a"), &map(4, "b")).unwrap();
        assert!(!four.contains("more"), "{four}");
        assert_eq!(four.matches(" → ").count(), 4, "{four}");
        let six = change_note(&map(6, "a"), &map(6, "b")).unwrap();
        assert!(six.ends_with("; and 2 more"), "{six}");
        assert_eq!(six.matches(" → ").count(), 4, "{six}");
    }
}
