//! Properties 8 and 9 (DESIGN §9), judged from the world's record of renders
//! (`templates.rs`) and the inputs, not from the kernel's word:
//!
//! * **8, fresh config.** When a publisher's outputs change at `t`, every consumer that reads
//!   them (`needs` or `uses`) and still runs at `t + debounce + 2 × RENDER_LATENCY_MAX` (and
//!   nothing changed since) has, as its last render, one that used the latest outputs. The
//!   bound: the kernel renders a running consumer `debounce` after the last change; a render
//!   already in flight when the change came is answered within one render latency and is
//!   then done again at once, which takes a second one. ("Running": a live process in the
//!   world that nobody has asked to stop, and that the kernel is not stopping; a consumer that
//!   starts later renders before its start.) A last render that failed counts: the latest
//!   outputs may be ones no template can render. And a running consumer whose files the world
//!   changed (a target with an `on-change` other than `none`) has had an `on-change` action
//!   since, or a spawn: else it runs on files it was never told of (a render answer the kernel
//!   threw away had replaced them).
//! * **9, no storms.** An `on-change` action (a reload signal or command, or the stop of a
//!   restart, delivered to a live process in the step that takes a render's answer) only after
//!   a render whose bytes really changed in the world, and never two for one consumer closer
//!   than its `debounce`. A render that changed bytes but whose answer the kernel threw away
//!   (what it reads changed meanwhile) owes its action to the answer after it, whatever that
//!   answer: that action is judged as the changed render's, once.
//!
//! The latest outputs are what the publishers published ([`Input::SetOutputs`]), and empty
//! where the kernel cleared them ("outputs cleared" in the publisher's history: stopped by the
//! operator, removed, shut down) or a device's changed. Each step costs the consumers of the
//! publishers it touched, plus the due checks in time order.

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet};

use medic_kernel::{CommandPurpose, Effect, Input, Instant, Kernel, Outputs};

use crate::check::{Checker, Property};
use crate::graph::Graph;
use crate::templates::RENDER_LATENCY_MAX;
use crate::world::World;

/// What the checker knows of one consumer, from the config as written.
#[derive(Clone, Debug)]
struct Consumer {
    /// Its templates' debounce (the shortest, as the kernel takes it).
    debounce: Duration,
    /// What it reads: `needs`, then `uses`.
    reads: Vec<String>,
    /// The targets whose change the process must hear of (`on-change` not `none`).
    acts_on: BTreeSet<String>,
}

/// The checker of properties 8 and 9.
#[derive(Clone, Debug, Default)]
pub struct FreshConfig {
    consumers: BTreeMap<String, Consumer>,
    /// Publisher → the consumers that read it.
    readers: BTreeMap<String, Vec<String>>,
    /// Each publisher's latest outputs (absent: none).
    latest: BTreeMap<String, Outputs>,
    /// Consumers due to be fresh, and when.
    due: BTreeSet<(Instant, String)>,
    due_of: BTreeMap<String, Instant>,
    /// Each consumer's last `on-change` action.
    last_action: BTreeMap<String, Instant>,
    /// Consumers whose bytes a render changed in the world with no `on-change` action in the
    /// step of its answer (until one, or a spawn, which reads the files as they are).
    unapplied: BTreeSet<String>,
    /// Consumers whose files (with an `on-change`) the world changed, and since when, with no
    /// `on-change` action since (until one, or a spawn).
    untold: BTreeMap<String, Instant>,
    shutting_down: bool,
}

impl FreshConfig {
    /// A checker for the config of `graph`.
    pub fn new(graph: &Graph) -> FreshConfig {
        let mut f = FreshConfig::default();
        f.set_graph(graph);
        f
    }

    /// The config as written now (after a replacement).
    pub fn set_graph(&mut self, graph: &Graph) {
        self.consumers.clear();
        self.readers.clear();
        for s in graph.services.iter().filter(|s| !s.templates.is_empty()) {
            let reads: Vec<String> = s.needs.iter().chain(&s.uses).cloned().collect();
            for p in &reads {
                self.readers
                    .entry(p.clone())
                    .or_default()
                    .push(s.name.clone());
            }
            let consumer = Consumer {
                debounce: s
                    .templates
                    .iter()
                    .map(|t| t.debounce)
                    .min()
                    .unwrap_or_default(),
                reads,
                acts_on: s
                    .templates
                    .iter()
                    .filter(|t| t.on_change != medic_kernel::config::OnChange::None)
                    .map(|t| t.target.clone())
                    .collect(),
            };
            self.consumers.insert(s.name.clone(), consumer);
        }
    }

    /// The earliest consumer due to be judged.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.due.first().map(|(at, _)| *at)
    }

    /// No consumer still has a render to come after a change of what it reads.
    pub fn settled(&self) -> bool {
        self.due.is_empty()
    }

    /// Checks one step (after the world has carried out `effects`).
    pub fn after_step(
        &mut self,
        now: Instant,
        input: &Input,
        k: &Kernel,
        effects: &[Effect],
        world: &World,
        checker: &mut Checker,
    ) {
        self.judge_due(now, k, world, checker);
        if matches!(input, Input::Operator(medic_kernel::Operator::Shutdown)) {
            self.shutting_down = true;
        }
        // What changed: a publisher's map, a clear, a device's outputs.
        match input {
            Input::SetOutputs { service, outputs }
                if medic_kernel::outputs::validate(outputs).is_ok()
                    && k.lookup(service).is_some() =>
            {
                self.set_latest(now, service, Some(outputs.clone()));
            }
            Input::Devices(_) => {
                let names: Vec<String> = self.readers.keys().cloned().collect();
                for name in names {
                    let now_map = k.outputs(&name).cloned();
                    self.set_latest(now, &name, now_map);
                }
            }
            _ => {}
        }
        for e in effects {
            if let Effect::Event { service, record } = e {
                if record.note.starts_with("outputs cleared") {
                    let name = k.name(*service).to_string();
                    self.set_latest(now, &name, None);
                }
            }
        }
        for e in effects {
            if let Effect::Spawn { service, .. } = e {
                self.unapplied.remove(k.name(*service));
                self.untold.remove(k.name(*service));
            }
        }
        if let Input::RenderDone {
            service,
            job,
            result,
        } = input
        {
            // The world's answer: the world's record of that render may already be the next
            // one's, asked in this step when the kernel threw this answer away.
            let wrote = matches!(result, medic_kernel::RenderResult::Changed(_));
            let answer = (*service, *job, wrote);
            let acted = self.judge_action(now, k, world, effects, answer, checker);
            let name = k.name(*service).to_string();
            let must_hear = match (result, self.consumers.get(&name)) {
                (medic_kernel::RenderResult::Changed(targets), Some(c)) => {
                    targets.iter().any(|t| c.acts_on.contains(t))
                }
                _ => false,
            };
            // A spawn in this step reads the files as they are now.
            let spawned = effects
                .iter()
                .any(|e| matches!(e, Effect::Spawn { service: s, .. } if s == service));
            if acted || spawned {
                self.untold.remove(&name);
            } else if must_hear && !self.untold.contains_key(&name) {
                self.untold.insert(name.clone(), now);
                let debounce = self
                    .consumers
                    .get(&name)
                    .map_or(Duration::ZERO, |c| c.debounce);
                let at = now + debounce + RENDER_LATENCY_MAX * 2;
                let at = self.due_of.get(&name).map_or(at, |old| at.max(*old));
                if let Some(old) = self.due_of.insert(name.clone(), at) {
                    self.due.remove(&(old, name.clone()));
                }
                self.due.insert((at, name));
            }
        }
    }

    /// Time passed to `now` with no step.
    pub fn on_time(&mut self, now: Instant, k: &Kernel, world: &World, checker: &mut Checker) {
        self.judge_due(now, k, world, checker);
    }

    fn set_latest(&mut self, now: Instant, publisher: &str, map: Option<Outputs>) {
        let map = map.filter(|m| !m.is_empty());
        if self.latest.get(publisher) == map.as_ref() {
            return; // the same map again: nothing to render
        }
        match map {
            Some(m) => self.latest.insert(publisher.to_string(), m),
            None => self.latest.remove(publisher),
        };
        let Some(readers) = self.readers.get(publisher) else {
            return;
        };
        for c in readers {
            let Some(consumer) = self.consumers.get(c) else {
                continue;
            };
            let at = now + consumer.debounce + RENDER_LATENCY_MAX * 2;
            if let Some(old) = self.due_of.insert(c.clone(), at) {
                self.due.remove(&(old, c.clone()));
            }
            self.due.insert((at, c.clone()));
        }
    }

    /// Property 8 for every consumer due by `now`.
    fn judge_due(&mut self, now: Instant, k: &Kernel, world: &World, checker: &mut Checker) {
        while let Some((at, name)) = self.due.first().cloned() {
            if at > now {
                break;
            }
            self.due.pop_first();
            self.due_of.remove(&name);
            if self.shutting_down {
                continue;
            }
            let (Some(id), Some(consumer)) = (k.lookup(&name), self.consumers.get(&name)) else {
                continue;
            };
            let Some(v) = k.status(id) else { continue };
            if !v.wanted() || v.is_stopping() || !world.running_in_world(id) {
                continue;
            }
            let stale: Vec<&String> = match world.outputs.last_render(id) {
                None => consumer.reads.iter().collect(),
                Some(r) => consumer
                    .reads
                    .iter()
                    .filter(|p| r.outputs.get(*p) != self.latest.get(*p))
                    .collect(),
            };
            if let Some(since) = self.untold.get(&name) {
                let what = format!(
                    "runs on files it was never told of: the world changed them at {since} \
                     (a target with an on-change), and no on-change came since"
                );
                checker.report(Property::FreshConfig, Some(id), &name, at, what);
            }
            if let Some(p) = stale.first() {
                let rendered = world.outputs.last_render(id).map_or_else(
                    || "it never rendered".to_string(),
                    |r| {
                        format!(
                            "its last render (asked at {}) used {p}'s {:?}",
                            r.asked_at,
                            r.outputs.get(*p)
                        )
                    },
                );
                let what = format!(
                    "runs with stale config: {p} published {:?}, and {} + 2 render latencies \
                     ({:?}) later {rendered}",
                    self.latest.get(*p),
                    format_args!("debounce {:?}", consumer.debounce),
                    RENDER_LATENCY_MAX * 2,
                );
                checker.report(Property::FreshConfig, Some(id), &name, at, what);
            }
        }
    }

    /// Property 9 in the step that takes the answer of render `job` of `service` (`wrote`: the
    /// answer says the world changed files).
    fn judge_action(
        &mut self,
        now: Instant,
        k: &Kernel,
        world: &World,
        effects: &[Effect],
        (service, job, wrote): (medic_kernel::ServiceId, medic_kernel::JobId, bool),
        checker: &mut Checker,
    ) -> bool {
        let action = effects.iter().find_map(|e| match e {
            Effect::Signal {
                service: s,
                job: j,
                signal,
                ..
            } if *s == service && world.alive(*j) => Some(format!("signal {}", signal.name())),
            Effect::Kill { service: s, job: j } if *s == service && world.alive(*j) => {
                Some("kill".to_string())
            }
            Effect::RunCommand {
                service: s,
                purpose: p @ (CommandPurpose::Reload | CommandPurpose::Stop),
                ..
            } if *s == service => Some(format!("{p:?} command")),
            _ => None,
        });
        let name = k.name(service).to_string();
        let render = world.outputs.last_render(service).filter(|r| r.job == job);
        let changed = render.is_some_and(|r| r.changed);
        let Some(action) = action else {
            if changed || wrote {
                self.unapplied.insert(name);
            }
            return false;
        };
        let owed = self.unapplied.remove(&name);
        if !changed && !owed {
            let what = format!(
                "on-change ({action}) after a render whose bytes did not change in the world"
            );
            checker.report(Property::NoStorms, Some(service), &name, now, what);
        }
        let debounce = self
            .consumers
            .get(&name)
            .map_or(Duration::ZERO, |c| c.debounce);
        if let Some(last) = self.last_action.insert(name.clone(), now) {
            if now.saturating_since(last) < debounce {
                let what = format!(
                    "two on-change actions {:?} apart ({action} now, the last at {last}), \
                     debounce is {debounce:?}",
                    now.saturating_since(last)
                );
                checker.report(Property::NoStorms, Some(service), &name, now, what);
            }
        }
        true
    }
}
