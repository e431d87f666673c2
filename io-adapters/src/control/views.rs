//! Answers built from the kernel's read model ([`medic_kernel::ServiceView`]): status rows,
//! histories, recent events, operator commands. The loop calls these; nothing here does I/O.

use medic_kernel::{Instant, JobId, Kernel, LinkState, Operator, Record, ServiceId, ServiceView};

use super::plan;
use super::wire::{
    DaemonInfo, DeviceStatus, EventRow, HistoryRow, LinkInfo, LogRow, Request, ServiceStatus,
    StatusReport, StatusRow,
};

impl LinkInfo {
    /// What the kernel's [`LinkState`] says, without addresses (`None`: no such link).
    pub fn from_state(link: Option<&LinkState>) -> LinkInfo {
        LinkInfo {
            state: crate::netlink::describe(link).to_string(),
            addresses: Vec::new(),
        }
    }
}

impl ServiceStatus {
    /// What an older daemon's plain row tells: nothing about the plan, memory or the graph.
    pub fn from_row(row: StatusRow, give_up_after: u32) -> ServiceStatus {
        ServiceStatus {
            row,
            why: String::new(),
            next: String::new(),
            next_at_ms: None,
            memory_bytes: None,
            memory_max_bytes: None,
            give_up_after,
            dependents: Vec::new(),
            last_exit: None,
            last_exit_at_ms: None,
        }
    }
}

impl HistoryRow {
    /// The row for one kernel record.
    pub fn from_record(record: &Record) -> HistoryRow {
        HistoryRow {
            at_ms: record.at.as_millis(),
            condition: record.condition.name().to_string(),
            heal: record.heal.as_ref().map(|h| h.describe()),
            outcome: record.outcome.map(|o| o.name().to_string()),
            note: record.note.clone(),
            outcome_at_ms: record.outcome_at.map(Instant::as_millis),
        }
    }
}

impl EventRow {
    /// The row for an [`medic_kernel::Effect::Event`] of service `id`.
    pub fn new(kernel: &Kernel, id: ServiceId, record: &Record) -> EventRow {
        EventRow {
            service: kernel.name(id).to_string(),
            record: HistoryRow::from_record(record),
        }
    }
}

/// The ids of `names`, each checked; an error names every unknown one.
fn resolve(kernel: &Kernel, names: &[String]) -> Result<Vec<ServiceId>, String> {
    let mut ids = Vec::with_capacity(names.len());
    let mut unknown = Vec::new();
    for name in names {
        match kernel.lookup(name) {
            Some(id) => ids.push(id),
            None => unknown.push(unknown_service(kernel, name)),
        }
    }
    if unknown.is_empty() {
        Ok(ids)
    } else {
        Err(unknown.join("; "))
    }
}

/// ``no service `dnsmask` in the config; did you mean `dnsmasq`?``
fn unknown_service(kernel: &Kernel, name: &str) -> String {
    let nearest = kernel
        .views()
        .map(|v| v.name())
        .map(|n| (strsim::damerau_levenshtein(name, n), n))
        // Close enough to be a typo: one edit in three characters.
        .filter(|&(d, _)| d * 3 <= name.chars().count().max(3))
        .min();
    match nearest {
        Some((_, n)) => format!("no service `{name}` in the config; did you mean `{n}`?"),
        None => format!("no service `{name}` in the config; `medic status` lists them"),
    }
}

/// The rows of [`Response::Status`] for `names` (every service when empty), in config order.
/// `now` is the daemon's current time on the kernel's clock (for uptimes); `links` gives the
/// netlink view of a link by name, when the runtime has one (else the kernel's state is shown).
pub fn status_rows(
    kernel: &Kernel,
    names: &[String],
    now: Instant,
    links: impl Fn(&str) -> Option<LinkInfo>,
) -> Result<Vec<StatusRow>, String> {
    let wanted = resolve(kernel, names)?;
    let rows = kernel
        .views()
        .filter(|v| wanted.is_empty() || wanted.contains(&v.id()))
        .map(|v| status_row(kernel, &v, now, &links))
        .collect();
    Ok(rows)
}

fn status_row(
    kernel: &Kernel,
    v: &ServiceView<'_>,
    now: Instant,
    links: &impl Fn(&str) -> Option<LinkInfo>,
) -> StatusRow {
    let config = v.config();
    let link = match &config.kind {
        medic_kernel::config::Kind::Interface { ifname, .. } => {
            Some(links(ifname).unwrap_or_else(|| LinkInfo::from_state(kernel.link(ifname))))
        }
        _ => None,
    };
    let running = !v.is_stopping();
    let uptime = match v.process_started().filter(|_| running) {
        Some(started) => Some(now.saturating_since(started)),
        None if v.healthy() => Some(now.saturating_since(v.since())),
        None => None,
    };
    StatusRow {
        name: v.name().to_string(),
        kind: config.kind.name().to_string(),
        condition: v.condition().name().to_string(),
        healthy: v.healthy(),
        // A stopping process still runs: its pid says what is being waited for.
        pid: v.pid(),
        strikes: v.strikes(),
        since_ms: v.since().as_millis(),
        needs: config.needs.clone(),
        link,
        uptime_ms: uptime.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    }
}

/// What the status report needs from the runtime besides the kernel.
pub struct Observed<L, M> {
    /// The netlink view of a link by name (see [`status_rows`]).
    pub links: L,
    /// The last memory sample of a service's process group, by service and job.
    pub memory: M,
    /// The machine's RAM, for a `memory-max` given as a percentage.
    pub total_ram: Option<u64>,
}

/// The answer to [`Request::StatusReport`]: the status rows of `names` with WHY and NEXT,
/// memory and the graph around each service.
pub fn status_report<L, M>(
    kernel: &Kernel,
    names: &[String],
    now: Instant,
    observed: Observed<L, M>,
    daemon: DaemonInfo,
) -> Result<StatusReport, String>
where
    L: Fn(&str) -> Option<LinkInfo>,
    M: Fn(ServiceId, JobId) -> Option<u64>,
{
    let wanted = resolve(kernel, names)?;
    let services = kernel
        .views()
        .filter(|v| wanted.is_empty() || wanted.contains(&v.id()))
        .map(|v| {
            let row = status_row(kernel, &v, now, &observed.links);
            let explained = plan::explain(kernel, &v, now);
            let config = v.config();
            let last_exit = v
                .history()
                .iter()
                .filter_map(|r| {
                    let first = r.note.split("; ").next()?;
                    let ended = first.starts_with("exit code ") || first.starts_with("killed by");
                    ended.then(|| (first.to_string(), r.at.as_millis()))
                })
                .last();
            ServiceStatus {
                row,
                why: explained.why,
                next: explained.next,
                next_at_ms: explained.at.map(Instant::as_millis),
                memory_bytes: v.job().and_then(|job| (observed.memory)(v.id(), job)),
                memory_max_bytes: config
                    .memory_max
                    .and_then(|limit| limit.bytes(observed.total_ram)),
                give_up_after: config.give_up_after,
                dependents: v
                    .dependents()
                    .iter()
                    .map(|&d| kernel.name(d).to_string())
                    .collect(),
                last_exit_at_ms: last_exit.as_ref().map(|e| e.1),
                last_exit: last_exit.map(|e| e.0),
            }
        })
        .collect();
    let devices = kernel
        .views()
        .filter(|v| wanted.is_empty() || wanted.contains(&v.id()))
        .filter_map(|v| {
            let d = kernel.device(v.id())?;
            Some(DeviceStatus {
                service: v.name().to_string(),
                devname: d.devname.clone(),
                devpath: d.devpath.clone(),
                subsystem: d.subsystem.clone(),
                driver: d.driver.clone(),
            })
        })
        .collect();
    Ok(StatusReport {
        daemon,
        services,
        devices,
    })
}

/// The id of service `name`, or an error that names it and suggests the nearest one: for
/// requests about one service (`history`, `logs`).
pub fn service_id(kernel: &Kernel, name: &str) -> Result<ServiceId, String> {
    kernel
        .lookup(name)
        .ok_or_else(|| unknown_service(kernel, name))
}

/// The id of service `name` for `medic logs`: an error for an unknown service, and for an
/// interface or a device, which have no output to show.
pub fn logs_of(kernel: &Kernel, name: &str) -> Result<ServiceId, String> {
    let id = service_id(kernel, name)?;
    match &kernel.status(id).map(|v| &v.config().kind) {
        Some(medic_kernel::config::Kind::Interface { ifname, .. }) => Err(format!(
            "{name} is an interface (link {ifname}): it runs nothing, so it has no output; \
             `medic status {name}` shows the link"
        )),
        Some(medic_kernel::config::Kind::Device { .. }) => Err(format!(
            "{name} is a device: it runs nothing, so it has no output; `medic status {name}` \
             shows the device"
        )),
        _ => Ok(id),
    }
}

impl LogRow {
    /// The row of one captured line (or run mark).
    pub fn from_line(line: &crate::logs::LogLine) -> LogRow {
        LogRow {
            at_ms: line.at.as_millis(),
            stream: line.stream.short_name().to_string(),
            text: line.text.clone(),
            pid: match line.stream {
                crate::logs::Stream::Start(pid) => Some(pid),
                _ => None,
            },
        }
    }
}

/// The rows of [`Response::History`] for service `name`, oldest first.
pub fn history_rows(kernel: &Kernel, name: &str) -> Result<Vec<HistoryRow>, String> {
    let id = service_id(kernel, name)?;
    let history = kernel.history(id).map(|h| h.iter()).into_iter().flatten();
    Ok(history.map(HistoryRow::from_record).collect())
}

/// The most recent `limit` records of every service's history, oldest first (ties in config
/// order): what `medic events` shows before following.
pub fn recent_events(kernel: &Kernel, limit: usize) -> Vec<EventRow> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    // Bounded work whatever the histories hold: from each service only its last `limit`
    // records are looked at, a heap keeps the `limit` most recent of them (by reference), and
    // rows are built for those alone.
    let mut newest: BinaryHeap<Reverse<Keyed<'_>>> = BinaryHeap::with_capacity(limit + 1);
    for (index, v) in kernel.views().enumerate() {
        let history = v.history();
        for record in history.iter().skip(history.len().saturating_sub(limit)) {
            let key = (record.at, index, record.seq, v.id(), RecordRef(record));
            newest.push(Reverse(key));
            if newest.len() > limit {
                newest.pop();
            }
        }
    }
    let mut picked: Vec<_> = newest.into_iter().map(|Reverse(k)| k).collect();
    picked.sort_by_key(|(at, index, seq, ..)| (*at, *index, *seq));
    picked
        .into_iter()
        .map(|(_, _, _, id, record)| EventRow::new(kernel, id, record.0))
        .collect()
}

/// A record in the heap of [`recent_events`]: (when, config index, seq, service, the record).
type Keyed<'a> = (Instant, usize, u64, ServiceId, RecordRef<'a>);

/// A record in the heap of [`recent_events`], ordered by nothing (the key before it decides).
#[derive(Clone, Copy)]
struct RecordRef<'a>(&'a Record);

impl PartialEq for RecordRef<'_> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for RecordRef<'_> {}
impl PartialOrd for RecordRef<'_> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for RecordRef<'_> {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl Request {
    /// For `Start`, `Stop`, `Restart` and `Reload`: the operator inputs to feed the kernel, one
    /// per service, or an error naming every unknown service (then nothing is to be done).
    /// `None` for any other request.
    pub fn operators(&self, kernel: &Kernel) -> Option<Result<Vec<Operator>, String>> {
        let (names, make): (&[String], fn(String) -> Operator) = match self {
            Request::Start(n) => (n, Operator::Start),
            Request::Stop(n) => (n, Operator::Stop),
            Request::Restart(n) => (n, Operator::Restart),
            Request::Reload(n) => (n, Operator::Reload),
            _ => return None,
        };
        if names.is_empty() {
            return Some(Err("name at least one service".to_string()));
        }
        Some(resolve(kernel, names).map(|_| names.iter().cloned().map(make).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medic_kernel::config::{Heal, Kind, ServiceConfig};
    use medic_kernel::{Condition, Effect, Input, Outcome};
    use std::sync::Arc;

    fn kernel() -> Kernel {
        let wan = ServiceConfig::new(
            "wan",
            Kind::Interface {
                ifname: "eth0".into(),
                ready_when: medic_kernel::config::LinkReady::Carrier,
            },
        );
        let mut dnsmasq = ServiceConfig::new(
            "dnsmasq",
            Kind::Process {
                argv: vec!["/usr/sbin/dnsmasq".into()],
            },
        );
        dnsmasq.needs = vec!["wan".into()];
        let sleeper = ServiceConfig::new(
            "sleeper",
            Kind::Process {
                argv: vec!["sleep".into()],
            },
        );
        let config = medic_kernel::Config {
            daemon: Default::default(),
            services: vec![Arc::new(wan), Arc::new(dnsmasq), Arc::new(sleeper)],
        };
        Kernel::new(config)
    }

    /// Boots the kernel with eth0 up and every spawn answered with pid 100 + id.
    fn booted() -> Kernel {
        let mut k = kernel();
        let mut out = Vec::new();
        let link = LinkState {
            admin_up: true,
            carrier: true,
            ipv4: true,
            ipv6_global: false,
        };
        k.step(
            Instant::ZERO,
            Input::LinkChanged {
                ifname: "eth0".into(),
                link: Some(link),
            },
            &mut out,
        );
        let mut pending = Vec::new();
        k.step(Instant::from_millis(1), Input::Tick, &mut out);
        for _ in 0..4 {
            pending.append(&mut out);
            for effect in pending.drain(..) {
                if let Effect::Spawn { service, job, .. } = effect {
                    let pid = 100 + service.0;
                    let input = Input::Spawned { service, job, pid };
                    k.step(Instant::from_millis(2), input, &mut out);
                }
            }
        }
        k
    }

    #[test]
    fn status_rows_follow_the_kernel() {
        let k = booted();
        let rows = status_rows(&k, &[], Instant::from_millis(5001), |_| None).unwrap();
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["wan", "dnsmasq", "sleeper"], "config order");
        let dnsmasq = &rows[1];
        assert_eq!(dnsmasq.kind, "process");
        assert_eq!(dnsmasq.condition, "ready");
        assert!(dnsmasq.healthy);
        assert_eq!(dnsmasq.pid, Some(101));
        assert_eq!(dnsmasq.needs, ["wan"]);
        assert_eq!(dnsmasq.link, None);
        assert_eq!(
            dnsmasq.uptime_ms,
            Some(5000),
            "since the spawn at boot, 1 ms"
        );
        let wan = &rows[0];
        assert_eq!(wan.pid, None);
        assert_eq!(wan.link.as_ref().unwrap().state, "up, carrier");
        let view = |_: &str| {
            Some(LinkInfo {
                state: "up, carrier".into(),
                addresses: vec!["192.0.2.1/24".into()],
            })
        };
        let rows = status_rows(&k, &["wan".into()], Instant::from_millis(5002), view).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].link.as_ref().unwrap().addresses, ["192.0.2.1/24"]);
    }

    #[test]
    fn unknown_services_are_named_with_a_suggestion() {
        let k = booted();
        let names = ["dnsmask".to_string(), "zzzzzzzz".to_string()];
        let err = status_rows(&k, &names, Instant::ZERO, |_| None).unwrap_err();
        assert!(
            err.contains("`dnsmask`") && err.contains("did you mean `dnsmasq`"),
            "{err}"
        );
        assert!(
            err.contains("`zzzzzzzz`") && err.contains("medic status"),
            "{err}"
        );
        assert!(history_rows(&k, "nope").is_err());
        let stop = Request::Stop(vec!["dnsmasq".into(), "nope".into()]);
        assert!(stop.operators(&k).unwrap().is_err(), "all or nothing");
        let ops = Request::Restart(vec!["dnsmasq".into()]).operators(&k);
        assert_eq!(ops, Some(Ok(vec![Operator::Restart("dnsmasq".into())])));
        assert!(Request::Start(vec![]).operators(&k).unwrap().is_err());
        assert_eq!(Request::Ping.operators(&k), None);
    }

    #[test]
    fn history_rows_carry_heal_and_outcome() {
        let record = Record {
            seq: 3,
            at: Instant::from_millis(812),
            condition: Condition::Exited,
            heal: Some(Heal::Restart),
            outcome: Some(Outcome::Resolved),
            outcome_at: Some(Instant::from_millis(1812)),
            note: "exit code 1".into(),
        };
        let row = HistoryRow::from_record(&record);
        assert_eq!(row.at_ms, 812);
        assert_eq!(row.condition, "exited");
        assert_eq!(row.heal.as_deref(), Some("restart"));
        assert_eq!(row.outcome.as_deref(), Some("resolved"));
        assert_eq!(row.note, "exit code 1");
        let mut k = booted();
        let mut out = Vec::new();
        let job = k.views().nth(2).unwrap().job().unwrap();
        let exited = Input::Exited {
            service: ServiceId(2),
            job,
            status: medic_kernel::ExitStatus::Code(1),
        };
        k.step(Instant::from_millis(900), exited, &mut out);
        let rows = history_rows(&k, "sleeper").unwrap();
        assert!(rows.iter().any(|r| r.condition == "exited"), "{rows:?}");
        let events = recent_events(&k, 1000);
        assert!(events.iter().any(|e| e.service == "sleeper"));
        assert!(events
            .windows(2)
            .all(|w| w[0].record.at_ms <= w[1].record.at_ms));
        assert_eq!(recent_events(&k, 1).len(), 1);
        // The same as sorting every record and keeping the last `limit`, for every limit.
        let mut all: Vec<(Instant, usize, u64, EventRow)> = Vec::new();
        for (index, v) in k.views().enumerate() {
            for record in v.history().iter() {
                all.push((
                    record.at,
                    index,
                    record.seq,
                    EventRow::new(&k, v.id(), record),
                ));
            }
        }
        all.sort_by_key(|(at, index, seq, _)| (*at, *index, *seq));
        let all: Vec<EventRow> = all.into_iter().map(|(.., row)| row).collect();
        assert!(
            all.len() > 3,
            "enough records to choose from: {}",
            all.len()
        );
        for limit in 0..=all.len() + 1 {
            let want = &all[all.len().saturating_sub(limit)..];
            assert_eq!(recent_events(&k, limit), want, "limit {limit}");
        }
    }
}
