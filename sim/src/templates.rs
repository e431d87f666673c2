//! The world's side of outputs and templates (DESIGN §9): publishers that change their outputs
//! (addresses, a DNS server, a lifetime), and the files the adapter renders from them.
//!
//! * A publisher is a process some template reads ([`crate::graph::Graph::publishers`]). It
//!   publishes (`medic output set`) soon after each spawn, and when the swarm says: a change
//!   (a new address), a renew (only `valid-s` moves), a partial map (no `addr`: a template that
//!   reads it fails). Before liveness every partial map is made whole again.
//! * A render is what the real adapter does, and nothing more: the bytes of each target are a
//!   deterministic function of the outputs the [`Effect::Render`] carries (their canonical
//!   text, minus the lifetime `valid-s`, which no template renders), compared with the bytes
//!   the world last wrote to that target: `changed` (the target is rewritten), `unchanged`, or
//!   `failed` (a missing variable; nothing is written).
//! * The world keeps, per service, its last render: when it was asked, when it answered, the
//!   outputs it used and whether the bytes really changed. The checkers of properties 8 and 9
//!   (`fresh.rs`) judge that record, not the kernel's word.
//!
//! [`Effect::Render`]: medic_kernel::Effect::Render

use core::fmt::Write as _;
use std::collections::{BTreeMap, BTreeSet};

use medic_kernel::config::{Template, TemplateSource};
use medic_kernel::{Input, Instant, JobId, Outputs, RenderResult, ServiceId, Value};

/// The longest a render takes in the world (its answer comes within this).
pub const RENDER_LATENCY_MAX: core::time::Duration = core::time::Duration::from_millis(1);

/// What a publisher does to its outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Publish {
    /// New values (a new address, a new DNS server).
    Change,
    /// A DHCP renew: only the lifetime moves; no template renders it.
    Renew,
    /// A map without `addr`: templates that read it fail.
    Partial,
    /// The map as it stands, whole (after a spawn; before liveness).
    Again,
}

/// One publisher's state in the world.
#[derive(Clone, Debug, Default)]
struct Publisher {
    /// Bumped by each change.
    generation: u32,
    /// Bumped by each renew.
    renews: u32,
    /// The last map lacked `addr`.
    partial: bool,
    /// It has published at least once.
    published: bool,
}

impl Publisher {
    fn outputs(&self) -> Outputs {
        let mut map = Outputs::new();
        let g = self.generation;
        if !self.partial {
            let addr = format!("10.{}.{}.1/24", (g >> 8) & 0xff, g & 0xff);
            map.insert("addr".into(), Value::String(addr));
        }
        let dns = format!("10.{}.{}.53", (g >> 8) & 0xff, g & 0xff);
        map.insert("dns".into(), Value::List(vec![Value::String(dns)]));
        let valid = 3_600u32.saturating_sub(self.renews % 3_600);
        map.insert("valid-s".into(), Value::String(valid.to_string()));
        map
    }
}

/// One render as the world carried it out.
#[derive(Clone, Debug)]
pub struct RenderRecord {
    /// The render's job.
    pub job: JobId,
    /// When the kernel asked for it.
    pub asked_at: Instant,
    /// When the world answers.
    pub answer_at: Instant,
    /// The outputs it rendered from (the [`medic_kernel::Effect::Render`]'s).
    pub outputs: BTreeMap<String, Outputs>,
    /// It failed: nothing was written.
    pub failed: bool,
    /// Some target's bytes really changed (and were written).
    pub changed: bool,
}

/// Publishers, target files and renders.
#[derive(Clone, Debug, Default)]
pub struct OutputsWorld {
    publishers: BTreeMap<String, Publisher>,
    /// The bytes the world last wrote to each target.
    files: BTreeMap<String, String>,
    /// Each service's last render.
    last: BTreeMap<ServiceId, RenderRecord>,
}

impl OutputsWorld {
    /// The publishers of the config in force (their state survives a config change); the
    /// names that were not publishers before.
    pub fn set_publishers(&mut self, names: BTreeSet<String>) -> Vec<String> {
        self.publishers.retain(|n, _| names.contains(n));
        let mut new = Vec::new();
        for n in names {
            if let std::collections::btree_map::Entry::Vacant(e) = self.publishers.entry(n) {
                new.push(e.key().clone());
                e.insert(Publisher::default());
            }
        }
        new
    }

    /// Whether `name` publishes.
    pub fn is_publisher(&self, name: &str) -> bool {
        self.publishers.contains_key(name)
    }

    /// The publishers, by name.
    pub fn publisher_names(&self) -> impl Iterator<Item = &String> {
        self.publishers.keys()
    }

    /// `name` publishes: the input that tells the kernel.
    pub fn publish(&mut self, name: &str, how: Publish) -> Option<Input> {
        let p = self.publishers.get_mut(name)?;
        p.published = true;
        match how {
            Publish::Change => {
                p.generation = p.generation.wrapping_add(1);
                p.partial = false;
            }
            Publish::Renew => p.renews = p.renews.wrapping_add(1),
            Publish::Partial => p.partial = true,
            Publish::Again => p.partial = false,
        }
        Some(Input::SetOutputs {
            service: name.to_string(),
            outputs: p.outputs(),
        })
    }

    /// The publishers whose last map was partial, and those that never published.
    pub fn partial_or_silent(&self) -> (Vec<String>, Vec<String>) {
        let names = |f: fn(&Publisher) -> bool| {
            self.publishers
                .iter()
                .filter(|(_, p)| f(p))
                .map(|(n, _)| n.clone())
                .collect()
        };
        (names(|p| p.partial), names(|p| !p.published))
    }

    /// Carries out a render asked at `now` and answered at `answer_at`: the result to answer.
    pub fn render(
        &mut self,
        service: ServiceId,
        job: JobId,
        (now, answer_at): (Instant, Instant),
        templates: &[Template],
        outputs: &BTreeMap<String, Outputs>,
    ) -> RenderResult {
        let mut rendered = Vec::with_capacity(templates.len());
        let mut failure = None;
        for t in templates {
            match render_text(&t.source, outputs) {
                Ok(bytes) => rendered.push((t.target.clone(), bytes)),
                Err(why) => {
                    failure = Some(why);
                    break;
                }
            }
        }
        let mut changed = Vec::new();
        if failure.is_none() {
            for (target, bytes) in rendered {
                if self.files.get(&target) != Some(&bytes) {
                    changed.push(target.clone());
                    self.files.insert(target, bytes);
                }
            }
        }
        self.last.insert(
            service,
            RenderRecord {
                job,
                asked_at: now,
                answer_at,
                outputs: outputs.clone(),
                failed: failure.is_some(),
                changed: !changed.is_empty(),
            },
        );
        match failure {
            Some(why) => RenderResult::Failed(why),
            None if changed.is_empty() => RenderResult::Unchanged,
            None => RenderResult::Changed(changed),
        }
    }

    /// The last render of `service`.
    pub fn last_render(&self, service: ServiceId) -> Option<&RenderRecord> {
        self.last.get(&service)
    }

    /// The slot holds another service now: its renders are not the newcomer's.
    pub fn forget(&mut self, service: ServiceId) {
        self.last.remove(&service);
    }
}

/// What the world's "adapter" renders from one template: the first variable names the
/// publisher `P` (`{{ P.addr }}`); the bytes are `P`'s outputs as `key=value` lines, minus
/// `valid-s`. `P` absent or without `addr` fails the render, except that a template beginning
/// `{% if P %}` renders an absent `P` as `none`.
pub fn render_text(
    source: &TemplateSource,
    outputs: &BTreeMap<String, Outputs>,
) -> Result<String, String> {
    let TemplateSource::Text(text) = source else {
        return Err("template source files are not simulated".into());
    };
    let start = text.find("{{ ").ok_or("the template reads no variable")? + 3;
    let publisher = text[start..]
        .split('.')
        .next()
        .ok_or("the template reads no variable")?;
    let tolerant = text.starts_with("{% if ");
    let missing = || format!("missing variable {publisher}.addr");
    let map = match outputs.get(publisher) {
        Some(map) => map,
        None if tolerant => return Ok("none\n".into()),
        None => return Err(missing()),
    };
    if !map.contains_key("addr") {
        return Err(missing());
    }
    let mut bytes = String::new();
    for (key, value) in map.iter().filter(|(k, _)| *k != "valid-s") {
        let _ = writeln!(bytes, "{key}={value:?}");
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: &str) -> TemplateSource {
        TemplateSource::Text(t.into())
    }

    /// A renew moves only `valid-s`: the bytes stay; a change moves them; a partial map and
    /// an absent publisher fail, except where the template guards it.
    #[test]
    fn bytes_follow_the_outputs_minus_lifetimes() {
        let mut world = OutputsWorld::default();
        world.set_publishers(["dhcp".to_string()].into());
        let outputs = |w: &mut OutputsWorld, how| match w.publish("dhcp", how) {
            Some(Input::SetOutputs { outputs, .. }) => {
                BTreeMap::from([("dhcp".to_string(), outputs)])
            }
            other => panic!("not a publish: {other:?}"),
        };
        let needs = text("addr {{ dhcp.addr }}\n");
        let first = outputs(&mut world, Publish::Change);
        let renewed = outputs(&mut world, Publish::Renew);
        assert_ne!(first, renewed, "a renew is a new map");
        assert_eq!(render_text(&needs, &first), render_text(&needs, &renewed));
        let changed = outputs(&mut world, Publish::Change);
        assert_ne!(render_text(&needs, &first), render_text(&needs, &changed));
        let partial = outputs(&mut world, Publish::Partial);
        let missing = Err("missing variable dhcp.addr".to_string());
        assert_eq!(render_text(&needs, &partial), missing);
        assert_eq!(render_text(&needs, &BTreeMap::new()), missing);
        let guarded = text("{% if dhcp %}addr {{ dhcp.addr }}{% endif %}\n");
        assert_eq!(render_text(&guarded, &BTreeMap::new()), Ok("none\n".into()));
        assert_eq!(render_text(&guarded, &partial), missing);
    }

    /// The world answers `changed` only when a target's bytes differ from what it last wrote.
    #[test]
    fn a_render_is_changed_only_when_bytes_differ() {
        let mut world = OutputsWorld::default();
        world.set_publishers(["dhcp".to_string()].into());
        let template = Template {
            source: text("addr {{ dhcp.addr }}\n"),
            target: "/run/x.conf".into(),
            mode: 0o644,
            owner: None,
            group: None,
            check: None,
            on_change: medic_kernel::config::OnChange::Reload,
            secrets: Vec::new(),
            debounce: core::time::Duration::ZERO,
        };
        let render = |w: &mut OutputsWorld, how, job| {
            let Some(Input::SetOutputs { outputs, .. }) = w.publish("dhcp", how) else {
                panic!("not a publish");
            };
            let outputs = BTreeMap::from([("dhcp".to_string(), outputs)]);
            let at = (Instant::ZERO, Instant::ZERO);
            w.render(
                ServiceId(1),
                JobId(job),
                at,
                std::slice::from_ref(&template),
                &outputs,
            )
        };
        let written = RenderResult::Changed(vec!["/run/x.conf".into()]);
        assert_eq!(render(&mut world, Publish::Change, 1), written);
        assert_eq!(
            render(&mut world, Publish::Renew, 2),
            RenderResult::Unchanged
        );
        assert!(!world.last_render(ServiceId(1)).unwrap().changed);
        assert!(matches!(
            render(&mut world, Publish::Partial, 3),
            RenderResult::Failed(_)
        ));
        assert!(world.last_render(ServiceId(1)).unwrap().failed);
        assert_eq!(render(&mut world, Publish::Change, 4), written);
        assert!(world.last_render(ServiceId(1)).unwrap().changed);
    }
}
