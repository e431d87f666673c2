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
//! - The router for real (issue 14's end-to-end proof): **medic** in `router` supervises
//!   dhcpcd on `wan` (its script `medic hook dhcpcd`) and a real dnsmasq whose config is a
//!   template rendered from the delegated prefix (`subnet(64, 1)`); a third namespace is a
//!   host on the LAN (`lan` ⇄ its `eth0`) that takes its address from dnsmasq's router
//!   advertisements and asks dnsmasq for a name. Through a renumbering (dnsmasq restarted on
//!   the new file, the LAN following), a renew that only moves lifetimes (rendered, unchanged,
//!   nothing done: the daemon's trace shows it) and the server gone (the good file stays).
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
//! busybox, dnsmasq-base); skipped with a message without them, never skipped in CI.

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
    /// Start radvd on `isp0` ([`RADVD_CONF`]).
    fn start_radvd(&mut self) {
        let radvd_conf = self.write("radvd.conf", RADVD_CONF);
        let radvd_pid = self.path("radvd.pid");
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
        self.start(Side::Isp, "radvd", &argv);
    }

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

    lab.start_radvd();
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

// ----- medic supervising dhcpcd, and dnsmasq rendered from the delegation -----------------------

/// The router's medic config. `wan` and `lan` are the links; `dhcp6` is dhcpcd on `wan`, its
/// script the hook (`@DHCPCD@`: see [`dhcpcd_under_medic`]); dnsmasq serves the LAN from a
/// config rendered from dhcp6's delegated prefix: the /64 number 1 of it, whose first address
/// dhcpcd puts on `lan` (`ia_pd 2 lan/1/64`, the router practice of numbering the LAN from the
/// delegation), which is why dnsmasq needs `lan` to have a global address. `bind-dynamic`:
/// dnsmasq listens on `lan`'s addresses as they come and go (dhcpcd moves them on a
/// renumbering); `slaac`: its RAs let hosts number themselves from the prefix.
const ROUTER_CONFIG: &str = r#"
[service.wan]
interface = "wan"
ready-when = "carrier"

[service.lan]
interface = "lan"
ready-when = "ipv6-global"

[service.dhcp6]
run = ["unshare", "--mount", "/bin/sh", "-c", "@DHCPCD@"]
needs = ["wan"]

[service.dnsmasq]
run = ["@DNSMASQ@", "-k", "--log-facility=-", "-C", "@DIR@/dnsmasq.conf"]
needs = ["dhcp6", "lan"]
[[service.dnsmasq.template]]
text = """
{% set lan = dhcp6.ipv6.prefixes[0] | subnet(64, 1) %}
# dhcp6 was delegated {{ dhcp6.ipv6.prefixes[0].address }}/{{ dhcp6.ipv6.prefixes[0].length }}: the LAN is {{ lan }}
interface=lan
bind-dynamic
listen-address={{ lan | host(1) }}
no-resolv
no-hosts
host-record=router.lan,{{ lan | host(1) }}
enable-ra
dhcp-range={{ lan | host(256) }},{{ lan | host(511) }},slaac,64,10m
dhcp-leasefile=@DIR@/dnsmasq.leases
pid-file=
"""
target = "@DIR@/dnsmasq.conf"
check = ["@DNSMASQ@", "--test", "-C", "{file}"]
# dnsmasq rereads its hosts and DHCP host/option files on SIGHUP, never its config file: a new
# dhcp-range, listen-address or host-record takes a restart.
on-change = "restart"
"#;

/// What the template renders for the delegated `prefix` (a /56) and `dir`.
fn dnsmasq_conf(prefix: &str, lan: &str, dir: &Path) -> String {
    format!(
        "
# dhcp6 was delegated {prefix}/56: the LAN is {lan}::/64
interface=lan
bind-dynamic
listen-address={lan}::1
no-resolv
no-hosts
host-record=router.lan,{lan}::1
enable-ra
dhcp-range={lan}::100,{lan}::1ff,slaac,64,10m
dhcp-leasefile={}/dnsmasq.leases
pid-file=
",
        dir.display()
    )
}

/// dhcpcd as the router runs it: IPv6 only, an address and a prefix; the prefix's /64 number 1
/// goes on `lan`.
const ROUTER_DHCPCD_CONF: &str = "ipv6only
option dhcp6_name_servers, dhcp6_domain_search
ia_na 1
ia_pd 2 lan/1/64
";

/// The shell line that runs dhcpcd under medic: in a mount namespace of its own (`unshare
/// --mount`, which execs: dhcpcd keeps the pid medic started), with the lab's directories for
/// its leases and control socket, so that it shares nothing with a dhcpcd on the host; its
/// log in `dhcpcd.log`.
fn dhcpcd_under_medic(lab: &Lab, hook: &Path) -> String {
    let db = lab.path("dhcpcd-db");
    let run = lab.path("dhcpcd-run");
    std::fs::create_dir(&db).unwrap();
    std::fs::create_dir(&run).unwrap();
    let conf = lab.write("dhcpcd.conf", ROUTER_DHCPCD_CONF);
    format!(
        "mkdir -p /var/lib/dhcpcd /run/dhcpcd && mount --bind {} /var/lib/dhcpcd && \
         mount --bind {} /run/dhcpcd && exec {} -B -d -6 -j {} -f {} -c {} wan",
        db.display(),
        run.display(),
        find_program("dhcpcd").unwrap().display(),
        lab.path("dhcpcd.log").display(),
        conf.display(),
        hook.display()
    )
}

/// The LAN side of the router: `eth0` in a namespace of its own, a host that takes its address
/// from the router advertisements it hears (SLAAC) and asks the router for names.
struct LanHost {
    ns: Netns,
}

impl LanHost {
    /// Its global address in the /64 `lan` (`2001:db8:100:1`), once it has one.
    fn address_in(&self, lan: &str) -> Option<std::net::Ipv6Addr> {
        let net: std::net::Ipv6Addr = format!("{lan}::").parse().unwrap();
        let out = self
            .ns
            .try_ip(&["-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"]);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|word| word.split_once('/'))
            .filter_map(|(address, _)| address.parse::<std::net::Ipv6Addr>().ok())
            .find(|a| a.segments()[..4] == net.segments()[..4])
    }

    /// Asks the DNS server `server` (port 53) for the AAAA record of `name`: the address in
    /// its answer, or why there is none.
    fn ask_aaaa(&self, server: &str, name: &str) -> Result<std::net::Ipv6Addr, String> {
        let server: std::net::Ipv6Addr = server.parse().unwrap();
        // Header: id "me", recursion desired, one question.
        let mut query = vec![b'm', b'e', 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            query.push(label.len() as u8);
            query.extend(label.as_bytes());
        }
        query.extend([0, 0, 28, 0, 1]); // end of name, AAAA, IN
        let answer = self.ns.run(|| {
            let socket = std::net::UdpSocket::bind("[::]:0").map_err(|e| e.to_string())?;
            socket
                .set_read_timeout(Some(Duration::from_secs(1)))
                .map_err(|e| e.to_string())?;
            socket
                .send_to(&query, (server, 53))
                .map_err(|e| format!("send: {e}"))?;
            let mut buf = [0u8; 512];
            let n = socket
                .recv(&mut buf)
                .map_err(|e| format!("no answer: {e}"))?;
            Ok::<_, String>(buf[..n].to_vec())
        })?;
        aaaa_in(&answer, query.len())
    }
}

/// The address of the first answer record of a DNS reply to a one-question AAAA query whose
/// question ends at `question_end`.
fn aaaa_in(reply: &[u8], question_end: usize) -> Result<std::net::Ipv6Addr, String> {
    let u16_at = |at: usize| {
        reply
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| format!("a reply of {} bytes", reply.len()))
    };
    if reply.get(..2) != Some(b"me") || reply.get(2).is_none_or(|b| b & 0x80 == 0) {
        return Err(format!("not a reply to the query: {reply:02x?}"));
    }
    let rcode = u16_at(2)? & 0x0f;
    if rcode != 0 || u16_at(6)? == 0 {
        return Err(format!("rcode {rcode}, {} answers", u16_at(6)?));
    }
    // The answer's name: a pointer (to the question's), or labels.
    let mut at = question_end;
    loop {
        match reply.get(at) {
            None => return Err("a reply cut short".into()),
            Some(b) if b & 0xc0 == 0xc0 => break at += 2,
            Some(0) => break at += 1,
            Some(&len) => at += 1 + usize::from(len),
        }
    }
    if u16_at(at)? != 28 || u16_at(at + 8)? != 16 {
        return Err(format!("not an AAAA record: {reply:02x?}"));
    }
    let data: [u8; 16] = reply
        .get(at + 10..at + 26)
        .and_then(|d| d.try_into().ok())
        .ok_or("a record cut short")?;
    Ok(data.into())
}

/// The modification time and bytes of `path`.
fn stamp(path: &Path) -> (std::time::SystemTime, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let modified = std::fs::metadata(path).and_then(|m| m.modified()).unwrap();
    (modified, bytes)
}

/// History records of `service` whose note contains `text`.
fn notes_with(d: &medic_tests::Daemon, service: &str, text: &str) -> Vec<Value> {
    d.history(service)
        .into_iter()
        .filter(|r| r["note"].as_str().unwrap_or("").contains(text))
        .collect()
}

/// What the router's medic, dhcpcd and the servers did, for failure messages.
fn router_state(d: &medic_tests::Daemon, lab: &Lab) -> String {
    let medic = |args: &[&str]| String::from_utf8_lossy(&d.medic(args).stdout).into_owned();
    format!(
        "{}\n--- history dhcp6 ---\n{}--- outputs dhcp6 ---\n{}\n--- logs dnsmasq ---\n{}\
         --- dnsmasq.conf ---\n{}\n--- dhcpcd.log ---\n{}\n--- hook errors ---\n{}\n{}",
        d.describe("dnsmasq"),
        medic(&["history", "dhcp6"]),
        medic(&["output", "dhcp6", "--json"]),
        medic(&["logs", "dnsmasq", "-n", "40"]),
        read(&d.path("dnsmasq.conf")),
        read(&lab.path("dhcpcd.log")),
        read(&lab.path("hook-errors")),
        lab.logs()
    )
}

/// Waits until dnsmasq runs (a process other than `old`) on the config rendered from the
/// delegated `prefix`, and serves the LAN `lan` (a /64, `2001:db8:100:1`) from it: the host
/// takes an address from its router advertisement, and its DNS answers on the rendered
/// listen-address with the rendered record. Returns dnsmasq's pid.
fn wait_serving(
    d: &medic_tests::Daemon,
    lab: &Lab,
    host: &LanHost,
    prefix: &str,
    lan: &str,
    old: Option<u32>,
) -> u32 {
    let started = Instant::now();
    let conf = d.path("dnsmasq.conf");
    let pid = medic_tests::wait_for(
        &format!("dnsmasq running on the config rendered from {prefix}/56"),
        || {
            let s = d.service("dnsmasq");
            let pid = s["pid"].as_u64().map(|p| p as u32);
            let rendered = read(&conf) == dnsmasq_conf(prefix, lan, d.dir.path());
            (s["condition"] == "ready" && pid != old && rendered).then_some(pid?)
        },
        || router_state(d, lab),
    );
    let address = medic_tests::wait_for(
        &format!("the LAN host to take an address in {lan}::/64 from dnsmasq's RA"),
        || host.address_in(lan),
        || router_state(d, lab),
    );
    let router = format!("{lan}::1");
    let answer = medic_tests::wait_for(
        &format!("dnsmasq to answer router.lan on [{router}]:53"),
        || host.ask_aaaa(&router, "router.lan").ok(),
        || {
            format!(
                "{:?}\n{}",
                host.ask_aaaa(&router, "router.lan"),
                router_state(d, lab)
            )
        },
    );
    assert_eq!(answer.to_string(), router, "the rendered host-record");
    eprintln!(
        "dnsmasq (pid {pid}) serves {lan}::/64 ({:?} after the file): the host took {address}, \
         router.lan is {answer}",
        started.elapsed()
    );
    pid
}

/// `medic replay --verbose` of the daemon's trace saved now: one line per step, each step
/// replayed through the kernel to the same effects (a divergence fails the test).
fn trace_steps(d: &medic_tests::Daemon, lab: &Lab) -> Vec<String> {
    let file = lab.path("trace");
    d.medic_ok(&["trace", "save", file.to_str().unwrap()]);
    let out = medic_tests::medic(&["replay", file.to_str().unwrap(), "--verbose"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the trace does not replay: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .filter(|l| l.starts_with("step "))
        .map(str::to_string)
        .collect()
}

#[test]
fn medic_runs_dhcpcd_and_a_dnsmasq_rendered_from_the_delegated_prefix_through_a_renumbering() {
    let Some(mut lab) = Lab::new("md", &["dhcpd", "radvd", "dhcpcd", "dnsmasq", "unshare"]) else {
        return;
    };
    let Some(ns) = Netns::new("mdhost") else {
        return;
    };
    let started = Instant::now();
    ns.sysctl("ipv6/conf/all/accept_dad", "0");
    ns.sysctl("ipv6/conf/default/accept_dad", "0");
    lab.router.veth_to("lan", &ns, "eth0");
    let host = LanHost { ns };

    lab.start_radvd();
    let dhcpd = lab.start_dhcpd6("a", "2001:db8:100::");

    // dhcpcd runs its script with an empty environment: the wrapper names the service and
    // the daemon's state directory; a run that fails leaves its words in `hook-errors`.
    let hook = lab.path("dhcpcd-hook");
    let errors = lab.path("hook-errors");
    let dnsmasq = find_program("dnsmasq").unwrap();
    let config = ROUTER_CONFIG
        .replace("@DHCPCD@", &dhcpcd_under_medic(&lab, &hook))
        .replace("@DNSMASQ@", &dnsmasq.display().to_string());
    let mut d = medic_tests::Daemon::prepare(&config);
    lab.write(
        "dhcpcd-hook",
        &format!(
            "#!/bin/sh\n{} hook dhcpcd --service dhcp6 --state-dir {} \"$@\" 2>> {} || echo \"exit $? for $reason\" >> {}\n",
            medic_tests::medic_bin().display(),
            d.state.display(),
            errors.display(),
            errors.display(),
        ),
    );
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    lab.router.run(|| d.launch());

    let conf = d.path("dnsmasq.conf");
    let dhcpcd_log = lab.path("dhcpcd.log");
    let dhcpcd_pid = |d: &medic_tests::Daemon| {
        Pid::from_raw(d.service_pid("dhcp6").expect("dhcpcd runs") as i32)
    };

    // (a) The delegation reaches dnsmasq's file, dnsmasq starts on it and serves the LAN on
    // it: the host takes an address from its router advertisement, and its DNS answers on the
    // rendered listen-address with the rendered record.
    let first = wait_serving(&d, &lab, &host, "2001:db8:100::", "2001:db8:100:1", None);
    assert_eq!(
        notes_with(&d, "dnsmasq", &format!("rendered {}", conf.display())).len(),
        1,
        "rendered before its start\n{}",
        router_state(&d, &lab)
    );

    // (b) The ISP renumbers: the server comes back with another pool and no bindings; dhcpcd
    // renews (SIGUSR1), is told NoBinding, solicits, and publishes the new prefix. dnsmasq's
    // file is rendered again and dnsmasq restarted on it, and the LAN follows.
    assert!(lab.procs[dhcpd].stop().is_some(), "dhcpd -6 did not stop");
    let dhcpd = lab.start_dhcpd6("b", "2001:db8:200::");
    let leases_b = lab.path("dhcpd6-b.leases");
    kill(dhcpcd_pid(&d), Signal::SIGUSR1).unwrap();
    let second = wait_serving(
        &d,
        &lab,
        &host,
        "2001:db8:200::",
        "2001:db8:200:1",
        Some(first),
    );
    let restarts = notes_with(
        &d,
        "dnsmasq",
        &format!("rendered {} (outputs changed)", conf.display()),
    );
    assert_eq!(restarts.len(), 1, "{}", router_state(&d, &lab));
    assert_eq!(restarts[0]["heal"], "restart", "{:#}", restarts[0]);

    // (c) A renew that only moves the lifetimes: the server comes back with the same pool and
    // bindings and other lifetimes (400/700 s; without reusing a young lease, which would
    // answer with what is left of the old ones). dhcp6's outputs change; dnsmasq's file is
    // rendered from them (the trace shows the render, answered `Unchanged`) and nothing else
    // happens.
    assert!(lab.procs[dhcpd].stop().is_some(), "dhcpd -6 did not stop");
    let renewing = format!(
        "dhcp-cache-threshold 0;\n{}",
        dhcpd6_conf_with("2001:db8:200::", 400, 700)
    );
    let dhcpd = lab.start_dhcpd6_with("b2", &renewing, &leases_b);
    let before = stamp(&conf);
    kill(dhcpcd_pid(&d), Signal::SIGUSR1).unwrap();
    medic_tests::wait_for(
        "dhcp6's outputs with the renewed lifetimes",
        || {
            let out = d.medic_ok(&["output", "dhcp6", "--json"]);
            let map: Value = serde_json::from_str(&out).ok()?;
            let renewed = json!([{"address": "2001:db8:200::", "length": "56",
                                  "preferred-s": "400", "valid-s": "700"}]);
            (map["ipv6"]["prefixes"] == renewed).then_some(())
        },
        || router_state(&d, &lab),
    );
    let steps = medic_tests::wait_for(
        "dnsmasq's render of the renewed outputs, unchanged",
        || {
            let steps = trace_steps(&d, &lab);
            let renewed = steps
                .iter()
                .rposition(|s| s.contains("SetOutputs") && s.contains("\"700\""))?;
            steps[renewed..]
                .iter()
                .any(|s| s.contains("RenderDone") && s.contains("Unchanged"))
                .then_some(steps)
        },
        || {
            format!(
                "{}\n{}",
                trace_steps(&d, &lab).join("\n"),
                router_state(&d, &lab)
            )
        },
    );
    let short = |s: &String| s.chars().take(150).collect::<String>();
    let last: Vec<String> = steps.iter().rev().take(3).rev().map(short).collect();
    eprintln!(
        "{} steps in the trace, replayed identically; the last:\n{}",
        steps.len(),
        last.join("\n")
    );
    assert_eq!(stamp(&conf), before, "the file is not touched");
    assert_eq!(d.service_pid("dnsmasq"), Some(second), "no restart");
    assert_eq!(
        notes_with(&d, "dnsmasq", "rendered").len(),
        2,
        "no render but the first and the renumbering's changed a file\n{}",
        router_state(&d, &lab)
    );

    // (d) The server gone: a renew goes unanswered, nothing crashes, the file stays and
    // dnsmasq serves on.
    assert!(lab.procs[dhcpd].stop().is_some(), "dhcpd -6 did not stop");
    let renews = |log: &Path| read(log).matches("broadcasting RENEW6").count();
    let sent = renews(&dhcpcd_log);
    let dhcpcd = dhcpcd_pid(&d);
    kill(dhcpcd, Signal::SIGUSR1).unwrap();
    medic_tests::wait_for(
        "an unanswered RENEW6",
        || (renews(&dhcpcd_log) > sent).then_some(()),
        || router_state(&d, &lab),
    );
    let answer = host.ask_aaaa("2001:db8:200:1::1", "router.lan");
    assert_eq!(
        answer.map(|a| a.to_string()),
        Ok("2001:db8:200:1::1".to_string()),
        "{}",
        router_state(&d, &lab)
    );
    assert_eq!(d.service_pid("dhcp6"), Some(dhcpcd.as_raw() as u32));
    assert_eq!(d.service_pid("dnsmasq"), Some(second));
    assert_eq!(stamp(&conf), before);

    // dhcpcd gives up the lease and exits (SIGALRM: release): the hook publishes an unbound
    // map, without prefixes. dnsmasq's render fails and keeps the good file; dnsmasq runs on
    // (blocked while dhcp6 is restarted, not stopped).
    kill(dhcpcd, Signal::SIGALRM).unwrap();
    medic_tests::wait_for(
        "dnsmasq's render of the unbound map to fail",
        || (!notes_with(&d, "dnsmasq", "the old files stay").is_empty()).then_some(()),
        || router_state(&d, &lab),
    );
    assert_eq!(
        d.service_pid("dnsmasq"),
        Some(second),
        "{}",
        router_state(&d, &lab)
    );
    assert_eq!(stamp(&conf), before);
    // (The release took the delegated address off `lan` too: nothing answers on it now.)

    assert_eq!(read(&errors), "", "hook errors\n{}", router_state(&d, &lab));
    eprintln!(
        "--- history dnsmasq ---\n{}",
        String::from_utf8_lossy(&d.medic(&["history", "dnsmasq"]).stdout)
    );
    eprintln!("all in {:?}", started.elapsed());
}
