//! `medic hook` against real DHCP clients and servers: an `isp` namespace runs the servers, a
//! `router` namespace the client, joined by a veth pair (`isp0` ⇄ `wan`). The client's script
//! is the README's two-line wrapper around `medic hook CLIENT --service wan --print`, appending
//! each map it prints to a file that the test reads as a stream of JSON values.
//!
//! - DHCPv6: `radvd` (RA with the managed flag, a prefix and RDNSS) and ISC `dhcpd -6` (a
//!   `prefix6` pool) in `isp`; `dhcpcd -6` asking for an address and a delegated prefix in
//!   `router`. ISC dhcpd rather than kea: one config file and one foreground process, where kea
//!   needs a JSON config, a lease-file layout and a control agent to say the same.
//! - DHCPv4: busybox `udhcpd` in `isp`, busybox `udhcpc -q` in `router`.
//! - odhcp6c is not packaged in Debian, so it is not tested here (`cli_hook` feeds it recorded
//!   environments).
//!
//! Every daemon runs in the foreground with its config, leases and pid file in a temporary
//! directory; dhcpcd gets its own `/var/lib/dhcpcd` and `/run/dhcpcd` (bind mounts inside the
//! mount namespace that `ip netns exec` makes), so it shares nothing with a dhcpcd on the host.
//! Every process is killed when the test ends, pass or fail ([`Proc`], then [`Lab`] kills
//! whatever is left in its namespaces), and the namespaces are deleted.
//!
//! Needs root and the packages that `.ci/run` installs (isc-dhcp-server, radvd, dhcpcd-base,
//! busybox); skipped with a message without them, never skipped in CI.

mod netns_common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use netns_common::Netns;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

/// How long one awaited exchange may take. The exchanges here take about a second (DHCPv6 with
/// its initial delays, a few); this bounds a test that fails at a few tens of seconds.
const EXCHANGE: Duration = Duration::from_secs(15);

/// How long a daemon may take to exit on SIGTERM before it is killed.
const STOP: Duration = Duration::from_secs(5);

/// Two namespaces joined by a veth pair, and a temporary directory for configs, leases, pid
/// files, logs and the printed maps.
struct Lab {
    dir: tempfile::TempDir,
    procs: Vec<Proc>,
    isp: Netns,
    router: Netns,
}

impl Lab {
    /// `None` (after saying why) when this machine cannot run it: not root, no `ip`, or a
    /// program missing. Each is a failure under `CI`.
    fn new(tag: &str, programs: &[&str]) -> Option<Lab> {
        let isp = Netns::new(&format!("{tag}isp"))?;
        let router = Netns::new(&format!("{tag}rtr"))?;
        for program in programs {
            if find_program(program).is_none() {
                medic_tests::skip(
                    "this DHCP test",
                    &format!("`{program}` is not installed (.ci/run installs it)"),
                );
                return None;
            }
        }
        // No duplicate address detection: the link-local addresses are usable at once, and
        // the DHCPv6 exchange does not wait a second for them.
        for ns in [&isp, &router] {
            ns.sysctl("ipv6/conf/all/accept_dad", "0");
            ns.sysctl("ipv6/conf/default/accept_dad", "0");
        }
        // A router advertises a default route only when it forwards.
        isp.sysctl("ipv6/conf/all/forwarding", "1");
        router.veth_to("wan", &isp, "isp0");
        isp.ip(&["addr", "add", "2001:db8:ffff::1/64", "dev", "isp0", "nodad"]);
        isp.ip(&["addr", "add", "192.0.2.1/24", "dev", "isp0"]);
        let dir = tempfile::tempdir().expect("temporary directory");
        Some(Lab {
            dir,
            procs: Vec::new(),
            isp,
            router,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Write `text` to `name` in the temporary directory; returns its path.
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path
    }

    /// The README's wrapper for `client`, printing to `maps`; a hook that exits non-zero or
    /// says anything on stderr leaves it in `errors` (so the test can assert there is none).
    fn wrapper(&self, client: &str, maps: &Path, errors: &Path) -> PathBuf {
        let path = self.write(
            &format!("{client}-wan.sh"),
            &format!(
                "#!/bin/sh\n{} hook {client} --service wan --print \"$@\" >> {} 2>> {} || echo \"exit $? for $*\" >> {}\n",
                medic_tests::medic_bin().display(),
                maps.display(),
                errors.display(),
                errors.display(),
            ),
        );
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod the wrapper");
        path
    }

    /// Start `argv` inside `ns` (`ip netns exec`, which execs it: the child is the daemon),
    /// its stdout and stderr in `NAME.log`; returns its index in `procs`. `argv[0]` is looked
    /// up with [`find_program`].
    fn start(&mut self, ns: Side, name: &str, argv: &[&str]) -> usize {
        let program = find_program(argv[0]).unwrap_or_else(|| panic!("{} not found", argv[0]));
        let log = self.path(&format!("{name}.log"));
        let out = File::create(&log).expect("create a log file");
        let ns_name = match ns {
            Side::Isp => &self.isp.name,
            Side::Router => &self.router.name,
        };
        let child = Command::new("ip")
            .args(["netns", "exec", ns_name])
            .arg(program)
            .args(&argv[1..])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup the log file"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        self.procs.push(Proc {
            name: name.to_string(),
            child: Some(child),
            log,
        });
        self.procs.len() - 1
    }

    /// Every process's log, for failure messages.
    fn logs(&self) -> String {
        let mut text = String::new();
        for p in &self.procs {
            text += &format!("--- {} ---\n{}\n", p.name, read(&p.log));
        }
        text
    }

    /// Wait until `check` finds something, or fail after [`EXCHANGE`] with `describe()` and
    /// every log.
    fn wait<T>(
        &self,
        what: &str,
        mut check: impl FnMut() -> Option<T>,
        describe: impl Fn() -> String,
    ) -> T {
        let start = Instant::now();
        loop {
            if let Some(found) = check() {
                return found;
            }
            if start.elapsed() > EXCHANGE {
                panic!(
                    "no {what} within {EXCHANGE:?}\n{}\n{}",
                    describe(),
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait for a printed map (in `maps`) after the first `skip` that satisfies `want`;
    /// returns it and how many maps there were up to it.
    fn wait_for_map(
        &self,
        what: &str,
        maps: &Path,
        skip: usize,
        want: impl Fn(&Value) -> bool,
    ) -> (Value, usize) {
        self.wait(
            what,
            || {
                let all = printed_maps(maps);
                let at = all.iter().skip(skip).position(&want)? + skip;
                Some((all[at].clone(), at + 1))
            },
            || {
                format!(
                    "maps printed:\n{}",
                    one_per_line(&without_raw(&printed_maps(maps)))
                )
            },
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for p in &mut self.procs {
            p.stop();
        }
        // Whatever a daemon left behind (dhcpcd's privilege-separated helpers, should it have
        // been killed) is in one of these namespaces: kill it by pid before deleting them.
        for ns in [&self.isp, &self.router] {
            if let Ok(out) = Command::new("ip")
                .args(["netns", "pids", &ns.name])
                .output()
            {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse() {
                        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    }
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Side {
    Isp,
    Router,
}

/// A daemon the test started; stopped (SIGTERM, then SIGKILL after [`STOP`]) when the lab is
/// dropped, if not before.
struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn pid(&self) -> Pid {
        let child = self.child.as_ref().expect("a running process");
        Pid::from_raw(child.id() as i32)
    }

    fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).unwrap_or_else(|e| panic!("{signal} to {}: {e}", self.name));
    }

    /// Whether it is still running.
    fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stop it and reap it; its exit status (`None`: it had to be killed, or was reaped).
    fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < STOP {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "{} did not exit within {STOP:?} of SIGTERM: killed",
            self.name
        );
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Wait (up to `timeout`) for it to exit by itself.
    fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

/// `program` in `$PATH` or the sbin directories (which a root shell has, a test runner may not).
fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file());
    found
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The maps appended to `path` so far: a stream of JSON values; an incomplete last one (the
/// hook still writing) is left for the next look.
fn printed_maps(path: &Path) -> Vec<Value> {
    let text = read(path);
    serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .map_while(Result::ok)
        .collect()
}

/// The maps without their `raw` part, for failure messages that can be read.
fn without_raw(maps: &[Value]) -> Vec<Value> {
    maps.iter()
        .map(|m| {
            let mut m = m.clone();
            if let Some(m) = m.as_object_mut() {
                m.remove("raw");
            }
            m
        })
        .collect()
}

fn one_per_line(maps: &[Value]) -> String {
    maps.iter().map(|m| format!("{m}\n")).collect()
}

fn on_wan(map: &Value) -> bool {
    map["interface"] == "wan"
}

/// The map of dhcpcd's DELEGATED6 event for `lan` that puts `address`/64 on it.
fn delegated_to_lan(map: &Value, address: &str) -> bool {
    map["interface"] == "lan"
        && map["reason"] == "DELEGATED6"
        && map["ipv6"]["delegated"] == json!([{"address": address, "length": "64"}])
}

fn state_is(map: &Value, state: &str) -> bool {
    map["state"] == state
}

/// The `address/length` of each of the map's `ipv6.prefixes`.
fn prefixes(map: &Value) -> Vec<String> {
    map["ipv6"]["prefixes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            format!(
                "{}/{}",
                p["address"].as_str().unwrap_or("?"),
                p["length"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// ISC dhcpd's DHCPv6 config: a fixed server DUID (so that the server restarted with another
/// pool is the same server to the client), lifetimes (preferred 300 s, valid 600 s), DNS, and
/// one /56 to delegate.
fn dhcpd6_conf(pool: &str) -> String {
    dhcpd6_conf_with(pool, 300, 600)
}

/// [`dhcpd6_conf`] with other lifetimes, in seconds.
fn dhcpd6_conf_with(pool: &str, preferred: u32, valid: u32) -> String {
    format!(
        r#"server-duid EN 32473 "medic-isp";
default-lease-time {valid};
preferred-lifetime {preferred};
max-lease-time {valid};
option dhcp6.name-servers 2001:db8:ffff::53;
option dhcp6.domain-search "isp.example";
subnet6 2001:db8:ffff::/64 {{
  range6 2001:db8:ffff::100 2001:db8:ffff::1ff;
  prefix6 {pool} {pool} /56;
}}
"#
    )
}

const RADVD_CONF: &str = "interface isp0 {
  AdvSendAdvert on;
  MinRtrAdvInterval 3;
  MaxRtrAdvInterval 4;
  AdvManagedFlag on;
  AdvOtherConfigFlag on;
  prefix 2001:db8:ffff::/64 { AdvOnLink on; AdvAutonomous on; };
  RDNSS 2001:db8:ffff::5353 { };
};
";

/// dhcpcd: IPv6 only, an address (`ia_na`) and a prefix (`ia_pd`), DHCPv6 started by the
/// RA's managed flag.
const DHCPCD_CONF: &str = "ipv6only
option dhcp6_name_servers, dhcp6_domain_search
ia_na 1
ia_pd 2 lan/0/64
";

impl Lab {
    /// Start `dhcpd -6` with `pool` and a fresh leases file; returns its index in `procs`.
    fn start_dhcpd6(&mut self, run: &str, pool: &str) -> usize {
        let leases = self.write(&format!("dhcpd6-{run}.leases"), "");
        self.start_dhcpd6_with(run, &dhcpd6_conf(pool), &leases)
    }

    /// Start `dhcpd -6` with the config `text` and the leases file `leases` (a server that
    /// comes back with the same file knows its bindings); returns its index in `procs`.
    fn start_dhcpd6_with(&mut self, run: &str, text: &str, leases: &Path) -> usize {
        let conf = self.write(&format!("dhcpd6-{run}.conf"), text);
        let pid = self.path(&format!("dhcpd6-{run}.pid"));
        let argv = [
            "dhcpd",
            "-6",
            "-f",
            "-d",
            "-cf",
            conf.to_str().unwrap(),
            "-lf",
            leases.to_str().unwrap(),
            "-pf",
            pid.to_str().unwrap(),
            "isp0",
        ];
        let at = self.start(Side::Isp, &format!("dhcpd6-{run}"), &argv);
        // Started = listening: "Server starting service." is its last word before serving.
        let log = self.procs[at].log.clone();
        self.wait(
            "dhcpd -6 serving",
            || read(&log).contains("Server starting service").then_some(()),
            String::new,
        );
        at
    }
}

#[test]
fn dhcpcd_prefix_delegation_from_isc_dhcpd_through_a_renumbering_and_the_server_gone() {
    let Some(mut lab) = Lab::new("d6", &["dhcpd", "radvd", "dhcpcd"]) else {
        return;
    };
    let started = Instant::now();
    let maps = lab.path("maps.json");
    let errors = lab.path("hook-errors");
    let script = lab.wrapper("dhcpcd", &maps, &errors);

    let radvd_conf = lab.write("radvd.conf", RADVD_CONF);
    let radvd_pid = lab.path("radvd.pid");
    let argv = [
        "radvd",
        "-n",
        "-m",
        "stderr",
        "-C",
        radvd_conf.to_str().unwrap(),
        "-p",
        radvd_pid.to_str().unwrap(),
    ];
    lab.start(Side::Isp, "radvd", &argv);
    let dhcpd = lab.start_dhcpd6("a", "2001:db8:100::");

    let db = lab.path("dhcpcd-db");
    let run = lab.path("dhcpcd-run");
    std::fs::create_dir(&db).unwrap();
    std::fs::create_dir(&run).unwrap();
    let conf = lab.write("dhcpcd.conf", DHCPCD_CONF);
    // Its own lease/DUID directory and control/pid directory, in this process's mount
    // namespace only (`ip netns exec` made one; mounts do not propagate out of it). The mount
    // points are made, empty, on the host if missing (/run/dhcpcd is, without a dhcpcd).
    let shell = format!(
        "mkdir -p /var/lib/dhcpcd /run/dhcpcd && mount --bind {} /var/lib/dhcpcd && \
         mount --bind {} /run/dhcpcd && exec {} -B -d -6 -f {} -c {} wan",
        db.display(),
        run.display(),
        find_program("dhcpcd").unwrap().display(),
        conf.display(),
        script.display()
    );
    // The LAN side, for dhcpcd to put a /64 of the delegated prefix on (no dummy links:
    // not every kernel has the module).
    lab.router.ip(&[
        "link", "add", "lan", "type", "veth", "peer", "name", "lanpeer",
    ]);
    lab.router.ip(&["link", "set", "lanpeer", "up"]);
    lab.router.ip(&["link", "set", "lan", "up"]);
    let dhcpcd = lab.start(Side::Router, "dhcpcd", &["sh", "-c", &shell]);

    // 1. The delegated prefix from the pool, with the server's lifetimes and DNS.
    let (bound, seen) = lab.wait_for_map("bound map with the delegated prefix", &maps, 0, |m| {
        on_wan(m) && state_is(m, "bound") && !prefixes(m).is_empty()
    });
    assert_eq!(bound["client"], "dhcpcd", "{bound:#}");
    assert_eq!(bound["interface"], "wan", "{bound:#}");
    assert_eq!(
        bound["ipv6"]["prefixes"],
        json!([{"address": "2001:db8:100::", "length": "56", "preferred-s": "300", "valid-s": "600"}]),
        "{bound:#}"
    );
    assert_eq!(
        bound["ipv6"]["dns"],
        json!(["2001:db8:ffff::53"]),
        "{bound:#}"
    );
    assert_eq!(
        bound["ipv6"]["domains"],
        json!(["isp.example"]),
        "{bound:#}"
    );
    let addresses = bound["ipv6"]["addresses"]
        .as_array()
        .expect("ipv6.addresses");
    assert_eq!(addresses.len(), 1, "{bound:#}");
    let address = addresses[0]["address"].as_str().unwrap();
    assert!(
        address.starts_with("2001:db8:ffff::1"),
        "from range6: {bound:#}"
    );
    assert_eq!(addresses[0]["valid-s"], "600", "{bound:#}");
    eprintln!(
        "dhcpcd bound after {:?}: prefix {:?}, address {address}",
        started.elapsed(),
        prefixes(&bound)
    );

    // radvd's RA reached dhcpcd (it started DHCPv6 on its managed flag): a notice, printed
    // with the RA's RDNSS in `raw` only (dhcpcd's RA events are not normalised into `ipv6`).
    let (ra, _) = lab.wait_for_map("ROUTERADVERT notice", &maps, 0, |m| {
        m["reason"] == "ROUTERADVERT"
    });
    assert!(
        state_is(&ra, "notice") && ra.get("ipv6").is_none(),
        "{ra:#}"
    );
    assert_eq!(ra["raw"]["nd1_flags"], "MO", "{ra:#}");
    assert_eq!(
        ra["raw"]["nd1_rdnss1_servers"], "2001:db8:ffff::5353",
        "{ra:#}"
    );
    // dhcpcd puts the first /64 of the delegated prefix on `lan` and runs the hook for `lan`
    // too: a map of its own, with `delegated` and no prefixes.
    let (lan, _) = lab.wait_for_map("DELEGATED6 map for lan", &maps, 0, |m| {
        delegated_to_lan(m, "2001:db8:100::1")
    });
    assert_eq!(prefixes(&lan), Vec::<String>::new(), "{lan:#}");

    // 2. The ISP renumbers: the server comes back with another pool (and no leases). The
    // client's renew finds no binding, it solicits again and gets the new prefix.
    let old = lab.procs[dhcpd].stop();
    assert!(
        old.is_some(),
        "dhcpd -6 did not stop on SIGTERM\n{}",
        lab.logs()
    );
    let dhcpd = lab.start_dhcpd6("b", "2001:db8:200::");
    lab.procs[dhcpcd].signal(Signal::SIGUSR1); // dhcpcd: renew now
    let (renumbered, seen) = lab.wait_for_map("bound map with the new prefix", &maps, seen, |m| {
        on_wan(m) && state_is(m, "bound") && prefixes(m).iter().any(|p| p == "2001:db8:200::/56")
    });
    assert_eq!(
        prefixes(&renumbered),
        ["2001:db8:200::/56"],
        "the old prefix is not in the new map: {renumbered:#}"
    );
    assert_eq!(renumbered["ipv6"]["prefixes"][0]["valid-s"], "600");
    eprintln!(
        "renumbered after {:?}: prefix {:?}",
        started.elapsed(),
        prefixes(&renumbered)
    );

    lab.wait_for_map("DELEGATED6 map for lan, renumbered", &maps, 0, |m| {
        delegated_to_lan(m, "2001:db8:200::1")
    });

    // 3. The server gone: a renew goes unanswered and dhcpcd goes on (its hook too: no error at
    // the end); releasing then prints an unbound map, without a server to tell.
    assert!(lab.procs[dhcpd].stop().is_some(), "dhcpd -6 did not stop");
    let log = lab.procs[dhcpcd].log.clone();
    let renews = |log: &Path| read(log).matches("broadcasting RENEW6").count();
    let before = renews(&log);
    lab.procs[dhcpcd].signal(Signal::SIGUSR1);
    lab.wait(
        "unanswered RENEW6",
        || (renews(&log) > before).then_some(()),
        String::new,
    );
    assert!(lab.procs[dhcpcd].running(), "dhcpcd exited\n{}", lab.logs());
    lab.procs[dhcpcd].signal(Signal::SIGALRM); // dhcpcd: release and exit
    let (released, _) = lab.wait_for_map("unbound map", &maps, seen, |m| {
        on_wan(m) && state_is(m, "unbound")
    });
    assert!(released.get("ipv6").is_none(), "{released:#}");
    let status = lab.procs[dhcpcd].wait_exit(STOP);
    assert!(
        status.is_some_and(|s| s.success()),
        "dhcpcd after release: {status:?}\n{}",
        lab.logs()
    );

    // Every map the hook printed parsed, and no hook run failed or complained.
    assert_eq!(read(&errors), "", "hook errors\n{}", lab.logs());
    let all = printed_maps(&maps);
    assert_eq!(
        all.len(),
        read(&maps).matches("\"client\": \"dhcpcd\"").count(),
        "a printed map that is not JSON"
    );
    eprintln!(
        "{} maps, {:?} in all:\n{}",
        all.len(),
        started.elapsed(),
        one_per_line(&without_raw(&all))
    );
}

#[test]
fn udhcpc_lease_from_udhcpd() {
    let Some(mut lab) = Lab::new("d4", &["busybox"]) else {
        return;
    };
    let started = Instant::now();
    let maps = lab.path("maps.json");
    let errors = lab.path("hook-errors");
    let script = lab.wrapper("udhcpc", &maps, &errors);
    let leases = lab.write("udhcpd.leases", "");
    let conf = lab.write(
        "udhcpd.conf",
        &format!(
            "start 192.0.2.100
end 192.0.2.110
interface isp0
lease_file {}
pidfile {}
opt subnet 255.255.255.0
opt router 192.0.2.1
opt dns 192.0.2.53
opt domain isp.example
opt lease 600
",
            leases.display(),
            lab.path("udhcpd.pid").display()
        ),
    );
    lab.start(
        Side::Isp,
        "udhcpd",
        &["busybox", "udhcpd", "-f", conf.to_str().unwrap()],
    );
    // -q: exit once bound; -t 10 -T 1: ten discovers a second apart, then give up (exit 1).
    let udhcpc = lab.start(
        Side::Router,
        "udhcpc",
        &[
            "busybox",
            "udhcpc",
            "-f",
            "-q",
            "-t",
            "10",
            "-T",
            "1",
            "-s",
            script.to_str().unwrap(),
            "-i",
            "wan",
        ],
    );
    let status = lab.procs[udhcpc].wait_exit(EXCHANGE);
    assert!(
        status.is_some_and(|s| s.success()),
        "udhcpc: {status:?}\n{}",
        lab.logs()
    );
    let (bound, _) = lab.wait_for_map("bound map", &maps, 0, |m| state_is(m, "bound"));
    let ipv4 = &bound["ipv4"];
    let address: std::net::Ipv4Addr = ipv4["address"]
        .as_str()
        .expect("ipv4.address")
        .parse()
        .unwrap();
    assert!(
        (100..=110).contains(&address.octets()[3]) && address.octets()[..3] == [192, 0, 2],
        "from the range: {bound:#}"
    );
    assert_eq!(ipv4["prefix-len"], "24", "{bound:#}");
    assert_eq!(ipv4["router"], "192.0.2.1", "{bound:#}");
    assert_eq!(ipv4["dns"], json!(["192.0.2.53"]), "{bound:#}");
    assert_eq!(ipv4["domain"], "isp.example", "{bound:#}");
    assert_eq!(ipv4["lease-s"], "600", "{bound:#}");
    assert_eq!(bound["interface"], "wan", "{bound:#}");
    assert_eq!(read(&errors), "", "hook errors\n{}", lab.logs());
    // udhcpc deconfigures the interface before it asks, and -q exits without a word more.
    let reasons: Vec<Value> = printed_maps(&maps)
        .iter()
        .map(|m| m["reason"].clone())
        .collect();
    assert_eq!(
        reasons,
        [json!("deconfig"), json!("bound")],
        "{}",
        lab.logs()
    );
    eprintln!("udhcpc bound {address} after {:?}", started.elapsed());
}
