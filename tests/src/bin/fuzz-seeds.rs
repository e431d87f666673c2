//! Writes the seed corpus of the fuzz targets (`fuzz/`) into `fuzz/seeds/`:
//!
//! ```sh
//! cargo run -p medic-tests --bin medic-fuzz-seeds -- fuzz/seeds
//! ```
//!
//! Configs from `examples/` and small bad ones, the golden trace and a short run of the kernel
//! (as trace files and as the plain postcard the trace target also reads), and every control
//! request and a few answers, and route-netlink datagrams captured from a real kernel. Rerun it
//! after a format change and commit the result.

use std::path::{Path, PathBuf};

use medic_io::control::{self, Request, Response};
use medic_io::netlink::codec;
use medic_kernel::trace::{self, Trace};
use medic_kernel::{config, Effect, ExitStatus, Input, Instant, Kernel, LinkState};

/// Small configs, good and bad, each reaching another corner of the parser.
const CONFIGS: &[(&str, &str)] = &[
    (
        "limits",
        "[service.a]\nrun = [\"/bin/a\"]\nstop-timeout = \"18446744073709551615s\"\n\
         memory-max = \"340282366920938463463374607431768211.999KB\"\nmemory-every = \"1ns\"\n\
         probe = { run = [\"/bin/p\"], every = \"1ns\", timeout = \"100y\", failures = 0 }\n",
    ),
    (
        "mistakes",
        "[deamon]\n[service.a]\nrun = [\"a\"]\nneed = [\"b\"]\nneeds = [\"b\", \"a\", \"zz\"]\n\
         ready = { tcp = \"localhost\" }\nstop-signal = \"SIGFOO\"\n[service.b]\ninterface = \"eth0:1\"\n\
         needs = [\"a\"]\n[service.b.on.exited]\nheal = \"restart\"\n[service.a.on.blocked]\n\
         heal = \"kill\"\n",
    ),
    (
        "everything",
        "[daemon]\nstate-dir = \"/run/m\"\ntrace-size = \"64KiB\"\nhistory-size = 16\n\
         [service.wan]\ninterface = \"eth0\"\nready-when = \"ipv4\"\n[service.wan.on.admin-down]\n\
         heal = [\"link-up\", { run = [\"/sbin/modprobe\", \"e1000e\"] }]\nsettle = \"10s\"\n\
         [service.fw]\noneshot = [\"/etc/fw\", \"up\"]\nstop = [\"/etc/fw\", \"down\"]\nafter = [\"wan\"]\n\
         [service.d]\nrun = [\"/usr/sbin/d\"]\nneeds = [\"fw\"]\nready = \"sd-notify\"\n\
         reload = { signal = \"HUP\" }\nreload-on = [\"/etc/d.conf\"]\nrestart-on = [\"/etc/d.key\"]\n\
         memory-max = \"12.5%\"\nmemory-every = \"1s\"\nenv = { TZ = \"UTC\" }\nuser = \"nobody\"\n\
         group = \"nogroup\"\ncwd = \"/\"\nstart-timeout = \"5s\"\nstop-signal = \"INT\"\n\
         stop-timeout = \"2s\"\ngive-up-after = 3\nforgive-after = \"1m\"\nmax-backoff = \"30s\"\n\
         retry-after = \"never\"\ndebounce = \"1s\"\n\
         probe = { unix = \"/run/d.sock\", every = \"2s\", reports = \"condition\" }\n\
         [service.d.on.connecting]\nhealthy = false\n",
    ),
    (
        "secrets",
        "[daemon]\nsecrets-dir = \"/etc/medic/secrets\"\n[service.dropbear]\n\
         run = [\"/usr/sbin/dropbear\", \"-F\"]\n\
         [service.dropbear.secret.authorized-keys]\ntarget = \"/root/.ssh/authorized_keys\"\n\
         on-change = \"none\"\n[service.dropbear.secret.host-key]\n\
         target = \"/etc/dropbear/host_key\"\nmode = \"0400\"\nowner = \"root\"\n\
         on-change = \"restart\"\n",
    ),
];

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("create the seed directory");
    std::fs::write(dir.join(name), bytes).expect("write a seed");
}

/// A short run: a link up, boot, spawns answered, one service crashing twice.
fn short_run() -> Trace {
    let text = "[service.wan]\ninterface = \"eth0\"\n[service.a]\nrun = [\"/bin/a\"]\n\
                needs = [\"wan\"]\nprobe = { file = \"/f\", every = \"1s\" }\n[service.b]\n\
                oneshot = [\"/bin/b\"]\nafter = [\"a\"]\n";
    let mut kernel = Kernel::new(config::parse(text, "seed.toml").expect("valid"));
    let mut trace = Trace::new(text, kernel.clone());
    let link = LinkState {
        admin_up: true,
        carrier: true,
        ..LinkState::default()
    };
    let mut inputs = vec![
        Input::Tick,
        Input::LinkChanged {
            ifname: "eth0".into(),
            link: Some(link),
        },
    ];
    let mut effects = Vec::new();
    let mut crashes = 0;
    for ms in 0..40u64 {
        let input = inputs.pop().unwrap_or(Input::Tick);
        let now = Instant::from_millis(ms * 300);
        effects.clear();
        kernel.step(now, input.clone(), &mut effects);
        trace.push(now, input, &effects);
        for effect in &effects {
            if let Effect::Spawn { service, job, .. } = *effect {
                inputs.push(Input::Spawned {
                    service,
                    job,
                    pid: 100 + ms as u32,
                });
                if kernel.name(service) == "a" && crashes < 2 {
                    crashes += 1;
                    inputs.insert(
                        0,
                        Input::Exited {
                            service,
                            job,
                            status: ExitStatus::Code(1),
                        },
                    );
                }
            }
        }
    }
    trace
}

/// The plain-postcard form the trace target also reads: the snapshot, then the records.
fn plain(trace: &Trace) -> Vec<u8> {
    let mut bytes = postcard::to_stdvec(&trace.snapshot).expect("encode");
    for record in &trace.records {
        bytes.extend(postcard::to_stdvec(record).expect("encode"));
    }
    bytes
}

fn main() {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/seeds".into()),
    );
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");

    let dir = out.join("config_parse");
    for name in ["router.toml", "demo.toml"] {
        let text = std::fs::read(root.join("examples").join(name)).expect("read an example");
        write(&dir, name, &text);
    }
    for (name, text) in CONFIGS {
        write(&dir, &format!("{name}.toml"), text.as_bytes());
    }

    let dir = out.join("trace_replay");
    let golden = std::fs::read(root.join("tests/golden/crash-loop.trace")).expect("golden");
    let golden_trace = trace::decode(&golden).expect("the golden trace decodes");
    write(&dir, "crash-loop.trace", &golden);
    write(&dir, "crash-loop.postcard", &plain(&golden_trace));
    let run = short_run();
    assert!(trace::replay(&run).identical());
    write(&dir, "short-run.trace", &run.to_file_bytes());
    write(&dir, "short-run.postcard", &plain(&run));

    let dir = out.join("control_decode");
    let names = vec!["dnsmasq".to_string(), "wan".to_string()];
    let requests = [
        (
            "status",
            Request::Status {
                services: names.clone(),
            },
        ),
        ("start", Request::Start(names.clone())),
        ("stop", Request::Stop(names.clone())),
        ("restart", Request::Restart(names.clone())),
        ("reload", Request::Reload(names.clone())),
        (
            "history",
            Request::History {
                service: "wan".into(),
            },
        ),
        (
            "logs",
            Request::Logs {
                service: "wan".into(),
                lines: 20,
                follow: true,
            },
        ),
        ("events", Request::Events { follow: false }),
        (
            "trace-save",
            Request::TraceSave {
                path: "/tmp/t.trace".into(),
            },
        ),
        ("ping", Request::Ping),
        (
            "reexec",
            Request::Reexec {
                binary: Some("/usr/sbin/medic".into()),
            },
        ),
        (
            "secret-set",
            Request::SecretSet {
                name: "authorized-keys".into(),
                bytes: control::SecretBytes(b"ssh-ed25519 AAAA seed\n".to_vec()),
                confirm_within_ms: Some(300_000),
            },
        ),
        (
            "secret-rm",
            Request::SecretRemove {
                name: "wg-key".into(),
            },
        ),
        ("secret-list", Request::SecretList),
        (
            "apply",
            Request::Apply {
                path: "/tmp/medic.toml".into(),
                confirm_within_ms: None,
            },
        ),
        ("confirm", Request::Confirm),
        ("pending", Request::Pending),
    ];
    for (name, request) in requests {
        let frame = control::encode_frame(&request, control::MAX_REQUEST_BYTES).expect("encode");
        write(&dir, &format!("request-{name}"), &frame[4..]);
    }
    let kernel = Kernel::new(config::parse(CONFIGS[2].1, "seed.toml").expect("valid"));
    let rows = control::status_rows(&kernel, &[], Instant::ZERO, |_| None).expect("rows");
    let answers = [
        ("status", Response::Status(rows)),
        ("done", Response::Done),
        ("lines", Response::LogLines(vec!["a line".into()])),
        ("saved", Response::TraceSaved { bytes: 4096 }),
        ("error", Response::Error("no such service".into())),
        ("pong", Response::Pong),
        (
            "secrets",
            Response::Secrets(vec![control::SecretRow {
                name: "authorized-keys".into(),
                size: 81,
                generation: 2,
                set_at_unix_ms: 1_714_564_810_000,
                unconfirmed: true,
            }]),
        ),
    ];
    for (name, answer) in answers {
        let frame = control::encode_frame(&answer, control::MAX_RESPONSE_BYTES).expect("encode");
        write(&dir, &format!("answer-{name}"), &frame[4..]);
    }
    // Datagrams captured from a real kernel (the codec's own test data), and our requests.
    let dir = out.join("netlink_parse");
    let captured = root.join("io-adapters/src/netlink/testdata");
    for name in [
        "link-dump-0.bin",
        "link-dump-1.bin",
        "link-dump-2.bin",
        "address-dump-0.bin",
        "address-dump-1.bin",
    ] {
        let bytes = std::fs::read(captured.join(name)).expect("read a captured datagram");
        write(&dir, name, &bytes);
    }
    let mut request = Vec::new();
    codec::dump_request(&mut request, codec::RTM_GETLINK, 1);
    write(&dir, "request-getlink.bin", &request);
    request.clear();
    codec::dump_request(&mut request, codec::RTM_GETADDR, 2);
    write(&dir, "request-getaddr.bin", &request);
    request.clear();
    codec::set_link_request(&mut request, 3, "wan", true).expect("a valid name");
    write(&dir, "request-link-up.bin", &request);
    println!("seeds written under {}", out.display());
}
