//! A new config (SIGHUP): only what changed is touched. Unchanged services keep running; a
//! changed one is restarted as a new fact; a removed one is stopped and then forgotten; a new
//! one starts like at boot.

use std::collections::BTreeSet;

use crate::config::{self, Config, Kind};
use crate::graph;
use crate::kernel::Kernel;
use crate::protocol::{Effect, JobId, ServiceId};
use crate::service::{AfterStop, FileAction, Slot};
use crate::timers;

impl Kernel {
    pub(crate) fn on_replace_config(&mut self, text: &str, out: &mut Vec<Effect>) {
        if let Some(new) = self.parse_config(text, out) {
            self.replace_with(new, "definition changed", out);
        }
    }

    /// A new config text, validated (paths resolved as the config in force resolved them);
    /// `None`, with a notice saying why, when it does not validate.
    pub(crate) fn parse_config(&self, text: &str, out: &mut Vec<Effect>) -> Option<Config> {
        let base = self.config.daemon.base_dir.clone();
        match config::parse_in(text, "config", base.as_deref()) {
            Ok(c) => Some(c),
            Err(errors) => {
                out.push(Effect::Notice {
                    message: format!(
                        "new config refused: it does not validate; nothing changed:\n{errors}"
                    ),
                });
                None
            }
        }
    }

    /// Puts `new` in force, touching only what changed; each changed service's history says
    /// `why`.
    pub(crate) fn replace_with(&mut self, new: Config, why: &str, out: &mut Vec<Effect>) {
        let old_paths: BTreeSet<String> = self.watches.keys().cloned().collect();
        let history_len = new.daemon.history_len;
        let mut new_order = Vec::with_capacity(new.services.len());
        let mut changed = Vec::new();
        for service in &new.services {
            match self.by_name.get(&service.name).copied() {
                Some(id) if self.slots[id.index()].config == *service => new_order.push(id),
                Some(id) => {
                    self.slots[id.index()].config = service.clone();
                    changed.push(id);
                    new_order.push(id);
                }
                None => {
                    let id = self.free_slot();
                    let mut slot =
                        Slot::new(id, service.clone(), history_len, JobId(self.next_job()));
                    slot.wanted = !self.shutting_down;
                    slot.since = self.now;
                    match self.slots.get_mut(id.index()) {
                        Some(free) => *free = slot,
                        None => self.slots.push(slot),
                    }
                    new_order.push(id);
                    self.by_name.insert(service.name.clone(), id);
                    // Marked with everyone below, after the changed services are restarted:
                    // a new service must not start against a need that is about to stop.
                }
            }
        }
        let kept: BTreeSet<ServiceId> = new_order.iter().copied().collect();
        for id in self.order.clone() {
            if !kept.contains(&id) {
                let slot = &mut self.slots[id.index()];
                slot.removed = true;
                slot.wanted = false;
                self.by_name.remove(&slot.config.name);
                self.stop_service(id, AfterStop::Nothing);
                self.clear_outputs(id, "removed from the config", out);
                self.mark(id);
            }
        }
        self.order = new_order;
        self.config = new;
        self.rebuild_indexes();
        self.rematch_devices(out);
        for id in changed {
            self.note(id, why.to_string(), out);
            self.new_fact(id);
            self.restart(id);
        }
        // Every service re-derives: needs may have changed anywhere.
        for i in 0..self.slots.len() {
            self.mark(ServiceId(i as u32));
        }
        self.schedule_all_at();
        let new_paths: BTreeSet<String> = self.watches.keys().cloned().collect();
        for path in old_paths.difference(&new_paths) {
            out.push(Effect::Unwatch { path: path.clone() });
        }
        for path in new_paths.difference(&old_paths) {
            out.push(Effect::Watch { path: path.clone() });
        }
    }

    /// The slot for a new service: the first one a removed service has left (its timers, which
    /// were its own, forgotten), else a new one at the end of the table.
    fn free_slot(&mut self) -> ServiceId {
        let Some(i) = self.slots.iter().position(Slot::is_free) else {
            return ServiceId(self.slots.len() as u32);
        };
        let id = ServiceId(i as u32);
        self.timers
            .clear_each(&mut self.slots[i].timers, id, &timers::ALL);
        id
    }

    /// Rebuilds the graph edges, the need counters, the link and watch maps.
    pub(crate) fn rebuild_indexes(&mut self) {
        graph::link_edges(&mut self.slots, &self.by_name);
        for i in 0..self.slots.len() {
            let unhealthy = self.slots[i]
                .needs
                .iter()
                .filter(|n| !self.slots[n.index()].healthy)
                .count() as u32;
            self.slots[i].unhealthy_needs = unhealthy;
        }
        self.link_services.clear();
        self.device_services.clear();
        self.watches.clear();
        for &id in &self.order {
            let config = &self.slots[id.index()].config;
            if let Kind::Interface { ifname, .. } = &config.kind {
                self.link_services
                    .entry(ifname.clone())
                    .or_default()
                    .push(id);
            }
            if let Kind::Device { .. } = &config.kind {
                self.device_services.push(id);
            }
            for (paths, action) in [
                (&config.reload_on, FileAction::Reload),
                (&config.restart_on, FileAction::Restart),
            ] {
                for path in paths {
                    self.watches
                        .entry(path.clone())
                        .or_default()
                        .push((id, action));
                }
            }
        }
        self.reset_worklist_marks();
    }
}
