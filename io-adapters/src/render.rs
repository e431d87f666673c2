//! Templates (DESIGN §9): the engine, the router filters, and the rules for writing a target.
//!
//! The engine is MiniJinja without its optional parts (`default-features = false`: no built-in
//! filters, no `include`, no macros); the README says why it was chosen and what it costs.
//! Undefined is strict: a missing variable or attribute fails the render, it never renders
//! empty. The filters are medic's own:
//!
//! * `subnet(new_len, index)` on a prefix (`"2001:db8:1200::/56"` or `{address, length}`):
//!   the `index`-th subnet of length `new_len` (`subnet(64, 1)` → `2001:db8:1200:1::/64`: the
//!   256 /64s of a /56 are numbered in its fourth group);
//! * `host(n)` on a prefix: its `n`-th address (`host(1)` → `2001:db8:1200:1::1`);
//! * `join(sep = "")`: a list's items as text, `sep` between them.
//!
//! Writing ([`stage`], [`commit`], [`discard`]): each target whose bytes change gets a
//! candidate file beside it (same directory, so the rename is atomic), written, given its mode,
//! owner and group, and fsynced; after every `check` passed (the runtime runs them), the
//! candidates are renamed over their targets and the directories fsynced. A target whose bytes
//! are already right is not touched. Nothing here runs on the daemon's loop: the runtime calls
//! [`stage`] and [`commit`] on a thread of their own.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use medic_kernel::config::{Template, TemplateSource};
use medic_kernel::{Outputs, Value};
use minijinja::value::Value as Jinja;
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior};
use serde::ser::{Serialize, Serializer};

/// A `source` file (or a target read for comparison) larger than this fails the render.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// A rendered file larger than this fails the render (a loop gone wrong must not fill `/run`).
pub const MAX_RENDERED_BYTES: usize = 1 << 20;
/// How long a template's `check` may run before it is killed and the render fails.
pub const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How much of what a template's `check` printed (stdout and stderr, as they came) a failed
/// render keeps in its reason: the last this many bytes, where a checker says what it refused.
pub const CHECK_OUTPUT_BYTES: usize = 4096;
/// The filters medic adds (MiniJinja's own are left out).
pub const FILTERS: [&str; 3] = ["subnet", "host", "join"];

/// The environment every template is rendered in: strict undefined, no auto-escaping (these
/// are config files, not HTML), medic's filters.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.add_filter("subnet", subnet);
    env.add_filter("host", host);
    env.add_filter("join", join);
    // Replaced, for a template that names its `secrets`, by one that gives their values.
    env.add_function("secret", |name: String| -> Result<String, Error> {
        Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("secret(\"{name}\"): name it in the template's `secrets = [...]` first"),
        ))
    });
    env
}

// ----- the filters ----------------------------------------------------------------------------

/// A prefix: an address and a length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Prefix {
    addr: IpAddr,
    len: u32,
}

impl Prefix {
    fn bits(&self) -> u32 {
        match self.addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        }
    }

    fn number(&self) -> u128 {
        match self.addr {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        }
    }

    fn address(&self, n: u128) -> IpAddr {
        match self.addr {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(n as u32)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
        }
    }

    /// The network number: host bits cleared.
    fn network(&self) -> u128 {
        let host_bits = self.bits() - self.len;
        if host_bits >= 128 {
            0
        } else {
            (self.number() >> host_bits) << host_bits
        }
    }
}

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, message)
}

/// Reads `addr/len` text or an `{address, length}` map.
fn prefix(value: &Jinja) -> Result<Prefix, Error> {
    let (addr, len) = if let Some(text) = value.as_str() {
        let (addr, len) = text
            .split_once('/')
            .ok_or_else(|| invalid(format!("`{text}` is not a prefix like 2001:db8::/56")))?;
        (addr.to_string(), len.to_string())
    } else {
        let addr = value.get_attr("address")?;
        let len = value.get_attr("length")?;
        if addr.is_undefined() || len.is_undefined() {
            return Err(invalid(format!(
                "{value} is not a prefix: give `addr/len` text or a map with address and length"
            )));
        }
        (addr.to_string(), len.to_string())
    };
    let parsed: IpAddr = addr
        .parse()
        .map_err(|_| invalid(format!("`{addr}` is not an IP address")))?;
    let len: u32 = len
        .parse()
        .map_err(|_| invalid(format!("`{len}` is not a prefix length")))?;
    let p = Prefix { addr: parsed, len };
    if len > p.bits() {
        return Err(invalid(format!(
            "/{len} is longer than an address ({} bits)",
            p.bits()
        )));
    }
    Ok(p)
}

/// `subnet(new_len, index)`: the `index`-th subnet of length `new_len` inside the prefix.
fn subnet(value: Jinja, new_len: i64, index: i64) -> Result<String, Error> {
    let p = prefix(&value)?;
    let bits = p.bits();
    let new_len = u32::try_from(new_len)
        .ok()
        .filter(|n| (p.len..=bits).contains(n))
        .ok_or_else(|| {
            invalid(format!(
                "subnet({new_len}, …) of a /{}: the new length must be from {} to {bits}",
                p.len, p.len
            ))
        })?;
    let count_bits = new_len - p.len;
    let index = u128::try_from(index)
        .ok()
        .filter(|i| count_bits >= 128 || *i >> count_bits == 0);
    let Some(index) = index else {
        return Err(invalid(format!(
            "subnet(…, index) of a /{} into /{new_len}s: the index must be from 0 to 2^{count_bits} - 1",
            p.len
        )));
    };
    let host_bits = bits - new_len;
    let shifted = if host_bits >= 128 {
        0
    } else {
        index << host_bits
    };
    Ok(format!("{}/{new_len}", p.address(p.network() | shifted)))
}

/// `host(n)`: the `n`-th address of the prefix (0 is the network's own number).
fn host(value: Jinja, n: i64) -> Result<String, Error> {
    let p = prefix(&value)?;
    let host_bits = p.bits() - p.len;
    let n = u128::try_from(n)
        .ok()
        .filter(|n| host_bits >= 128 || *n >> host_bits == 0);
    let Some(n) = n else {
        return Err(invalid(format!(
            "host(n) of a /{}: n must be from 0 to 2^{host_bits} - 1",
            p.len
        )));
    };
    Ok(p.address(p.network() | n).to_string())
}

/// `join(sep = "")`: the items of a list as text, `sep` between them.
fn join(value: Jinja, sep: Option<String>) -> Result<String, Error> {
    let sep = sep.unwrap_or_default();
    let mut text = String::new();
    for (i, item) in value.try_iter()?.enumerate() {
        if i > 0 {
            text.push_str(&sep);
        }
        text.push_str(&item.to_string());
    }
    Ok(text)
}

// ----- the variables --------------------------------------------------------------------------

/// An output value as plain data: a string, a sequence or a map (the kernel's enum would
/// otherwise show its variant names to the template).
struct Plain<'a>(&'a Value);

impl Serialize for Plain<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::String(text) => s.serialize_str(text),
            Value::List(items) => s.collect_seq(items.iter().map(Plain)),
            Value::Map(map) => s.collect_map(map.iter().map(|(k, v)| (k, Plain(v)))),
        }
    }
}

/// The variables of a render: each service read, by name, with its outputs.
fn variables(outputs: &BTreeMap<String, Outputs>) -> Jinja {
    let plain: BTreeMap<&str, BTreeMap<&str, Plain>> = outputs
        .iter()
        .map(|(service, map)| {
            let map = map.iter().map(|(k, v)| (k.as_str(), Plain(v))).collect();
            (service.as_str(), map)
        })
        .collect();
    Jinja::from_serialize(&plain)
}

/// Renders one template text with `outputs`; the error is MiniJinja's, with its line.
pub fn render_text(
    env: &Environment<'static>,
    text: &str,
    outputs: &BTreeMap<String, Outputs>,
) -> Result<String, String> {
    render_with(env, text, outputs, describe)
}

/// [`render_text`], its errors worded by `describe`.
fn render_with(
    env: &Environment<'static>,
    text: &str,
    outputs: &BTreeMap<String, Outputs>,
    describe: fn(&minijinja::Error) -> String,
) -> Result<String, String> {
    let template = env.template_from_str(text).map_err(|e| describe(&e))?;
    let rendered = template.render(variables(outputs)).map_err(|e| {
        // MiniJinja does not say which value was undefined: name the first path the template
        // reads that the outputs do not have (`waiting for dhcp6.prefixes`).
        let mut missing: Vec<String> = template
            .undeclared_variables(true)
            .into_iter()
            .filter(|path| !resolves(outputs, path))
            .collect();
        missing.sort();
        match missing.first() {
            Some(path) if e.kind() == ErrorKind::UndefinedError => {
                format!("waiting for {path} ({})", describe(&e))
            }
            _ => describe(&e),
        }
    })?;
    if rendered.len() > MAX_RENDERED_BYTES {
        return Err(format!("renders over {MAX_RENDERED_BYTES} bytes"));
    }
    Ok(rendered)
}

/// Whether the dotted `path` (`dhcp6.ipv6.prefixes`) leads to a value in `outputs`.
fn resolves(outputs: &BTreeMap<String, Outputs>, path: &str) -> bool {
    let mut parts = path.split('.');
    let Some(map) = parts.next().and_then(|service| outputs.get(service)) else {
        return false;
    };
    let Some(mut value) = parts.next().map(|key| map.get(key)) else {
        return true; // the service itself
    };
    for part in parts {
        value = match value {
            Some(Value::Map(m)) => m.get(part),
            // A list indexed further, or a string's attribute: not a path medic can follow.
            Some(_) => return true,
            None => return false,
        };
    }
    value.is_some()
}

/// MiniJinja's error in one line, with its line number and cause.
fn describe(e: &Error) -> String {
    let mut text = match e.detail() {
        Some(detail) => format!("{}: {detail}", e.kind()),
        None => e.kind().to_string(),
    };
    if let Some(line) = e.line() {
        text = format!("line {line}: {text}");
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Checks a template's syntax, that every filter it names is one medic has, and that every
/// variable it reads is one of `readable` (the services in `needs` and `uses`): `Err` says
/// what and on which line (for `medic check`). Filters are found by reading the tags: after
/// a `|` outside a string literal comes a filter's name.
pub fn check_text(text: &str, readable: &[String]) -> Result<(), String> {
    let env = environment();
    let template = env.template_from_str(text).map_err(|e| describe(&e))?;
    let mut unknown: Vec<String> = template
        .undeclared_variables(false)
        .into_iter()
        .filter(|v| !readable.contains(v))
        .collect();
    unknown.sort();
    if let Some(name) = unknown.first() {
        return Err(format!(
            "`{name}` is not a service it needs or uses (add it to `needs` or `uses`)"
        ));
    }
    for (line, name) in filters_named(text) {
        if !FILTERS.contains(&name.as_str()) {
            return Err(format!(
                "line {line}: unknown filter `{name}`; medic's filters are {}",
                FILTERS.join(", ")
            ));
        }
    }
    Ok(())
}

/// Every `| name` inside `{{ … }}` and `{% … %}`, with its 1-based line.
fn filters_named(text: &str) -> Vec<(usize, String)> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let (mut i, mut line) = (0, 1);
    let mut in_tag = false;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\n' {
            line += 1;
        }
        let next = bytes.get(i + 1).copied();
        if !in_tag {
            if b == b'{' && matches!(next, Some(b'{') | Some(b'%')) {
                in_tag = true;
                i += 1;
            }
        } else if let Some(q) = quote {
            if b == b'\\' {
                i += 1;
            } else if b == q {
                quote = None;
            }
        } else if b == b'"' || b == b'\'' {
            quote = Some(b);
        } else if matches!(b, b'}' | b'%') && next == Some(b'}') {
            in_tag = false;
            i += 1;
        } else if b == b'|' {
            let rest = &text[i + 1..];
            let name: String = rest
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push((line, name));
            }
        }
        i += 1;
    }
    found
}

// ----- checks ---------------------------------------------------------------------------------

/// The last [`CHECK_OUTPUT_BYTES`] of what a `check` printed, and whether more came before.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CheckOutput {
    tail: std::collections::VecDeque<u8>,
    cut: bool,
}

impl CheckOutput {
    /// Appends `bytes`, dropping the oldest beyond [`CHECK_OUTPUT_BYTES`].
    pub fn push(&mut self, bytes: &[u8]) {
        self.tail.extend(bytes);
        let over = self.tail.len().saturating_sub(CHECK_OUTPUT_BYTES);
        if over > 0 {
            self.tail.drain(..over);
            self.cut = true;
        }
    }

    /// What it said, for a failure's reason: one line (its lines trimmed, the empty ones left
    /// out, the rest joined with ` / `) of at most [`CHECK_OUTPUT_BYTES`], `…` first when
    /// older output was dropped; empty when it said nothing.
    pub fn said(&self) -> String {
        let mut bytes: Vec<u8> = self.tail.iter().copied().collect();
        if self.cut {
            // The cut may have split a character: its remaining bytes are not text.
            let partial = bytes.iter().take_while(|&&b| b & 0xc0 == 0x80).count();
            bytes.drain(..partial);
        }
        let text = String::from_utf8_lossy(&bytes);
        let mut lines: std::collections::VecDeque<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let mut cut = self.cut;
        // The separators take room too: whole lines go first, the oldest first.
        let mut length = lines.iter().map(|l| l.len() + 3).sum::<usize>();
        while length > CHECK_OUTPUT_BYTES + 3 && lines.len() > 1 {
            length -= lines.pop_front().map_or(0, |l| l.len() + 3);
            cut = true;
        }
        let mut said = Vec::from(lines).join(" / ");
        if said.len() > CHECK_OUTPUT_BYTES {
            let mut start = said.len() - CHECK_OUTPUT_BYTES;
            while !said.is_char_boundary(start) {
                start += 1;
            }
            said.drain(..start);
            cut = true;
        }
        match (said.is_empty(), cut) {
            (true, _) => String::new(),
            (false, false) => said,
            (false, true) => format!("…{said}"),
        }
    }
}

/// The reason a render failed on a `check`: `what` (`check of TARGET (PROGRAM)`), how it
/// ended, and what it said.
pub fn check_failed(what: &str, ended: &str, output: &CheckOutput) -> String {
    match output.said() {
        said if said.is_empty() => format!("{what}: {ended}, saying nothing"),
        said => format!("{what}: {ended}, saying: {said}"),
    }
}

// ----- writing --------------------------------------------------------------------------------

/// A rendered file waiting for its checks, beside its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The target, as the config names it.
    pub target: String,
    /// The candidate file.
    pub temp: PathBuf,
    /// The `check`, with `{file}` already replaced by the candidate's path.
    pub check: Option<Vec<String>>,
}

/// Reads a file up to [`MAX_FILE_BYTES`]; `None` when it does not exist.
fn read_limited(path: &Path) -> io::Result<Option<Vec<u8>>> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(io::Error::other(format!("over {MAX_FILE_BYTES} bytes")));
    }
    Ok(Some(bytes))
}

/// Where the copies of secrets come from (DESIGN §10): the store's directory and the
/// generation of each secret the kernel named.
#[derive(Clone, Debug, Default)]
pub struct SecretFiles {
    /// `secrets-dir`.
    pub dir: PathBuf,
    /// The generation of each secret, by name.
    pub generations: BTreeMap<String, u64>,
}

impl SecretFiles {
    /// The generation the kernel named of secret `name`, and its bytes from the store. An
    /// error says only the name and generation: never the bytes.
    fn read(&self, name: &str) -> Result<(u64, Vec<u8>), String> {
        let generation = *self
            .generations
            .get(name)
            .ok_or_else(|| format!("waiting for secret {name}"))?;
        let path = crate::secrets::path_of(&self.dir, name, generation);
        let bytes = read_limited(&path)
            .map_err(|e| format!("cannot read secret {name} generation {generation}: {e}"))?
            .ok_or_else(|| {
                format!("secret {name} generation {generation} is no longer in the store")
            })?;
        Ok((generation, bytes))
    }
}

/// [`stage_with`] for templates that copy no secret.
pub fn stage(
    templates: &[Template],
    outputs: &BTreeMap<String, Outputs>,
    tag: u64,
) -> Result<Vec<Candidate>, String> {
    stage_with(templates, outputs, &SecretFiles::default(), tag)
}

/// Renders every template (a secret's copy: reads its bytes from the store) and writes a
/// candidate for each target whose bytes change. On any failure the candidates already written
/// are removed and nothing else is touched; `Err` says which target and why (never a secret's
/// bytes). `tag` makes the candidates' names unique (the render's job).
pub fn stage_with(
    templates: &[Template],
    outputs: &BTreeMap<String, Outputs>,
    secrets: &SecretFiles,
    tag: u64,
) -> Result<Vec<Candidate>, String> {
    let env = environment();
    let mut staged = Vec::new();
    for t in templates {
        match stage_one(&env, t, outputs, secrets, tag) {
            Ok(Some(c)) => staged.push(c),
            Ok(None) => {}
            Err(why) => {
                discard(&staged);
                return Err(format!("{}: {why}", t.target));
            }
        }
    }
    Ok(staged)
}

fn stage_one(
    env: &Environment<'static>,
    t: &Template,
    outputs: &BTreeMap<String, Outputs>,
    secrets: &SecretFiles,
    tag: u64,
) -> Result<Option<Candidate>, String> {
    let text = match &t.source {
        TemplateSource::Text(text) => text.clone(),
        TemplateSource::File(path) => {
            let bytes = read_limited(Path::new(path))
                .map_err(|e| format!("cannot read {path}: {e}"))?
                .ok_or_else(|| format!("{path} does not exist"))?;
            String::from_utf8(bytes).map_err(|_| format!("{path} is not UTF-8 text"))?
        }
        TemplateSource::Secret(name) => {
            let (_, bytes) = secrets.read(name)?;
            return write_if_changed(bytes, t, tag);
        }
    };
    if t.secrets.is_empty() {
        let rendered = render_text(env, &text, outputs)?;
        return write_if_changed(rendered.into_bytes(), t, tag);
    }
    // A template that reads secrets: `secret("NAME")` gives the bytes of each it names, as
    // text. What it says when it fails may quote a value it was given, so no more than the
    // line and the kind of error is said (never a secret's bytes).
    let mut values = BTreeMap::new();
    for name in &t.secrets {
        let (generation, bytes) = secrets.read(name)?;
        let text = String::from_utf8(bytes).map_err(|_| {
            format!("secret {name} generation {generation} is not UTF-8 text: a template cannot read it (copy it with [service.X.secret.{name}])")
        })?;
        values.insert(name.clone(), text);
    }
    let mut env = env.clone();
    let values = std::sync::Arc::new(values);
    env.add_function(
        "secret",
        move |name: String| -> Result<String, minijinja::Error> {
            values.get(&name).cloned().ok_or_else(|| {
                minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("secret(\"{name}\"): not one of this template's `secrets`"),
                )
            })
        },
    );
    let rendered = render_with(&env, &text, outputs, describe_without_values)?;
    write_if_changed(rendered.into_bytes(), t, tag)
}

/// A render error of a template that reads secrets: its kind and line, never its message
/// (which may quote a value, a secret's among them).
fn describe_without_values(e: &minijinja::Error) -> String {
    let kind = match e.kind() {
        ErrorKind::UndefinedError => "a variable or attribute is undefined",
        ErrorKind::SyntaxError => "syntax error",
        ErrorKind::UnknownFilter => "unknown filter",
        ErrorKind::UnknownFunction => "unknown function",
        ErrorKind::InvalidOperation => "invalid operation",
        ErrorKind::MissingArgument | ErrorKind::TooManyArguments => "wrong number of arguments",
        ErrorKind::CannotUnpack | ErrorKind::BadSerialization => "a value of the wrong kind",
        _ => "render error",
    };
    match e.line() {
        Some(line) => {
            format!("line {line}: {kind} (details withheld: this template reads secrets)")
        }
        None => format!("{kind} (details withheld: this template reads secrets)"),
    }
}

/// A candidate for `t`'s target holding `bytes`, unless the target already holds them.
fn write_if_changed(bytes: Vec<u8>, t: &Template, tag: u64) -> Result<Option<Candidate>, String> {
    let target = Path::new(&t.target);
    // A target that cannot be read is replaced: what it holds is not known to be right.
    if read_limited(target).ok().flatten().as_deref() == Some(bytes.as_slice()) {
        return Ok(None);
    }
    let dir = target
        .parent()
        .ok_or_else(|| "the target has no directory".to_string())?;
    let name = target
        .file_name()
        .ok_or_else(|| "the target has no file name".to_string())?
        .to_string_lossy();
    // `/run` is a tmpfs: the directory of a target there is gone after every boot.
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let temp = dir.join(format!(".{name}.medic-{tag}"));
    write_candidate(&temp, &bytes, t).map_err(|e| {
        let _ = fs::remove_file(&temp);
        format!("cannot write {}: {e}", temp.display())
    })?;
    let file = temp.display().to_string();
    let check = t.check.as_ref().map(|argv| {
        argv.iter()
            .map(|arg| arg.replace("{file}", &file))
            .collect()
    });
    Ok(Some(Candidate {
        target: t.target.clone(),
        temp,
        check,
    }))
}

fn write_candidate(temp: &Path, bytes: &[u8], t: &Template) -> io::Result<()> {
    let _ = fs::remove_file(temp); // left by a render that died half-way
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)?;
    file.write_all(bytes)?;
    let uid = match &t.owner {
        Some(owner) => Some(
            crate::users::user(owner)
                .ok_or_else(|| io::Error::other(format!("no user `{owner}`")))?
                .uid,
        ),
        None => None,
    };
    let gid = match &t.group {
        Some(group) => Some(
            crate::users::group(group)
                .ok_or_else(|| io::Error::other(format!("no group `{group}`")))?,
        ),
        None => None,
    };
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::fchown(&file, uid, gid)?;
    }
    // After chown, which may clear set-id bits; explicitly, whatever the umask.
    file.set_permissions(fs::Permissions::from_mode(t.mode))?;
    file.sync_all()
}

/// Renames every candidate over its target, then fsyncs their directories. Returns the
/// targets replaced.
pub fn commit(candidates: &[Candidate]) -> io::Result<Vec<String>> {
    let mut done = Vec::new();
    for c in candidates {
        if let Err(e) = fs::rename(&c.temp, &c.target) {
            discard(&candidates[done.len()..]);
            return Err(io::Error::other(format!(
                "cannot replace {}: {e}",
                c.target
            )));
        }
        done.push(c.target.clone());
        if let Some(dir) = Path::new(&c.target).parent() {
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
    }
    Ok(done)
}

/// Removes the candidates (a check failed, or another template did): the targets stay.
pub fn discard(candidates: &[Candidate]) {
    for c in candidates {
        let _ = fs::remove_file(&c.temp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medic_kernel::config::OnChange;

    fn filter(expr: &str) -> Result<String, String> {
        let env = environment();
        render_text(&env, &format!("{{{{ {expr} }}}}"), &BTreeMap::new())
    }

    #[test]
    fn subnet_and_host_on_v6_and_v4() {
        // A /56 holds 256 /64s: they differ in the last 8 bits of the fourth group. (DESIGN
        // §9's example, `2001:db8:1201::/64`, is what a /40 gives: its /48 number 1.)
        assert_eq!(
            filter(r#""2001:db8:1200::/56" | subnet(64, 1)"#).unwrap(),
            "2001:db8:1200:1::/64"
        );
        assert_eq!(
            filter(r#""2001:db8:1200::/56" | subnet(64, 255)"#).unwrap(),
            "2001:db8:1200:ff::/64"
        );
        assert_eq!(
            filter(r#""2001:db8:1200::/48" | subnet(56, 1)"#).unwrap(),
            "2001:db8:1200:100::/56"
        );
        assert_eq!(
            filter(r#""2001:db8:1200::/40" | subnet(48, 1)"#).unwrap(),
            "2001:db8:1201::/48"
        );
        assert_eq!(
            filter(r#""2001:db8:1201::/64" | host(1)"#).unwrap(),
            "2001:db8:1201::1"
        );
        assert_eq!(
            filter(r#""10.0.0.0/16" | subnet(24, 3)"#).unwrap(),
            "10.0.3.0/24"
        );
        assert_eq!(
            filter(r#""10.0.3.0/24" | host(254)"#).unwrap(),
            "10.0.3.254"
        );
        // Host bits in the given prefix are cleared first.
        assert_eq!(filter(r#""10.0.3.77/24" | host(1)"#).unwrap(), "10.0.3.1");
        assert_eq!(
            filter(r#""2001:db8:1200::/56" | subnet(56, 0)"#).unwrap(),
            "2001:db8:1200::/56"
        );
        assert_eq!(filter(r#""::/0" | subnet(1, 1)"#).unwrap(), "8000::/1");
        assert_eq!(filter(r#""0.0.0.0/0" | host(1)"#).unwrap(), "0.0.0.1");
    }

    #[test]
    fn a_prefix_may_be_a_map_of_address_and_length() {
        let mut outputs = BTreeMap::new();
        let prefix = Value::Map(
            [
                (
                    "address".to_string(),
                    Value::String("2001:db8:1200::".into()),
                ),
                ("length".to_string(), Value::String("56".into())),
            ]
            .into(),
        );
        outputs.insert(
            "dhcp6".to_string(),
            Outputs::from([("prefixes".to_string(), Value::List(vec![prefix]))]),
        );
        let env = environment();
        let text = "{{ dhcp6.prefixes[0] | subnet(64, 2) }}";
        assert_eq!(
            render_text(&env, text, &outputs).unwrap(),
            "2001:db8:1200:2::/64"
        );
    }

    #[test]
    fn out_of_range_and_malformed_prefixes_fail() {
        for (expr, says) in [
            (
                r#""2001:db8:1200::/56" | subnet(64, 256)"#,
                "index must be from 0 to 2^8 - 1",
            ),
            (
                r#""2001:db8:1200::/56" | subnet(48, 0)"#,
                "new length must be from 56 to 128",
            ),
            (r#""2001:db8:1200::/56" | subnet(129, 0)"#, "new length"),
            (r#""2001:db8:1200::/56" | subnet(64, -1)"#, "index"),
            (r#""10.0.0.0/30" | host(4)"#, "n must be from 0 to 2^2 - 1"),
            (r#""10.0.0.0/33" | host(1)"#, "longer than an address"),
            (r#""2001:db8::" | host(1)"#, "is not a prefix"),
            (r#""fish/56" | host(1)"#, "`fish` is not an IP address"),
            (r#""10.0.0.0/x" | host(1)"#, "`x` is not a prefix length"),
        ] {
            let err = filter(expr).expect_err(expr);
            assert!(err.contains(says), "{expr}: {err}");
        }
    }

    #[test]
    fn join_and_strict_undefined() {
        assert_eq!(filter(r#"["a", "b"] | join(", ")"#).unwrap(), "a, b");
        assert_eq!(filter(r#"["a", "b"] | join"#).unwrap(), "ab");
        let err = filter("dhcp6.prefixes").expect_err("undefined");
        assert!(err.starts_with("waiting for dhcp6.prefixes ("), "{err}");
        assert!(err.contains("undefined"), "{err}");
        let outputs: BTreeMap<String, Outputs> = [(
            "dhcp6".to_string(),
            Outputs::from([("state".to_string(), Value::String("bound".into()))]),
        )]
        .into();
        let env = environment();
        let err = render_text(
            &env,
            "{{ dhcp6.state }} {{ dhcp6.ipv6.prefixes }}",
            &outputs,
        )
        .expect_err("undefined");
        assert!(
            err.starts_with("waiting for dhcp6.ipv6.prefixes ("),
            "{err}"
        );
        let err = filter("\"x\" | upper").expect_err("unknown filter");
        assert!(err.contains("unknown filter"), "{err}");
    }

    #[test]
    fn check_names_syntax_errors_and_unknown_filters_with_their_line() {
        let xy = ["x".to_string(), "y".to_string()];
        assert_eq!(
            check_text(
                "a {{ x | subnet(64, 1) | host(1) }}\n{{ y | join(\"|\") }}",
                &xy
            ),
            Ok(())
        );
        let err = check_text("line one\n{{ x | upper }}", &xy).unwrap_err();
        assert!(err.starts_with("line 2: unknown filter `upper`"), "{err}");
        let err = check_text("{% if x %}\nno end", &xy).unwrap_err();
        assert!(err.contains("line"), "{err}");
        assert_eq!(check_text("plain | text {{ \"a|b\" }}", &xy), Ok(()));
        let err = check_text("{{ dhcp6.prefix }}", &xy).unwrap_err();
        assert!(
            err.contains("`dhcp6` is not a service it needs or uses"),
            "{err}"
        );
        let loops = "{% for p in x.prefixes %}{{ p | host(1) }}{% endfor %}";
        assert_eq!(check_text(loops, &xy), Ok(()));
    }

    fn template(dir: &Path, text: &str, check: Option<Vec<String>>) -> Template {
        Template {
            source: TemplateSource::Text(text.into()),
            target: dir.join("out.conf").display().to_string(),
            mode: 0o640,
            owner: None,
            group: None,
            check,
            on_change: OnChange::Reload,
            secrets: Vec::new(),
            debounce: std::time::Duration::from_secs(1),
        }
    }

    #[test]
    fn unchanged_bytes_stage_nothing_and_changed_ones_are_replaced_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = template(dir.path(), "v={{ a.k }}\n", None);
        t.target = dir.path().join("made/out.conf").display().to_string();
        let outputs: BTreeMap<String, Outputs> = [(
            "a".to_string(),
            Outputs::from([("k".to_string(), Value::String("1".into()))]),
        )]
        .into();
        let staged = stage(std::slice::from_ref(&t), &outputs, 7).unwrap();
        assert_eq!(staged.len(), 1);
        assert!(!Path::new(&t.target).exists(), "not before the commit");
        assert_eq!(commit(&staged).unwrap(), vec![t.target.clone()]);
        assert_eq!(fs::read_to_string(&t.target).unwrap(), "v=1\n");
        let mode = fs::metadata(&t.target).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        let before = fs::metadata(&t.target).unwrap().modified().unwrap();
        assert!(stage(std::slice::from_ref(&t), &outputs, 8)
            .unwrap()
            .is_empty());
        assert_eq!(fs::metadata(&t.target).unwrap().modified().unwrap(), before);
        let leftovers = fs::read_dir(dir.path().join("made")).unwrap().count();
        assert_eq!(leftovers, 1, "no candidate left behind");
    }

    #[test]
    fn a_failed_render_or_a_discarded_candidate_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let good = template(dir.path(), "old\n", None);
        commit(&stage(std::slice::from_ref(&good), &BTreeMap::new(), 1).unwrap()).unwrap();
        let bad = template(dir.path(), "{{ missing.key }}", None);
        let err = stage(std::slice::from_ref(&bad), &BTreeMap::new(), 2).unwrap_err();
        assert!(err.contains("undefined"), "{err}");
        assert_eq!(fs::read_to_string(&good.target).unwrap(), "old\n");
        let checked = template(
            dir.path(),
            "new\n",
            Some(vec!["/bin/false".into(), "{file}".into()]),
        );
        let staged = stage(std::slice::from_ref(&checked), &BTreeMap::new(), 3).unwrap();
        let check = staged[0].check.clone().unwrap();
        assert_eq!(
            check[1],
            staged[0].temp.display().to_string(),
            "{{file}} is the candidate"
        );
        discard(&staged);
        assert_eq!(fs::read_to_string(&good.target).unwrap(), "old\n");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_checks_output_is_kept_to_its_last_bytes_on_one_line() {
        let mut out = CheckOutput::default();
        assert_eq!(
            check_failed("check of /x (sh)", "exit code 1", &out),
            "check of /x (sh): exit code 1, saying nothing"
        );
        out.push(b"  \n");
        assert_eq!(out.said(), "", "blank lines are nothing");
        out.push(b"dnsmasq: bad option at line 3\n\nof /x.medic-1\n");
        assert_eq!(
            check_failed("check of /x (dnsmasq)", "exit code 1", &out),
            "check of /x (dnsmasq): exit code 1, saying: dnsmasq: bad option at line 3 / of /x.medic-1"
        );
        // A chatty check: only the end is kept, and the reason says something came before.
        let mut out = CheckOutput::default();
        for i in 0..2000 {
            out.push(format!("line {i}\n").as_bytes());
        }
        let said = out.said();
        assert!(said.starts_with('…'), "{said}");
        assert!(said.ends_with("line 1999"), "{said}");
        assert!(
            said.len() <= CHECK_OUTPUT_BYTES + '…'.len_utf8(),
            "{}",
            said.len()
        );
        assert!(!said.contains("line 0 "), "{said}");
        // A cut inside a character leaves no broken half of it.
        let mut out = CheckOutput::default();
        out.push(format!("{}x", "é".repeat(3000)).as_bytes());
        let said = out.said();
        let expected = format!("…{}x", "é".repeat((CHECK_OUTPUT_BYTES - 1) / 2));
        assert_eq!(said, expected);
    }

    #[test]
    fn a_source_file_is_read_and_a_missing_one_fails() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("in.tmpl");
        fs::write(&source, "from {{ \"file\" }}\n").unwrap();
        let mut t = template(dir.path(), "", None);
        t.source = TemplateSource::File(source.display().to_string());
        let staged = stage(std::slice::from_ref(&t), &BTreeMap::new(), 1).unwrap();
        commit(&staged).unwrap();
        assert_eq!(fs::read_to_string(&t.target).unwrap(), "from file\n");
        t.source = TemplateSource::File(dir.path().join("nope").display().to_string());
        let err = stage(std::slice::from_ref(&t), &BTreeMap::new(), 2).unwrap_err();
        assert!(err.contains("does not exist"), "{err}");
    }
}
