//! The service graph: `needs` and `after` edges resolved to ids, and their reverses.

use std::collections::BTreeMap;

use crate::protocol::ServiceId;
use crate::service::Slot;

/// Resolves every live slot's `needs`/`after` names to ids and fills the reverse edges
/// (`dependents`, `successors`). Names that are not (or no longer) services are skipped: the
/// config validator has already refused them, and a removed service has no live dependents.
pub fn link_edges(slots: &mut [Slot], by_name: &BTreeMap<String, ServiceId>) {
    for slot in slots.iter_mut() {
        slot.needs.clear();
        slot.after.clear();
        slot.dependents.clear();
        slot.successors.clear();
    }
    for i in 0..slots.len() {
        if slots[i].removed {
            continue;
        }
        let config = slots[i].config.clone();
        let resolve = |names: &[String]| -> Vec<ServiceId> {
            names
                .iter()
                .filter_map(|n| by_name.get(n).copied())
                .collect()
        };
        let needs = resolve(&config.needs);
        let after = resolve(&config.after);
        let me = slots[i].id;
        for &n in &needs {
            slots[n.index()].dependents.push(me);
        }
        for &a in &after {
            slots[a.index()].successors.push(me);
        }
        slots[i].needs = needs;
        slots[i].after = after;
    }
}

/// The ids of the services that must be stopped before `slot` may stop: what needs it and
/// what is ordered after it.
pub fn stop_before(slot: &Slot) -> impl Iterator<Item = ServiceId> + '_ {
    slot.dependents
        .iter()
        .chain(slot.successors.iter())
        .copied()
}

/// The ids `slot` waits for when it stops: what it needs and what it is ordered after, so their
/// pending stops can go on once it has exited.
pub fn stops_after(slot: &Slot) -> impl Iterator<Item = ServiceId> + '_ {
    slot.needs.iter().chain(slot.after.iter()).copied()
}
