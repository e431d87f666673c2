//! Tests of the config parser: the design's example, defaults, and every kind of error with
//! its exact place and message.

use core::time::Duration;

use super::*;
use crate::health::Condition;

/// The example of architecture.md §3.
const EXAMPLE: &str = r#"[daemon]
state-dir = "/run/medic"     # control socket, trace ring, saved history
trace-size = "1MiB"           # in-memory ring of recent inputs

[service.wan]
interface = "eth0"
ready-when = "carrier"        # present | up | carrier | ipv4 | ipv6-global
[service.wan.on.absent]
heal = { run = ["modprobe", "e1000e"] }
settle = "10s"

[service.firewall]
oneshot = ["/etc/firewall.sh", "up"]
stop = ["/etc/firewall.sh", "down"]

[service.dnsmasq]
run = ["/usr/sbin/dnsmasq", "-k", "-C", "/etc/dnsmasq.conf"]
needs = ["firewall"]
ready = { tcp = "127.0.0.1:53" }
reload = { signal = "HUP" }
reload-on = ["/etc/dnsmasq.conf"]
memory-max = "90%"

[service.l2tp]
run = ["/usr/sbin/xl2tpd", "-D"]
needs = ["wan"]
stop-when-needs-fail = true
probe = { run = ["/etc/medic/l2tp-status"], every = "2s", reports = "condition" }
[service.l2tp.on.connecting]
healthy = false               # wait, no intervention
[service.l2tp.on.tunnel-down]
heal = "restart"
settle = "30s"

[service.dropbear]
run = ["/usr/sbin/dropbear", "-F", "-E"]
restart-on = ["/etc/dropbear/authorized_keys"]
"#;

fn ok(text: &str) -> Config {
    parse(text, "medic.toml").unwrap_or_else(|e| panic!("unexpected errors:\n{e}"))
}

fn err(text: &str) -> String {
    match parse(text, "medic.toml") {
        Ok(c) => panic!("expected errors, parsed {c:#?}"),
        Err(e) => e.to_string(),
    }
}

/// One service `x` with `body` under its header (line 1 is `[service.x]`).
fn service(body: &str) -> String {
    format!("[service.x]\n{body}")
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn the_design_example_parses() {
    let c = ok(EXAMPLE);
    assert_eq!(c.daemon.state_dir.as_deref(), Some("/run/medic"));
    assert_eq!(c.daemon.trace_size_bytes, 1 << 20);
    assert_eq!(c.daemon.history_len, 64);
    let names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["wan", "firewall", "dnsmasq", "l2tp", "dropbear"]);

    let wan = c.service("wan").unwrap();
    let ifname = "eth0".to_string();
    assert_eq!(
        wan.kind,
        Kind::Interface {
            ifname,
            ready_when: LinkReady::Carrier
        }
    );
    let absent = &wan.on[&Condition::Absent];
    assert_eq!(
        absent.heal,
        Some(vec![Heal::Run(argv(&["modprobe", "e1000e"]))])
    );
    assert_eq!(absent.settle, Some(secs(10)));
    assert_eq!(absent.healthy, None);

    let firewall = c.service("firewall").unwrap();
    let stop = Some(argv(&["/etc/firewall.sh", "down"]));
    assert_eq!(
        firewall.kind,
        Kind::Oneshot {
            argv: argv(&["/etc/firewall.sh", "up"]),
            stop
        }
    );

    let dnsmasq = c.service("dnsmasq").unwrap();
    assert_eq!(dnsmasq.needs, ["firewall"]);
    assert_eq!(
        dnsmasq.ready,
        Readiness::Poll(Check::Tcp("127.0.0.1:53".into()))
    );
    assert_eq!(dnsmasq.reload, Some(Action::Signal(Signal::Hup)));
    assert_eq!(dnsmasq.reload_on, ["/etc/dnsmasq.conf"]);
    assert_eq!(dnsmasq.memory_max, Some(MemoryLimit::PerMille(900)));

    let l2tp = c.service("l2tp").unwrap();
    assert_eq!(l2tp.needs, ["wan"]);
    assert!(l2tp.stop_when_needs_fail);
    let probe = l2tp.probe.as_ref().unwrap();
    assert_eq!(probe.check, Check::Run(argv(&["/etc/medic/l2tp-status"])));
    assert_eq!(probe.every, secs(2));
    assert_eq!(probe.timeout, defaults::PROBE_TIMEOUT);
    assert_eq!(probe.failures, defaults::PROBE_FAILURES);
    assert_eq!(probe.reports, Reports::Condition);
    let connecting = &l2tp.on[&Condition::Custom("connecting".into())];
    assert_eq!(
        connecting,
        &VerdictOverride {
            healthy: Some(false),
            heal: None,
            settle: None
        }
    );
    let down = &l2tp.on[&Condition::Custom("tunnel-down".into())];
    assert_eq!(down.heal, Some(vec![Heal::Restart]));
    assert_eq!(down.settle, Some(secs(30)));

    let dropbear = c.service("dropbear").unwrap();
    assert_eq!(dropbear.restart_on, ["/etc/dropbear/authorized_keys"]);
}

#[test]
fn defaults_fill_what_is_not_given() {
    let c = ok("[service.x]\nrun = [\"/bin/x\"]\n");
    assert_eq!(c.daemon, DaemonConfig::default());
    let expected = ServiceConfig::new(
        "x",
        Kind::Process {
            argv: argv(&["/bin/x"]),
        },
    );
    assert_eq!(*c.services[0], expected);

    let c = ok("[service.wan]\ninterface = \"eth0\"\n");
    let ready_when = LinkReady::Carrier;
    assert_eq!(
        c.services[0].kind,
        Kind::Interface {
            ifname: "eth0".into(),
            ready_when
        }
    );
    assert_eq!(c.services[0].kind.name(), "interface");

    let empty = ok("");
    assert!(empty.services.is_empty());
}

#[test]
fn services_keep_the_order_of_the_file() {
    let c = ok(
        "[service.zeta]\nrun = [\"z\"]\n[service.alpha]\nrun = [\"a\"]\n\
                [service.mid]\noneshot = [\"m\"]\n",
    );
    let names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["zeta", "alpha", "mid"]);
}

#[test]
fn every_key_is_read() {
    let c = ok(r#"
[daemon]
history-size = 128
trace-size = 65536

[service.ntpd]
run = ["/usr/sbin/ntpd", "-n"]
after = ["net@1"]
ready = "sd-notify"
memory-max = "48MiB"
memory-every = "1m"
debounce = "250ms"
reload = { run = ["/bin/reload"] }
env = { TZ = "UTC", LANG = "C" }
user = "ntp"
group = "ntp"
cwd = "/var/lib/ntp"
start-timeout = "1h 30m"
stop-signal = "SIGINT"
stop-timeout = "2s"
give-up-after = 3
forgive-after = "1m"
max-backoff = "30s"
retry-after = "never"
on.exited = { heal = ["restart", { signal = "USR1" }, "kill"], settle = "2s" }

[service."net@1"]
oneshot = ["/bin/net"]
"#);
    assert_eq!(c.daemon.history_len, 128);
    assert_eq!(c.daemon.trace_size_bytes, 65536);
    let s = c.service("ntpd").unwrap();
    assert_eq!(s.after, ["net@1"]);
    assert_eq!(s.ready, Readiness::SdNotify);
    assert_eq!(s.memory_max, Some(MemoryLimit::Bytes(48 << 20)));
    assert_eq!(s.memory_every, secs(60));
    assert_eq!(s.debounce, Duration::from_millis(250));
    assert_eq!(s.reload, Some(Action::Run(argv(&["/bin/reload"]))));
    assert_eq!(s.env.get("TZ").map(String::as_str), Some("UTC"));
    assert_eq!(s.env.len(), 2);
    assert_eq!(
        (s.user.as_deref(), s.group.as_deref()),
        (Some("ntp"), Some("ntp"))
    );
    assert_eq!(s.cwd.as_deref(), Some("/var/lib/ntp"));
    assert_eq!(s.start_timeout, secs(5400));
    assert_eq!(s.stop_signal, Signal::Int);
    assert_eq!(s.stop_timeout, secs(2));
    assert_eq!(s.give_up_after, 3);
    assert_eq!(s.forgive_after, secs(60));
    assert_eq!(s.max_backoff, secs(30));
    assert_eq!(s.retry_after, None);
    let ladder = vec![Heal::Restart, Heal::Signal(Signal::Usr1), Heal::Kill];
    assert_eq!(s.on[&Condition::Exited].heal, Some(ladder));
    assert_eq!(s.on[&Condition::Exited].settle, Some(secs(2)));
}

#[test]
fn retry_after_takes_a_duration_or_never() {
    let c = ok(&service("run = [\"x\"]\nretry-after = \"never\"\n"));
    assert_eq!(c.services[0].retry_after, None);
    let c = ok(&service("run = [\"x\"]\nretry-after = \"2h\"\n"));
    assert_eq!(c.services[0].retry_after, Some(secs(7200)));
}

#[test]
fn memory_limits_are_percentages_or_sizes() {
    let limit = |v: &str| {
        ok(&service(&format!("run = [\"x\"]\nmemory-max = {v}\n"))).services[0].memory_max
    };
    assert_eq!(limit("\"90%\""), Some(MemoryLimit::PerMille(900)));
    assert_eq!(limit("\"12.5%\""), Some(MemoryLimit::PerMille(125)));
    assert_eq!(limit("\"100%\""), Some(MemoryLimit::PerMille(1000)));
    assert_eq!(limit("\"48MiB\""), Some(MemoryLimit::Bytes(48 << 20)));
    assert_eq!(limit("\"64KiB\""), Some(MemoryLimit::Bytes(64 << 10)));
    assert_eq!(limit("\"1GiB\""), Some(MemoryLimit::Bytes(1 << 30)));
    assert_eq!(limit("\"1.5GiB\""), Some(MemoryLimit::Bytes(3 << 29)));
    assert_eq!(limit("\"100MB\""), Some(MemoryLimit::Bytes(100_000_000)));
    assert_eq!(limit("\"4096\""), Some(MemoryLimit::Bytes(4096)));
    assert_eq!(limit("4096"), Some(MemoryLimit::Bytes(4096)));

    let bad = |v: &str| err(&service(&format!("run = [\"x\"]\nmemory-max = {v}\n")));
    assert_eq!(
        bad("\"12.55%\""),
        "medic.toml:3:14: `memory-max` in [service.x]: `12.55%` is not a percentage of RAM; \
         write one above 0 and at most 100, with at most one decimal, like \"90%\" or \"12.5%\""
    );
    assert!(bad("\"0%\"").contains("`0%` is not a percentage of RAM"));
    assert_eq!(
        bad("\"48 MegaBytes\""),
        "medic.toml:3:14: `memory-max` in [service.x]: `48 MegaBytes` is not a size; write it \
         like \"4096\", \"64KiB\", \"48MiB\", \"1GiB\" or \"100MB\""
    );
    assert_eq!(
        bad("true"),
        "medic.toml:3:14: `memory-max` in [service.x] must be a size such as \"48MiB\", found boolean"
    );
}

#[test]
fn probe_inline_and_as_a_sub_table_are_the_same() {
    let inline = ok(&service(
        "run = [\"x\"]\nprobe = { tcp = \"127.0.0.1:80\", every = \"5s\", timeout = \"1s\", failures = 5 }\n",
    ));
    let table = ok(&service(
        "run = [\"x\"]\n[service.x.probe]\ntcp = \"127.0.0.1:80\"\nevery = \"5s\"\ntimeout = \"1s\"\nfailures = 5\n",
    ));
    assert_eq!(inline, table);
    let probe = inline.services[0].probe.clone().unwrap();
    assert_eq!(probe.check, Check::Tcp("127.0.0.1:80".into()));
    assert_eq!(
        (probe.every, probe.timeout, probe.failures),
        (secs(5), secs(1), 5)
    );
    assert_eq!(probe.reports, Reports::Exit);
}

#[test]
fn readiness_forms() {
    let ready = |v: &str| {
        ok(&service(&format!("run = [\"x\"]\nready = {v}\n"))).services[0]
            .ready
            .clone()
    };
    assert_eq!(ready("\"spawned\""), Readiness::Spawned);
    assert_eq!(ready("{ notify-fd = 3 }"), Readiness::NotifyFd(3));
    assert_eq!(
        ready("{ unix = \"/run/x.sock\" }"),
        Readiness::Poll(Check::Unix("/run/x.sock".into()))
    );
    assert_eq!(
        ready("{ file = \"/run/x.ready\" }"),
        Readiness::Poll(Check::File("/run/x.ready".into()))
    );
    assert_eq!(
        ready("{ run = [\"/bin/up\"] }"),
        Readiness::Poll(Check::Run(argv(&["/bin/up"])))
    );

    assert_eq!(
        err(&service("run = [\"x\"]\nready = \"spwaned\"\n")),
        "medic.toml:3:9: `ready` in [service.x]: `spwaned` is not one of `spawned` or `sd-notify`; \
         did you mean `spawned`?"
    );
    assert_eq!(
        err(&service("run = [\"x\"]\nready = { tcp = \"localhost\" }\n")),
        "medic.toml:3:17: `tcp` in [service.x.ready]: `localhost` is not host:port; write it like \
         \"127.0.0.1:53\" or \"[::1]:53\""
    );
    assert_eq!(
        err(&service(
            "run = [\"x\"]\nready = { tcp = \"h:1\", file = \"/f\" }\n"
        )),
        "medic.toml:3:24: [service.x.ready] has both `tcp` and `file`; give only one of \
         `notify-fd`, `tcp`, `unix`, `file` or `run`"
    );
}

#[test]
fn unknown_keys_suggest_the_nearest() {
    let text = "[service.wan]\ninterface = \"eth0\"\n\n[service.ntpd]\nrun = [\"ntpd\"]\nneed = [\"wan\"]\n";
    assert_eq!(
        err(text),
        "medic.toml:6:1: unknown key `need` in [service.ntpd]; did you mean `needs`?"
    );
    assert_eq!(
        err("[deamon]\n"),
        "medic.toml:1:2: unknown key `deamon` in the top-level table; did you mean `daemon`?"
    );
    assert_eq!(
        err("[daemon]\nhistory = 3\n"),
        "medic.toml:2:1: unknown key `history` in [daemon]; did you mean `history-size`?"
    );
    assert_eq!(
        err(&service(
            "run = [\"x\"]\n[service.x.probe]\nrun = [\"p\"]\nevry = \"1s\"\n"
        )),
        "medic.toml:5:1: unknown key `evry` in [service.x.probe]; did you mean `every`?"
    );
    assert_eq!(
        err(&service("run = [\"x\"]\nxyzzy = 1\n"))
            .split("; ")
            .next(),
        Some("medic.toml:3:1: unknown key `xyzzy` in [service.x]")
    );
}

#[test]
fn wrong_types_say_what_was_expected() {
    assert_eq!(
        err(&service("run = [\"x\"]\nneeds = 3\n")),
        "medic.toml:3:9: `needs` in [service.x] must be an array of service names, found integer"
    );
    assert_eq!(
        err(&service("run = \"/bin/x\"\n")),
        "medic.toml:2:7: `run` in [service.x] must be a command line, an array of strings like \
         [\"/usr/sbin/ntpd\", \"-n\"], found string"
    );
    assert_eq!(
        err(&service("run = [\"x\"]\nstop-when-needs-fail = \"yes\"\n")),
        "medic.toml:3:24: `stop-when-needs-fail` in [service.x] must be `true` or `false`, found string"
    );
    assert_eq!(
        err(&service("run = [\"x\"]\ngive-up-after = 0\n")),
        "medic.toml:3:17: `give-up-after` in [service.x]: `0` is too small; use a number from 1 to 1000000"
    );
    assert_eq!(
        err("[daemon]\nhistory-size = 5000\n"),
        "medic.toml:2:16: `history-size` in [daemon]: `5000` is too large; use a number from 1 to 4096"
    );
    assert_eq!(
        err("service = 3\n"),
        "medic.toml:1:11: `service` in the top-level table must be a table of services, like \
         [service.ntpd], found integer"
    );
}

#[test]
fn bad_durations_name_the_key_and_show_an_example() {
    assert_eq!(
        err(&service(
            "run = [\"x\"]\nstart-timeout = \"5 minutes please\"\n"
        )),
        "medic.toml:3:17: `start-timeout` in [service.x]: `5 minutes please` is not a duration; \
         write it like \"250ms\", \"5s\", \"5m\" or \"1h 30m\""
    );
    assert_eq!(
        err(&service(
            "run = [\"x\"]\nprobe = { file = \"/f\", timeout = \"0s\" }\n"
        )),
        "medic.toml:3:34: `timeout` in [service.x.probe]: must be longer than zero"
    );
    assert_eq!(
        err(&service("run = [\"x\"]\ndebounce = 100\n")),
        "medic.toml:3:12: `debounce` in [service.x] must be a duration string such as \"5s\", found integer"
    );
}

#[test]
fn bad_signals_list_the_known_ones() {
    assert_eq!(
        err(&service("run = [\"x\"]\nstop-signal = \"TREM\"\n")),
        "medic.toml:3:15: `stop-signal` in [service.x]: `TREM` is not a signal; use one of `HUP`, \
         `INT`, `QUIT`, `KILL`, `USR1`, `USR2`, `ALRM`, `TERM`, `CONT`, `STOP`, `TSTP`, `WINCH` or \
         `PWR`; did you mean `TERM`?"
    );
}

#[test]
fn unknown_and_self_dependencies() {
    let text = "[service.wan]\ninterface = \"eth0\"\n[service.ntpd]\nrun = [\"ntpd\"]\n\
                needs = [\"wna\", \"ntpd\"]\nafter = [\"wan\", \"wan\", \"zzzzzz\"]\n";
    assert_eq!(
        err(text),
        "medic.toml:5:10: [service.ntpd] needs `wna`, which is not a service; did you mean `wan`?\n\
         medic.toml:5:17: [service.ntpd] needs itself; remove `ntpd` from `needs`\n\
         medic.toml:6:17: [service.ntpd] lists `wan` twice in `after`; remove one\n\
         medic.toml:6:24: [service.ntpd] starts after `zzzzzz`, which is not a service"
    );
}

#[test]
fn cycles_are_printed_once_each() {
    let text = "[service.a]\nrun = [\"a\"]\nneeds = [\"b\"]\n\
                [service.b]\nrun = [\"b\"]\nneeds = [\"a\"]\nafter = [\"a\"]\n";
    assert_eq!(
        err(text),
        "medic.toml:6:10: dependency cycle a -> b -> a: no service can start first; remove one of \
         these `needs` or `after` entries"
    );
    let text = "[service.a]\nrun = [\"a\"]\nafter = [\"b\"]\n\
                [service.b]\nrun = [\"b\"]\nneeds = [\"c\"]\n\
                [service.c]\nrun = [\"c\"]\nneeds = [\"a\"]\n\
                [service.d]\nrun = [\"d\"]\nneeds = [\"a\", \"b\"]\n";
    let e = err(text);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.starts_with("medic.toml:9:10: dependency cycle a -> b -> c -> a:"),
        "{e}"
    );
}

#[test]
fn heals_must_fit_the_kind() {
    assert_eq!(
        err(&service("run = [\"x\"]\non.exited.heal = \"link-up\"\n")),
        "medic.toml:3:18: `heal` in [service.x.on.exited]: `link-up` heals interfaces only, and \
         this is a process service"
    );
    assert_eq!(
        err("[service.wan]\ninterface = \"eth0\"\n[service.wan.on.admin-down]\nheal = [\"link-up\", \"restart\"]\n"),
        "medic.toml:4:20: `heal` in [service.wan.on.admin-down]: `restart` cannot heal an \
         interface, medic runs no process for it; use \"link-up\" or { run = [...] }"
    );
    assert_eq!(
        err(&service("oneshot = [\"x\"]\non.failed.heal = { signal = \"USR1\" }\nstop = [\"y\"]\nready-when = \"up\"\n")),
        "medic.toml:5:1: `ready-when` in [service.x] does not fit a oneshot service: a oneshot is \
         ready when its command exits 0"
    );
    // `run` heals fit every kind.
    let c = ok("[service.wan]\ninterface = \"eth0\"\non.no-carrier.heal = { run = [\"ethtool\", \"-r\", \"eth0\"] }\n");
    let heal = c.services[0].on[&Condition::NoCarrier].heal.clone();
    assert_eq!(
        heal,
        Some(vec![Heal::Run(argv(&["ethtool", "-r", "eth0"]))])
    );
    assert_eq!(
        err(&service("run = [\"x\"]\non.exited.heal = \"restrat\"\n")),
        "medic.toml:3:18: `heal` in [service.x.on.exited]: `restrat` is not one of `restart`, \
         `reload`, `kill` or `link-up`; did you mean `restart`?"
    );
}

#[test]
fn blocked_and_given_up_take_no_heal() {
    let text = service(
        "run = [\"x\"]\n[service.x.on.blocked]\nheal = \"restart\"\n[service.x.on.given-up]\nhealthy = false\nheal = \"kill\"\n",
    );
    assert_eq!(
        err(&text),
        "medic.toml:4:1: `heal` in [service.x.on.blocked]: a blocked service is never healed: the \
         cure is upstream; remove `heal`\n\
         medic.toml:7:1: `heal` in [service.x.on.given-up]: a given-up service waits for a new fact \
         (an operator command, a changed config or file, a need recovering, or `retry-after`); \
         remove `heal`"
    );
}

#[test]
fn conditions_must_apply_to_the_kind() {
    assert_eq!(
        err("[service.wan]\ninterface = \"eth0\"\n[service.wan.on.exited]\nhealthy = true\n"),
        "medic.toml:3:17: `exited` in [service.wan.on]: an interface service is never `exited`; \
         its conditions are `stopped`, `waiting`, `ready`, `blocked`, `absent`, `admin-down`, \
         `no-carrier`, `no-address` or `given-up`"
    );
    assert_eq!(
        err("[service.wan]\ninterface = \"eth0\"\non.abset = { healthy = false }\n"),
        "medic.toml:3:4: `abset` in [service.wan.on]: an interface service has no condition \
         `abset` (custom conditions come from probes, which only `run` services have); did you \
         mean `absent`?"
    );
    assert_eq!(
        err(&service(
            "run = [\"x\"]\non.exitted = { heal = \"restart\" }\n"
        )),
        "medic.toml:3:4: `exitted` in [service.x.on]: `exitted` is not a built-in condition, and \
         [service.x] has no probe with reports = \"condition\" to name custom ones; did you mean \
         `exited`?"
    );
    assert_eq!(
        err(&service(
            "oneshot = [\"x\"]\non.exited = { heal = \"restart\" }\n"
        )),
        "medic.toml:3:4: `exited` in [service.x.on]: a oneshot service is never `exited`; its \
         conditions are `stopped`, `waiting`, `starting`, `ready`, `blocked`, `failed`, \
         `start-timeout` or `given-up`"
    );
    assert_eq!(
        err(&service("run = [\"x\"]\non.exited = { heal = \"restart\", healthy = 1, setle = \"1s\" }\n")),
        "medic.toml:3:43: `healthy` in [service.x.on.exited] must be `true` or `false`, found integer\n\
         medic.toml:3:46: unknown key `setle` in [service.x.on.exited]; did you mean `settle`?"
    );
}

#[test]
fn keys_must_fit_the_kind() {
    assert_eq!(
        err("[service.fw]\noneshot = [\"/etc/fw\"]\nready = \"sd-notify\"\nprobe = { file = \"/x\" }\n"),
        "medic.toml:3:1: `ready` in [service.fw] does not fit a oneshot service: a oneshot is ready \
         when its command exits 0\n\
         medic.toml:4:1: `probe` in [service.fw] does not fit a oneshot service: it applies to \
         long-running `run` services only"
    );
    assert_eq!(
        err("[service.wan]\ninterface = \"eth0\"\nready = \"spawned\"\nreload = { signal = \"HUP\" }\n"),
        "medic.toml:3:1: `ready` in [service.wan] does not fit an interface service: an interface \
         is ready as its `ready-when` says\n\
         medic.toml:4:1: `reload` in [service.wan] does not fit an interface service: medic runs \
         no process for an interface"
    );
    assert_eq!(
        err(&service("run = [\"x\"]\nstop = [\"y\"]\n")),
        "medic.toml:3:1: `stop` in [service.x] does not fit a process service: `stop` is the \
         command that undoes a oneshot; a process is stopped with `stop-signal`"
    );
    assert_eq!(
        err(&service("run = [\"x\"]\nevery = \"6h\"\n")),
        "medic.toml:3:1: `every` in [service.x] does not fit a process service: `every` runs a \
         oneshot again; a process is restarted on a schedule with `restart-every`"
    );
    assert_eq!(
        err(&service("oneshot = [\"x\"]\nrestart-every = \"1d\"\n")),
        "medic.toml:3:1: `restart-every` in [service.x] does not fit a oneshot service: \
         `restart-every` restarts a process; a oneshot is run again with `every`"
    );
}

#[test]
fn timed_jobs_take_a_period_of_a_second_or_more() {
    let config = crate::config::parse(
        "[service.a]\noneshot = [\"x\"]\nevery = \"6h\"\n[service.b]\nrun = [\"y\"]\nrestart-every = \"1day\"\n",
        "medic.toml",
    )
    .unwrap();
    assert_eq!(
        config.services[0].every,
        Some(Duration::from_secs(6 * 3600))
    );
    assert_eq!(
        config.services[1].restart_every,
        Some(Duration::from_secs(86_400))
    );
    let e = err(&service("oneshot = [\"x\"]\nevery = \"10ms\"\n"));
    assert!(e.starts_with("medic.toml:3:9: ") && e.contains("1s"), "{e}");
}

#[test]
fn a_service_has_exactly_one_kind() {
    assert_eq!(
        err("[service.x]\nuser = \"nobody\"\n"),
        "medic.toml:1:1: [service.x] needs one of `run`, `oneshot`, `interface` or `device`"
    );
    assert_eq!(
        err("[service.x]\nrun = [\"a\"]\ninterface = \"eth0\"\n"),
        "medic.toml:3:1: [service.x] has both `run` and `interface`; give only one of `run`, \
         `oneshot`, `interface` or `device`"
    );
    assert_eq!(
        err("[service.x]\ninterface = \"a-very-long-link-name\"\n"),
        "medic.toml:2:13: `interface` in [service.x]: `a-very-long-link-name` is not a link name: \
         Linux allows 1 to 15 characters without `/`, `:` or spaces"
    );
}

#[test]
fn command_lines_must_not_be_empty() {
    assert_eq!(
        err("[service.x]\nrun = []\n"),
        "medic.toml:2:7: `run` in [service.x]: the command line is empty; give the program and its \
         arguments, like [\"/usr/sbin/ntpd\", \"-n\"]"
    );
    assert!(err("[service.x]\noneshot = [\"\"]\n").contains("the program name is empty"));
    assert!(err(&service("oneshot = [\"a\"]\nstop = []\n")).starts_with("medic.toml:3:8:"));
}

#[test]
fn names_and_paths_are_checked() {
    assert_eq!(
        err("[service.\"my service\"]\nrun = [\"x\"]\n"),
        "medic.toml:1:10: service name `my service` may only contain letters, digits, `_`, `.`, \
         `@` and `-`"
    );
    assert_eq!(
        err(&service("run = [\"x\"]\nreload-on = [\"etc/x.conf\"]\n")),
        "medic.toml:3:14: `reload-on` in [service.x]: `etc/x.conf` is not an absolute path, and \
         this config was not read from a file whose directory it could be taken from; write it \
         from `/`"
    );
    assert_eq!(
        err(&service("run = [\"x\"]\nenv = { TZ = 1 }\n")),
        "medic.toml:3:14: `TZ` in [service.x.env] must be a string, found integer"
    );
}

#[test]
fn toml_syntax_errors_have_a_place() {
    assert_eq!(
        err("[service.a]\nrun = [\"x\" \"y\"]\n"),
        "medic.toml:2:12: TOML syntax: missing comma between array elements, expected `,`"
    );
    assert_eq!(
        err("[service.a]\nrun = [\"x\"]\n[service.a]\n"),
        "medic.toml:3:10: TOML syntax: `a` is defined twice; merge the two"
    );
}

#[test]
fn columns_count_characters() {
    assert_eq!(
        err(&service("run = [\"x\"]\nenv = { A = \"é→\", B = 2 }\n")),
        "medic.toml:3:23: `B` in [service.x.env] must be a string, found integer"
    );
}

#[test]
fn all_problems_are_reported_at_once_in_file_order() {
    let text = r#"[daemon]
trace-size = "huge"

[service.b]
run = ["b"]
needs = ["a"]
stop-timeout = "soon"

[service.a]
run = ["a"]
needs = ["b", "c"]
memroy-max = "1MiB"
"#;
    assert_eq!(
        err(text),
        "medic.toml:2:14: `trace-size` in [daemon]: `huge` is not a size; write it like \"4096\", \
         \"64KiB\", \"48MiB\", \"1GiB\" or \"100MB\"\n\
         medic.toml:7:16: `stop-timeout` in [service.b]: `soon` is not a duration; write it like \
         \"250ms\", \"5s\", \"5m\" or \"1h 30m\"\n\
         medic.toml:11:10: dependency cycle b -> a -> b: no service can start first; remove one of \
         these `needs` or `after` entries\n\
         medic.toml:11:15: [service.a] needs `c`, which is not a service\n\
         medic.toml:12:1: unknown key `memroy-max` in [service.a]; did you mean `memory-max`?"
    );
    let errors = parse(text, "medic.toml").unwrap_err();
    assert_eq!(errors.errors.len(), 5);
    assert_eq!(
        (errors.errors[0].line, errors.errors[0].column),
        (Some(2), Some(14))
    );
}

#[test]
fn durations_have_a_ceiling_of_100_years() {
    let stop = |v: &str| {
        err(&service(&format!(
            "run = [\"x\"]\nstop-timeout = \"{v}\"\n"
        )))
    };
    // Issue 9: this passed `medic check`, then overflowed the daemon's shutdown deadline.
    assert_eq!(
        stop("18446744073709551615s"),
        "medic.toml:3:16: `stop-timeout` in [service.x]: `18446744073709551615s` is too large; \
         the longest is \"100y\" (100 years)"
    );
    // Past what humantime itself can count: too large too, not "not a duration".
    assert!(stop("18446744073709551616s").contains("`18446744073709551616s` is too large"));
    assert!(stop("101y").contains("`101y` is too large"));
    assert!(stop("36525d 1s").contains("is too large"));
    assert!(stop("0.5ns").contains("too large or finer than a nanosecond"));
    let c = ok(&service("run = [\"x\"]\nstop-timeout = \"100y\"\n"));
    assert_eq!(c.services[0].stop_timeout, limits::MAX_DURATION);
    // Every duration key goes through the same check.
    for key in [
        "start-timeout",
        "debounce",
        "forgive-after",
        "max-backoff",
        "retry-after",
        "memory-every",
    ] {
        let e = err(&service(&format!("run = [\"x\"]\n{key} = \"200y\"\n")));
        assert!(
            e.contains(&format!("`{key}` in [service.x]: `200y` is too large")),
            "{e}"
        );
    }
    let e = err(&service(
        "run = [\"x\"]\nprobe = { file = \"/f\", timeout = \"200y\" }\n[service.x.on.exited]\nsettle = \"200y\"\n",
    ));
    assert!(
        e.contains("`timeout` in [service.x.probe]: `200y` is too large"),
        "{e}"
    );
    assert!(
        e.contains("`settle` in [service.x.on.exited]: `200y` is too large"),
        "{e}"
    );
}

#[test]
fn sampling_periods_have_a_floor_of_100ms() {
    assert_eq!(
        err(&service("run = [\"x\"]\nmemory-every = \"1ns\"\n")),
        "medic.toml:3:16: `memory-every` in [service.x]: `1ns` is too small; the shortest is \
         \"100ms\""
    );
    assert_eq!(
        err(&service(
            "run = [\"x\"]\nprobe = { file = \"/f\", every = \"99ms\" }\n"
        )),
        "medic.toml:3:32: `every` in [service.x.probe]: `99ms` is too small; the shortest is \
         \"100ms\""
    );
    let c = ok(&service(
        "run = [\"x\"]\nmemory-every = \"100ms\"\nprobe = { file = \"/f\", every = \"100ms\" }\n",
    ));
    assert_eq!(c.services[0].memory_every, limits::MIN_POLL_PERIOD);
    assert_eq!(
        c.services[0].probe.as_ref().map(|p| p.every),
        Some(limits::MIN_POLL_PERIOD)
    );
}

#[test]
fn sizes_have_a_ceiling_of_1_eib_and_never_wrap() {
    let bad = |v: &str| err(&service(&format!("run = [\"x\"]\nmemory-max = {v}\n")));
    // Issue 9: this wrapped around to 543 bytes (and panicked in a debug build).
    assert_eq!(
        bad("\"340282366920938463463374607431768211.999KB\""),
        "medic.toml:3:14: `memory-max` in [service.x]: \
         `340282366920938463463374607431768211.999KB` is too large; the largest is \"1EiB\" \
         (1152921504606846976 bytes)"
    );
    for v in [
        "\"2EiB\"",
        "\"1025PiB\"",
        "\"18446744073709551616\"",
        "\"99999999999999999999999999999999999999999999999999TiB\"",
        "\"1152921504606846977\"",
    ] {
        assert!(
            bad(v).contains("is too large; the largest is \"1EiB\""),
            "{v}"
        );
    }
    assert_eq!(
        bad("1152921504606846977"),
        "medic.toml:3:14: `memory-max` in [service.x]: `1152921504606846977` is too large; use a \
         number from 0 to 1152921504606846976"
    );
    let limit = |v: &str| {
        ok(&service(&format!("run = [\"x\"]\nmemory-max = {v}\n"))).services[0].memory_max
    };
    assert_eq!(
        limit("\"1EiB\""),
        Some(MemoryLimit::Bytes(limits::MAX_SIZE))
    );
    assert_eq!(
        limit("\"1024PiB\""),
        Some(MemoryLimit::Bytes(limits::MAX_SIZE))
    );
    assert_eq!(
        limit("1152921504606846976"),
        Some(MemoryLimit::Bytes(limits::MAX_SIZE))
    );
    let e = err("[daemon]\ntrace-size = \"3EiB\"\n");
    assert!(
        e.contains("`trace-size` in [daemon]: `3EiB` is too large"),
        "{e}"
    );
}

/// A config with `n` unknown keys in one service.
fn unknown_keys(n: usize) -> String {
    let mut text = String::from("[service.a]\nrun = [\"/bin/true\"]\n");
    for i in 0..n {
        text.push_str(&format!("unknown-key-{i} = 1\n"));
    }
    text
}

#[test]
fn a_flood_of_unknown_keys_is_cut_at_100_and_counted() {
    // Issue 9 item 11: 50,000 of these took minutes (each error counted lines from the start).
    let errors = parse(&unknown_keys(50_000), "medic.toml").unwrap_err();
    assert_eq!(errors.total, 50_000);
    assert_eq!(errors.errors.len(), MAX_REPORTED_ERRORS);
    for (i, e) in errors.errors.iter().enumerate() {
        assert_eq!((e.line, e.column), (Some(i as u32 + 3), Some(1)));
        let start = format!("unknown key `unknown-key-{i}` in [service.a]; use one of `run`, ");
        assert!(e.message.starts_with(&start), "{}", e.message);
    }
    let shown = errors.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), MAX_REPORTED_ERRORS + 1);
    assert!(lines[99].starts_with("medic.toml:102:1: unknown key `unknown-key-99`"));
    assert_eq!(
        lines[100],
        "medic.toml: … and 49900 more problems; fix these first, then check again"
    );
    // At the cap exactly, nothing is left out and nothing is said about it.
    let errors = parse(&unknown_keys(MAX_REPORTED_ERRORS), "medic.toml").unwrap_err();
    assert_eq!(errors.total, MAX_REPORTED_ERRORS);
    assert!(!errors.to_string().contains("more problem"));
    let errors = parse(&unknown_keys(MAX_REPORTED_ERRORS + 1), "medic.toml").unwrap_err();
    assert!(errors
        .to_string()
        .ends_with("medic.toml: … and 1 more problem; fix these first, then check again"));
}

#[test]
fn a_flood_of_unknown_needs_is_cut_at_100_with_suggestions_first() {
    // Issue 9 item 11: 10,000 of these took minutes (each compared with every name, by edit
    // distance, however long). Here: 10,000 services, each needing a misspelt neighbour, and
    // one long unknown name each.
    let long = "x".repeat(1000);
    let mut text = String::new();
    for i in 0..10_000 {
        text.push_str(&format!(
            "[service.svc-{i}]\nrun = [\"/bin/true\"]\nneeds = [\"scv-{i}\", \"{long}-{i}\"]\n"
        ));
    }
    let errors = parse(&text, "medic.toml").unwrap_err();
    assert_eq!(errors.total, 20_000);
    assert_eq!(errors.errors.len(), MAX_REPORTED_ERRORS);
    let first = &errors.errors[0];
    assert_eq!((first.line, first.column), (Some(3), Some(10)));
    assert_eq!(
        first.message,
        "[service.svc-0] needs `scv-0`, which is not a service; did you mean `svc-0`?"
    );
    let second = &errors.errors[1];
    assert_eq!((second.line, second.column), (Some(3), Some(19)));
    assert_eq!(
        second.message,
        format!("[service.svc-0] needs `{long}-0`, which is not a service")
    );
    // The last one reported is service 49's second need, at line 150.
    let last = &errors.errors[99];
    assert_eq!(last.line, Some(150));
    assert!(last.message.starts_with("[service.svc-49] needs `xxx"));
    assert!(errors
        .to_string()
        .ends_with("medic.toml: … and 19900 more problems; fix these first, then check again"));
}

#[test]
fn suggestions_skip_long_words_and_stop_when_the_budget_is_spent() {
    use super::values::suggest;
    let mut budget = u64::MAX;
    assert_eq!(
        suggest("neds", ["needs", "after"], &mut budget),
        Some("needs")
    );
    assert_eq!(
        suggest("mem", ["memory-max"], &mut budget),
        Some("memory-max")
    );
    // A long word is compared by prefix only: no edit distance, nothing spent.
    let long = "n".repeat(65);
    let before = budget;
    assert_eq!(suggest(&long, ["needs"], &mut budget), None);
    let longer = format!("{long}x");
    assert_eq!(
        suggest(&long, [longer.as_str()], &mut budget),
        Some(longer.as_str())
    );
    assert_eq!(budget, before);
    // A candidate whose length alone is too far costs nothing either.
    assert_eq!(suggest("abc", ["xyz-abcdefghijk"], &mut budget), None);
    assert_eq!(budget, before);
    // With the budget spent, there is no suggestion, and no panic.
    let mut budget = 10;
    assert_eq!(suggest("neds", ["needs"], &mut budget), None);
    assert_eq!(budget, 0);
}

#[test]
fn relative_paths_are_taken_from_the_config_files_directory() {
    let text = "[service.x]\nrun = [\"bin/x\", \"arg/not/a/path\"]\ncwd = \"../run\"\n\
                reload-on = [\"./x.conf\"]\nready = { file = \"state/x.ready\" }\n\
                [service.y]\nrun = [\"sleep\", \"1\"]\nstop-signal = \"INT\"\n";
    let config = parse(text, "/etc/medic/medic.toml").expect("valid");
    let x = &config.services[0];
    assert_eq!(
        x.kind,
        Kind::Process {
            argv: vec!["/etc/medic/bin/x".into(), "arg/not/a/path".into()]
        }
    );
    assert_eq!(x.cwd.as_deref(), Some("/etc/run"));
    assert_eq!(x.reload_on, ["/etc/medic/x.conf"]);
    assert_eq!(
        x.ready,
        Readiness::Poll(Check::File("/etc/medic/state/x.ready".into()))
    );
    // A bare name is looked up in PATH when it is started, not here.
    assert_eq!(
        config.services[1].kind,
        Kind::Process {
            argv: vec!["sleep".into(), "1".into()]
        }
    );
    assert_eq!(config.daemon.base_dir.as_deref(), Some("/etc/medic"));
    // Without a directory to take them from, relative paths are refused.
    assert!(parse(text, "medic.toml").is_err());
    assert!(parse_in(text, "medic.toml", Some("/srv")).is_ok());
}

#[test]
fn a_nul_character_is_refused_wherever_it_hides() {
    for text in [
        "[service.x]\nrun = [\"/bin/x\\u0000\"]\n",
        "[service.x]\nrun = [\"/bin/x\", \"a\\u0000b\"]\n",
        "[service.x]\nrun = [\"/bin/x\"]\nenv = { A = \"1\\u00002\" }\n",
        "[service.x]\nrun = [\"/bin/x\"]\ncwd = \"/tmp\\u0000\"\n",
    ] {
        let e = parse(text, "/m.toml").expect_err(text).to_string();
        assert!(e.contains("NUL character"), "{text}: {e}");
    }
}

#[test]
fn numeric_user_and_group_and_a_capitalised_never() {
    let c = parse(
        "[service.x]\nrun = [\"/bin/x\"]\nuser = 0\ngroup = 65534\n",
        "/m.toml",
    )
    .unwrap();
    assert_eq!(c.services[0].user.as_deref(), Some("0"));
    assert_eq!(c.services[0].group.as_deref(), Some("65534"));
    let e = parse(
        "[service.x]\nrun = [\"/bin/x\"]\nretry-after = \"Never\"\n",
        "/m.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("write \"never\" (lower case)"), "{e}");
}

#[test]
fn device_services_match_keys_and_attrs() {
    let c = ok(r#"
[service.modem]
device = { subsystem = "tty", name = "ttyUSB*", devtype = "x", driver = "option", attrs = { idVendor = "12d1" } }
[service.modem.on.absent]
heal = { run = ["/usr/sbin/usb_modeswitch", "-c", "/etc/usb_modeswitch.conf"] }
settle = "15s"
"#);
    let Kind::Device { matcher } = &c.services[0].kind else {
        panic!("not a device: {:?}", c.services[0].kind);
    };
    assert_eq!(
        matcher.describe(),
        "subsystem=tty name=ttyUSB* devtype=x driver=option idVendor=12d1"
    );
    assert_eq!(c.services[0].kind.name(), "device");
    assert_eq!(c.services[0].on[&Condition::Absent].settle, Some(secs(15)));
}

#[test]
fn device_services_refuse_what_cannot_fit() {
    assert_eq!(
        err(&service("device = {}\n")),
        "medic.toml:2:10: `device` in [service.x]: an empty `device` matches nothing; give at \
         least one of subsystem, name, devtype, driver, attrs"
    );
    let e = err(&service("device = { subsytem = \"tty\" }\n"));
    assert!(e.contains("did you mean `subsystem`"), "{e}");
    let e = err(&service("device = { name = \"a/b\" }\n"));
    assert!(e.contains("no `/`"), "{e}");
    assert_eq!(
        err(&service(
            "device = { subsystem = \"tty\" }\non.absent.heal = \"restart\"\n"
        )),
        "medic.toml:3:18: `heal` in [service.x.on.absent]: `restart` cannot heal a device, medic \
         runs no process for it; use { run = [...] }"
    );
    let e = err(&service(
        "device = { subsystem = \"tty\" }\nready-when = \"up\"\n",
    ));
    assert!(
        e.contains("a device is ready while at least one device matches"),
        "{e}"
    );
    let e = err(&service(
        "device = { subsystem = \"tty\" }\non.no-carrier.healthy = true\n",
    ));
    assert!(e.contains("a device service is never `no-carrier`"), "{e}");
    let e = err(&service(
        "device = { subsystem = \"tty\" }\nrun = [\"x\"]\n",
    ));
    assert!(e.contains("device"), "{e}");
}
