//! Readers for one TOML value each: a string, a duration, a size, a command line, a heal…
//!
//! Every reader reports what is wrong to [`Ctx`] and returns `None`, so the caller can go on
//! and find the next problem.

use core::ops::RangeInclusive;
use core::time::Duration;
use std::collections::BTreeMap;

use toml::de::{DeString, DeTable, DeValue};
use toml::Spanned;

use super::model::limits::{MAX_DURATION, MAX_SIZE};
use super::model::{Action, Check, Heal, MemoryLimit, Signal};

/// A TOML value with its byte span.
pub(super) type Value<'i> = Spanned<DeValue<'i>>;

/// The problems found so far, each at a byte offset of the text.
pub(super) struct Ctx {
    /// `(byte offset, message, hint to add)`, in the order found; sorted by offset at the end.
    pub errors: Vec<(usize, String, Option<Hint>)>,
    /// Edit-distance cells that suggestions may still spend (see [`SUGGEST_BUDGET`]).
    pub suggest_budget: u64,
    /// The config file's directory: relative paths are taken from it.
    pub base: Option<String>,
}

impl Default for Ctx {
    fn default() -> Self {
        Ctx {
            errors: Vec::new(),
            suggest_budget: SUGGEST_BUDGET,
            base: None,
        }
    }
}

/// The end of a message, a suggestion, worked out only for the errors that are reported: a
/// file with thousands of problems costs no more than one with a hundred.
#[derive(Clone, Debug)]
pub(super) enum Hint {
    /// `; did you mean `x`?` with the nearest of `candidates`; with `or_list`, `; use one of …`
    /// when none is near.
    Among {
        /// The word as written.
        word: String,
        /// What it could have meant.
        candidates: Vec<&'static str>,
        /// List every candidate when none is near.
        or_list: bool,
    },
    /// `; did you mean `x`?` with the nearest service name.
    Service(String),
}

impl Hint {
    /// The words to append to the message; `services` are the names of the file's services.
    pub fn resolve(self, cx: &mut Ctx, services: &[&str]) -> String {
        match self {
            Hint::Among {
                word,
                candidates,
                or_list,
            } => {
                let hint = cx.did_you_mean(&word, candidates.iter().copied());
                if hint.is_empty() && or_list {
                    format!("; use one of {}", list(&candidates))
                } else {
                    hint
                }
            }
            Hint::Service(word) => cx.did_you_mean(&word, services.iter().copied()),
        }
    }
}

/// Words longer than this (in characters) are not compared by edit distance: no one misspells
/// a 65-letter key, and the cost grows with the square of the length.
const SUGGEST_MAX_CHARS: usize = 64;

/// Edit-distance cells one parse may spend on suggestions, whatever the file holds (a tenth of
/// a second or so). Once spent, messages go on without "did you mean".
const SUGGEST_BUDGET: u64 = 50_000_000;

/// One `key = value` of a table, with the table's name for messages.
#[derive(Clone, Copy)]
pub(super) struct Field<'a, 'i> {
    /// The key, e.g. `needs`.
    pub key: &'a str,
    /// The table, as its header would be written, e.g. `[service.ntpd]`.
    pub place: &'a str,
    /// The value.
    pub value: &'a Value<'i>,
}

impl<'a, 'i> Field<'a, 'i> {
    /// `key = value` in the table `place`.
    pub fn new(key: &'a str, place: &'a str, value: &'a Value<'i>) -> Self {
        Field { key, place, value }
    }

    /// Where the value starts.
    pub fn at(&self) -> usize {
        self.value.span().start
    }

    /// The same key and place with another value (an element of an array, say).
    pub fn with(self, value: &'a Value<'i>) -> Self {
        Field { value, ..self }
    }
}

/// The entries of a table in the order of the file (the map itself is sorted by key).
pub(super) fn entries<'a, 'i>(
    table: &'a DeTable<'i>,
) -> Vec<(&'a Spanned<DeString<'i>>, &'a Value<'i>)> {
    let mut all: Vec<_> = table.iter().collect();
    all.sort_by_key(|(k, _)| k.span().start);
    all
}

/// The candidate nearest to `word`, if it is near enough to be what was meant: a few typos
/// away (fewer than the word has letters), or a longer name that starts with the word.
///
/// The work is bounded: a candidate whose length alone puts it too far is not compared, words
/// over [`SUGGEST_MAX_CHARS`] only by prefix, and each comparison spends its cells from
/// `budget`; with the budget spent there is no suggestion.
pub(super) fn suggest<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
    budget: &mut u64,
) -> Option<&'c str> {
    let len = word.chars().count();
    let near = 1 + len / 3;
    let mut best: Option<(usize, &'c str)> = None;
    for c in candidates {
        let c_len = c.chars().count();
        let d = if len >= 3 && c.starts_with(word) {
            c_len - len // exactly the letters to append
        } else if len > SUGGEST_MAX_CHARS || c_len > SUGGEST_MAX_CHARS || len.abs_diff(c_len) > near
        {
            continue; // at least the difference in length away: too far
        } else {
            let cells = ((len + 1) * (c_len + 1)) as u64;
            let Some(left) = budget.checked_sub(cells) else {
                *budget = 0;
                break;
            };
            *budget = left;
            let d = strsim::osa_distance(word, c);
            if d > near || d >= len {
                continue;
            }
            d
        };
        if !matches!(best, Some((b, _)) if b <= d) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

/// `; did you mean `x`?` or nothing.
pub(super) fn did_you_mean<'c>(
    word: &str,
    candidates: impl IntoIterator<Item = &'c str>,
    budget: &mut u64,
) -> String {
    suggest(word, candidates, budget)
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default()
}

/// `` `a`, `b` or `c` ``.
pub(super) fn list(words: &[&str]) -> String {
    let quoted: Vec<String> = words.iter().map(|w| format!("`{w}`")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.concat(),
    }
}

/// A table key as a header would spell it: bare when it can be, quoted otherwise.
pub(super) fn key_path(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

/// `"[service.x]"` + `probe` → `"[service.x.probe]"`.
pub(super) fn sub_place(place: &str, key: &str) -> String {
    format!("{}.{}]", place.trim_end_matches(']'), key_path(key))
}

const DURATION_EXAMPLE: &str = "write it like \"250ms\", \"5s\", \"5m\" or \"1h 30m\"";
const SIZE_EXAMPLE: &str = "write it like \"4096\", \"64KiB\", \"48MiB\", \"1GiB\" or \"100MB\"";
const MAX_DURATION_TEXT: &str = "the longest is \"100y\" (100 years)";
const MAX_SIZE_TEXT: &str = "the largest is \"1EiB\" (1152921504606846976 bytes)";

impl Ctx {
    /// Records a problem at byte offset `at`.
    pub fn error(&mut self, at: usize, message: impl Into<String>) {
        self.errors.push((at, message.into(), None));
    }

    /// Records a problem at byte offset `at` whose message ends with `hint`, worked out only if
    /// the problem is among those reported.
    pub fn error_with_hint(&mut self, at: usize, message: String, hint: Hint) {
        self.errors.push((at, message, Some(hint)));
    }

    /// `; did you mean `x`?` or nothing, within the suggestion budget.
    pub fn did_you_mean<'c>(
        &mut self,
        word: &str,
        candidates: impl IntoIterator<Item = &'c str>,
    ) -> String {
        did_you_mean(word, candidates, &mut self.suggest_budget)
    }

    /// `` `key` in [place]: message ``.
    pub fn invalid<T>(&mut self, f: Field, message: impl core::fmt::Display) -> Option<T> {
        self.error(f.at(), format!("`{}` in {}: {message}", f.key, f.place));
        None
    }

    /// `` `key` in [place] must be EXPECTED, found TYPE ``.
    pub fn wrong_type<T>(&mut self, f: Field, expected: &str) -> Option<T> {
        let found = f.value.get_ref().type_str();
        self.error(
            f.at(),
            format!(
                "`{}` in {} must be {expected}, found {found}",
                f.key, f.place
            ),
        );
        None
    }

    /// `` `key` in [place]: message `` and then `hint`, if the problem is reported.
    pub fn invalid_with_hint<T>(
        &mut self,
        f: Field,
        message: impl core::fmt::Display,
        hint: Hint,
    ) -> Option<T> {
        let message = format!("`{}` in {}: {message}", f.key, f.place);
        self.error_with_hint(f.at(), message, hint);
        None
    }

    /// An unknown key, with the nearest of `known` suggested, or all of them listed.
    pub fn unknown_key(&mut self, key: &Spanned<DeString>, place: &str, known: &[&'static str]) {
        let message = format!("unknown key `{}` in {place}", key.get_ref());
        let hint = Hint::Among {
            word: key.get_ref().to_string(),
            candidates: known.to_vec(),
            or_list: true,
        };
        self.error_with_hint(key.span().start, message, hint);
    }

    /// A string (never one with a NUL character: no path, name or environment can carry it).
    pub fn string(&mut self, f: Field) -> Option<String> {
        match f.value.get_ref() {
            DeValue::String(s) if s.contains('\0') => self.invalid(
                f,
                "the text contains a NUL character (\\u0000), which no path, name or environment \
                 variable can carry",
            ),
            DeValue::String(s) => Some(s.to_string()),
            _ => self.wrong_type(f, "a string"),
        }
    }

    /// A path: absolute, or relative to the config file's directory (resolved now).
    pub fn path(&mut self, f: Field) -> Option<String> {
        let path = self.string(f)?;
        match self.resolve(&path) {
            Some(p) => Some(p),
            None => self.invalid(
                f,
                format_args!(
                    "`{path}` is not an absolute path, and this config was not read from a file \
                     whose directory it could be taken from; write it from `/`"
                ),
            ),
        }
    }

    /// `path` made absolute against the config file's directory; `None` when it is relative
    /// and there is no directory. Pure string work: nothing is looked up on disk.
    fn resolve(&self, path: &str) -> Option<String> {
        if path.starts_with('/') {
            return Some(path.to_string());
        }
        let base = self.base.as_deref()?;
        let joined = std::path::Path::new(base).join(path);
        let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
        for c in joined.components() {
            match c {
                std::path::Component::CurDir => {}
                std::path::Component::ParentDir => {
                    parts.pop();
                }
                std::path::Component::Normal(p) => parts.push(p),
                std::path::Component::RootDir | std::path::Component::Prefix(_) => {}
            }
        }
        let mut out = String::new();
        for p in parts {
            out.push('/');
            out.push_str(&p.to_string_lossy());
        }
        Some(if out.is_empty() { "/".into() } else { out })
    }

    /// `true` or `false`.
    pub fn boolean(&mut self, f: Field) -> Option<bool> {
        match f.value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => self.wrong_type(f, "`true` or `false`"),
        }
    }

    /// An integer within `range`.
    pub fn integer(&mut self, f: Field, range: RangeInclusive<u64>) -> Option<u64> {
        let DeValue::Integer(i) = f.value.get_ref() else {
            return self.wrong_type(f, "an integer");
        };
        // Too many digits for an i128 is as much too large (or small) as any other.
        let n =
            i128::from_str_radix(i.as_str(), i.radix()).unwrap_or(if i.as_str().starts_with('-') {
                i128::MIN
            } else {
                i128::MAX
            });
        let (low, high) = (i128::from(*range.start()), i128::from(*range.end()));
        let bound = |word: &str| format!("`{i}` is too {word}; use a number from {low} to {high}");
        if n < low {
            self.invalid(f, bound("small"))
        } else if n > high {
            self.invalid(f, bound("large"))
        } else {
            u64::try_from(n).ok()
        }
    }

    /// An integer within `range` that fits a `u32` (`range` must end below `u32::MAX`).
    pub fn integer32(&mut self, f: Field, range: RangeInclusive<u32>) -> Option<u32> {
        let range = u64::from(*range.start())..=u64::from(*range.end());
        self.integer(f, range).and_then(|n| u32::try_from(n).ok())
    }

    /// A humantime duration: `"250ms"`, `"5m"`, `"1h 30m"`.
    pub fn duration(&mut self, f: Field) -> Option<Duration> {
        let DeValue::String(s) = f.value.get_ref() else {
            return self.wrong_type(f, "a duration string such as \"5s\"");
        };
        match humantime::parse_duration(s) {
            Ok(d) if d <= MAX_DURATION => Some(d),
            Ok(_) => self.invalid(f, format_args!("`{s}` is too large; {MAX_DURATION_TEXT}")),
            // humantime says so for a number past its range, and for a fraction of a nanosecond.
            Err(humantime::DurationError::NumberOverflow) if s.contains('.') => self.invalid(
                f,
                format_args!(
                    "`{s}` is too large or finer than a nanosecond; {MAX_DURATION_TEXT}, and the \
                     finest is \"1ns\""
                ),
            ),
            Err(humantime::DurationError::NumberOverflow) => {
                self.invalid(f, format_args!("`{s}` is too large; {MAX_DURATION_TEXT}"))
            }
            Err(_) => self.invalid(
                f,
                format_args!("`{s}` is not a duration; {DURATION_EXAMPLE}"),
            ),
        }
    }

    /// A duration of at least `min` (a sampling period: shorter only burns the CPU).
    pub fn period_at_least(&mut self, f: Field, min: Duration) -> Option<Duration> {
        let d = self.duration(f)?;
        if d >= min {
            return Some(d);
        }
        let s = f.value.get_ref().as_str().unwrap_or_default();
        self.invalid(
            f,
            format_args!(
                "`{s}` is too small; the shortest is \"{}\"",
                humantime::format_duration(min)
            ),
        )
    }

    /// A duration longer than zero (a period, a timeout).
    pub fn period(&mut self, f: Field) -> Option<Duration> {
        match self.duration(f)? {
            Duration::ZERO => self.invalid(f, "must be longer than zero"),
            d => Some(d),
        }
    }

    /// A size in bytes: `4096` or `"4096"`, `"64KiB"`, `"48MiB"`, `"1GiB"`, `"100MB"`.
    pub fn size(&mut self, f: Field) -> Option<u64> {
        match f.value.get_ref() {
            DeValue::Integer(_) => self.integer(f, 0..=MAX_SIZE),
            DeValue::String(s) => match parse_size(s) {
                Ok(n) => Some(n),
                Err(SizeError::TooLarge) => {
                    self.invalid(f, format_args!("`{s}` is too large; {MAX_SIZE_TEXT}"))
                }
                Err(SizeError::NotASize) => {
                    self.invalid(f, format_args!("`{s}` is not a size; {SIZE_EXAMPLE}"))
                }
            },
            _ => self.wrong_type(f, "a size such as \"48MiB\""),
        }
    }

    /// `memory-max`: a percentage of RAM (`"90%"`, `"12.5%"`) or a size.
    pub fn memory_limit(&mut self, f: Field) -> Option<MemoryLimit> {
        let Some(pct) = f.value.get_ref().as_str().and_then(|s| s.strip_suffix('%')) else {
            return self.size(f).map(MemoryLimit::Bytes);
        };
        match parse_per_mille(pct.trim()) {
            Some(pm) if (1..=1000).contains(&pm) => Some(MemoryLimit::PerMille(pm)),
            _ => self.invalid(
                f,
                format_args!(
                    "`{pct}%` is not a percentage of RAM; write one above 0 and at most 100, \
                     with at most one decimal, like \"90%\" or \"12.5%\""
                ),
            ),
        }
    }

    /// A command line: a non-empty array of strings, the program first.
    pub fn argv(&mut self, f: Field) -> Option<Vec<String>> {
        const EXPECTED: &str =
            "a command line, an array of strings like [\"/usr/sbin/ntpd\", \"-n\"]";
        let Some(items) = f.value.get_ref().as_array() else {
            return self.wrong_type(f, EXPECTED);
        };
        let argv: Vec<Option<String>> = items
            .iter()
            .map(|item| match item.get_ref() {
                DeValue::String(s) => Some(s.to_string()),
                _ => self.wrong_type(f.with(item), EXPECTED),
            })
            .collect();
        let argv: Vec<String> = argv.into_iter().collect::<Option<_>>()?;
        match argv.first() {
            None => self.invalid(
                f,
                "the command line is empty; give the program and its arguments, \
                 like [\"/usr/sbin/ntpd\", \"-n\"]",
            ),
            Some(program) if program.is_empty() => self.invalid(f, "the program name is empty"),
            Some(_) if argv.iter().any(|a| a.contains('\0')) => self.invalid(
                f,
                "the command line contains a NUL character (\\u0000), which no program can be given",
            ),
            // A program named with a `/` is a path, relative to the config file's directory; a
            // bare name is looked up in `PATH` when it is started.
            Some(program) if program.contains('/') => match self.resolve(program) {
                Some(p) => Some([vec![p], argv[1..].to_vec()].concat()),
                None => self.invalid(
                    f,
                    format_args!(
                        "`{program}` is a relative path, and this config was not read from a \
                         file whose directory it could be taken from; write it from `/`"
                    ),
                ),
            },
            Some(_) => Some(argv),
        }
    }

    /// An array of strings, each checked by `item`; `what` names them in messages
    /// (`service names`, `absolute paths`). The good items are kept even when others are bad,
    /// so that they can still be checked (the bad ones have made the config an error).
    pub fn array<T>(
        &mut self,
        f: Field,
        what: &str,
        mut item: impl FnMut(&mut Ctx, Field) -> Option<T>,
    ) -> Option<Vec<T>> {
        let Some(items) = f.value.get_ref().as_array() else {
            return self.wrong_type(f, &format!("an array of {what}"));
        };
        let mut out = Vec::with_capacity(items.len());
        for element in items.iter() {
            let element = f.with(element);
            if !element.value.get_ref().is_str() {
                self.wrong_type::<()>(element, &format!("an array of {what}"));
            } else if let Some(v) = item(self, element) {
                out.push(v);
            }
        }
        Some(out)
    }

    /// A signal name: `"HUP"`, `"SIGUSR1"`.
    pub fn signal(&mut self, f: Field) -> Option<Signal> {
        let name = self.string(f)?;
        match Signal::from_name(&name) {
            Some(sig) => Some(sig),
            None => {
                let names: Vec<&'static str> = Signal::ALL.iter().map(|s| s.name()).collect();
                let message = format!("`{name}` is not a signal; use one of {}", list(&names));
                let hint = Hint::Among {
                    word: name.to_ascii_uppercase(),
                    candidates: names,
                    or_list: false,
                };
                self.invalid_with_hint(f, message, hint)
            }
        }
    }

    /// One of a few words, e.g. `"exit"` or `"condition"`.
    pub fn choice<T: Clone>(&mut self, f: Field, options: &[(&'static str, T)]) -> Option<T> {
        let names: Vec<&'static str> = options.iter().map(|(n, _)| *n).collect();
        let expected = format!("one of {}", list(&names));
        let word = f.value.get_ref().as_str();
        let Some(word) = word else {
            return self.wrong_type(f, &expected);
        };
        match options.iter().find(|(n, _)| *n == word) {
            Some((_, v)) => Some(v.clone()),
            None => {
                let hint = Hint::Among {
                    word: word.to_string(),
                    candidates: names,
                    or_list: false,
                };
                self.invalid_with_hint(f, format_args!("`{word}` is not {expected}"), hint)
            }
        }
    }

    /// A table (inline or not).
    pub fn table<'a, 'i>(&mut self, f: Field<'a, 'i>, expected: &str) -> Option<&'a DeTable<'i>> {
        match f.value.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => self.wrong_type(f, expected),
        }
    }

    /// Exactly one of `choices` in a table at `place`: reports none or several, and returns the
    /// first. Keys outside `choices` are left to the caller.
    pub fn one_of<'a, 'i>(
        &mut self,
        table: &'a DeTable<'i>,
        at: usize,
        place: &str,
        choices: &[&str],
    ) -> Option<(&'a Spanned<DeString<'i>>, &'a Value<'i>)> {
        let found: Vec<_> = entries(table)
            .into_iter()
            .filter(|(k, _)| choices.contains(&k.get_ref().as_ref()))
            .collect();
        match found.as_slice() {
            [] => {
                self.error(at, format!("{place} needs one of {}", list(choices)));
                None
            }
            [first, rest @ ..] => {
                for (k, _) in rest {
                    let message = format!(
                        "{place} has both `{}` and `{}`; give only one of {}",
                        first.0.get_ref(),
                        k.get_ref(),
                        list(choices)
                    );
                    self.error(k.span().start, message);
                }
                Some(*first)
            }
        }
    }

    /// A table that holds exactly one of `choices` and nothing else; `read` reads that one.
    pub fn single<'a, 'i, T>(
        &mut self,
        f: Field<'a, 'i>,
        choices: &[&'static str],
        read: impl FnOnce(&mut Ctx, Field<'_, 'i>) -> Option<T>,
    ) -> Option<T> {
        let choice_list = choices
            .iter()
            .map(|c| format!("{c} = …"))
            .collect::<Vec<_>>();
        let table = self.table(f, &format!("a table {{ {} }}", choice_list.join(" | ")))?;
        let place = sub_place(f.place, f.key);
        for (k, _) in entries(table) {
            if !choices.contains(&k.get_ref().as_ref()) {
                self.unknown_key(k, &place, choices);
            }
        }
        let (key, value) = self.one_of(table, f.at(), &place, choices)?;
        read(self, Field::new(key.get_ref(), &place, value))
    }

    /// A readiness or probe check: `run`, `tcp`, `unix` or `file`.
    pub fn check(&mut self, f: Field) -> Option<Check> {
        match f.key {
            "run" => self.argv(f).map(Check::Run),
            "tcp" => self.host_port(f).map(Check::Tcp),
            "unix" => self.path(f).map(Check::Unix),
            _ => self.path(f).map(Check::File),
        }
    }

    /// `"host:port"`.
    pub fn host_port(&mut self, f: Field) -> Option<String> {
        let s = self.string(f)?;
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Some(s),
            _ => self.invalid(
                f,
                format_args!(
                    "`{s}` is not host:port; write it like \"127.0.0.1:53\" or \"[::1]:53\""
                ),
            ),
        }
    }

    /// `reload = { signal = "HUP" }` or `{ run = [argv…] }`.
    pub fn action(&mut self, f: Field) -> Option<Action> {
        self.single(f, &["signal", "run"], |cx, f| match f.key {
            "signal" => cx.signal(f).map(Action::Signal),
            _ => cx.argv(f).map(Action::Run),
        })
    }

    /// One heal: `"restart"`, `"reload"`, `"kill"`, `"link-up"`, `{ signal = … }`,
    /// `{ run = [argv…] }`.
    pub fn heal(&mut self, f: Field) -> Option<Heal> {
        const WORDS: [(&str, Heal); 4] = [
            ("restart", Heal::Restart),
            ("reload", Heal::Reload),
            ("kill", Heal::Kill),
            ("link-up", Heal::LinkUp),
        ];
        match f.value.get_ref() {
            DeValue::String(_) => self.choice(f, &WORDS),
            DeValue::Table(_) => self.single(f, &["signal", "run"], |cx, f| match f.key {
                "signal" => cx.signal(f).map(Heal::Signal),
                _ => cx.argv(f).map(Heal::Run),
            }),
            _ => self.wrong_type(
                f,
                "a heal (\"restart\", \"reload\", \"kill\", \"link-up\", { signal = \"USR1\" } \
                 or { run = [...] }) or an array of them",
            ),
        }
    }

    /// `heal =`: one heal or an escalation ladder of them, with the value of each rung.
    pub fn heals<'a, 'i>(&mut self, f: Field<'a, 'i>) -> Option<Vec<(Heal, &'a Value<'i>)>> {
        let rungs: Vec<&Value> = match f.value.get_ref() {
            DeValue::Array(items) => items.iter().collect(),
            _ => vec![f.value],
        };
        let heals: Vec<_> = rungs
            .into_iter()
            .map(|v| Some((self.heal(f.with(v))?, v)))
            .collect();
        heals.into_iter().collect()
    }

    /// `env = { K = "v" }`.
    pub fn env(&mut self, f: Field) -> Option<BTreeMap<String, String>> {
        let table = self.table(f, "a table of strings, like { TZ = \"UTC\" }")?;
        let place = sub_place(f.place, f.key);
        let mut env = BTreeMap::new();
        let mut ok = true;
        for (k, v) in entries(table) {
            let var = Field::new(k.get_ref(), &place, v);
            if k.get_ref().is_empty() || k.get_ref().contains('=') {
                self.error(
                    k.span().start,
                    format!("`{}` in {place} is not a variable name", k.get_ref()),
                );
                ok = false;
            } else if let Some(value) = self.string(var) {
                env.insert(k.get_ref().to_string(), value);
            } else {
                ok = false;
            }
        }
        ok.then_some(env)
    }
}

/// Why a string is not a size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SizeError {
    /// Not written like one.
    NotASize,
    /// Written like one, but above [`MAX_SIZE`].
    TooLarge,
}

/// `"4096"`, `"64KiB"`, `"1.5GiB"`, `"100MB"` → bytes, at most [`MAX_SIZE`].
pub(super) fn parse_size(s: &str) -> Result<u64, SizeError> {
    const UNITS: [(&str, u64); 11] = [
        ("", 1),
        ("b", 1),
        ("kb", 1000),
        ("kib", 1 << 10),
        ("mb", 1_000_000),
        ("mib", 1 << 20),
        ("gb", 1_000_000_000),
        ("gib", 1 << 30),
        ("tib", 1 << 40),
        ("pib", 1 << 50),
        ("eib", 1 << 60),
    ];
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let scale = u128::from(
        UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .ok_or(SizeError::NotASize)?
            .1,
    );
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || !frac.bytes().all(|c| c.is_ascii_digit()) || frac.len() > 9 {
        return Err(SizeError::NotASize);
    }
    // Saturating: any number of digits is read, and anything past the ceiling is too large.
    let digits = |d: &str| {
        d.bytes().fold(0u128, |n, c| {
            n.saturating_mul(10).saturating_add(u128::from(c - b'0'))
        })
    };
    let fraction = digits(frac) * scale / 10u128.pow(frac.len() as u32);
    let bytes = digits(whole).saturating_mul(scale).saturating_add(fraction);
    match u64::try_from(bytes) {
        Ok(n) if n <= MAX_SIZE => Ok(n),
        _ => Err(SizeError::TooLarge),
    }
}

/// `"90"` → 900, `"12.5"` → 125 (per mille); at most one decimal.
pub(super) fn parse_per_mille(s: &str) -> Option<u32> {
    let (whole, tenth) = s.split_once('.').unwrap_or((s, "0"));
    let digits = |d: &str| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit());
    if !digits(whole) || !digits(tenth) || tenth.len() != 1 {
        return None;
    }
    whole
        .parse::<u32>()
        .ok()?
        .checked_mul(10)?
        .checked_add(tenth.parse().ok()?)
}
