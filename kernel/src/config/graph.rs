//! The checks across services: `needs` and `after` name existing services, not the service
//! itself, and together they form no cycle.

use std::collections::{BTreeMap, BTreeSet};

use super::service::Parsed;
use super::values::{key_path, Ctx, Hint};

/// Checks the references of every service and reports each dependency cycle once.
pub(super) fn check(cx: &mut Ctx, services: &[Parsed]) {
    let names: Vec<&str> = services.iter().map(|p| p.service.name.as_str()).collect();
    let index: BTreeMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    // edges[i]: (service index, byte offset of the reference), `needs` first, then `after`.
    let mut edges: Vec<Vec<(usize, usize)>> = vec![Vec::new(); services.len()];
    for (i, p) in services.iter().enumerate() {
        let place = format!("[service.{}]", key_path(names[i]));
        for (key, verb, refs) in [
            ("needs", "needs", &p.needs),
            ("after", "starts after", &p.after),
        ] {
            let mut seen = BTreeSet::new();
            for (target, at) in refs {
                let at = *at;
                let message = if target == names[i] {
                    format!("{place} {verb} itself; remove `{target}` from `{key}`")
                } else if !seen.insert(target) {
                    format!("{place} lists `{target}` twice in `{key}`; remove one")
                } else if let Some(&j) = index.get(target.as_str()) {
                    edges[i].push((j, at));
                    continue;
                } else {
                    let message = format!("{place} {verb} `{target}`, which is not a service");
                    cx.error_with_hint(at, message, Hint::Service(target.clone()));
                    continue;
                };
                cx.error(at, message);
            }
        }
        // `uses` reads outputs without ordering anything: it makes no edge, so no cycle.
        let mut seen = BTreeSet::new();
        for (target, at) in &p.uses {
            if target == names[i] {
                cx.error(
                    *at,
                    format!("{place} uses itself; remove `{target}` from `uses`"),
                );
            } else if !seen.insert(target) {
                cx.error(
                    *at,
                    format!("{place} lists `{target}` twice in `uses`; remove one"),
                );
            } else if !index.contains_key(target.as_str()) {
                let message = format!("{place} uses `{target}`, which is not a service");
                cx.error_with_hint(*at, message, Hint::Service(target.clone()));
            }
        }
    }
    cycles(cx, &names, &edges);
}

/// A depth-first search in file order: every edge back to a service still on the path closes
/// a cycle, reported at that edge as `a -> b -> a`.
fn cycles(cx: &mut Ctx, names: &[&str], edges: &[Vec<(usize, usize)>]) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut mark = vec![Mark::New; names.len()];
    let mut reported = BTreeSet::new();
    for root in 0..names.len() {
        if mark[root] != Mark::New {
            continue;
        }
        mark[root] = Mark::OnPath;
        // The current path: (service, index of its next edge to follow).
        let mut path = vec![(root, 0)];
        while let Some(&(node, next)) = path.last() {
            let Some(&(to, at)) = edges[node].get(next) else {
                mark[node] = Mark::Done;
                path.pop();
                continue;
            };
            if let Some(top) = path.last_mut() {
                top.1 += 1;
            }
            match mark[to] {
                Mark::New => {
                    mark[to] = Mark::OnPath;
                    path.push((to, 0));
                }
                Mark::OnPath => {
                    let start = path.iter().position(|&(n, _)| n == to).unwrap_or(0);
                    let cycle: Vec<usize> = path[start..].iter().map(|&(n, _)| n).collect();
                    if reported.insert(cycle.clone()) {
                        let shown: Vec<&str> =
                            cycle.iter().chain([&to]).map(|&n| names[n]).collect();
                        cx.error(
                            at,
                            format!(
                                "dependency cycle {}: no service can start first; remove one of \
                                 these `needs` or `after` entries",
                                shown.join(" -> ")
                            ),
                        );
                    }
                }
                Mark::Done => {}
            }
        }
    }
}
