//! `medic check`: a valid config prints its services in start order and exits 0; a bad one
//! prints every problem as file:line:col and exits 2. No daemon involved.

use std::path::{Path, PathBuf};
use std::process::Output;

use medic_tests::medic;

fn check(config: &Path) -> Output {
    medic(&["check", "-c", config.to_str().unwrap()])
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn a_valid_config_prints_the_graph_in_start_order() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "router.toml",
        r#"
[service.dnsmasq]
run = ["/usr/sbin/dnsmasq", "-k"]
needs = ["firewall"]

[service.firewall]
oneshot = ["/etc/firewall.sh", "up"]
after = ["wan"]

[service.wan]
interface = "eth0"
"#,
    );
    let out = check(&config);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.starts_with(&format!("{}: valid, 3 services", config.display())),
        "{stdout}"
    );
    let names: Vec<&str> = stdout
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        names,
        ["wan", "firewall", "dnsmasq"],
        "needs and after first:\n{stdout}"
    );
    assert!(stdout.contains("link eth0, ready when carrier"), "{stdout}");
}

#[test]
fn every_problem_of_a_bad_config_is_reported_with_its_place_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "bad.toml",
        "[service.a]\nrun = [\"/bin/true\"]\nneeds = [\"b\"]\n\n[service.b]\nrun = [\"/bin/true\"]\nneeds = [\"a\"]\nstart-timeout = \"soon\"\n",
    );
    let out = check(&config);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout for a bad config");
    let file = config.display().to_string();
    let places: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with(&format!("{file}:")))
        .collect();
    assert!(
        places.len() >= 2,
        "the cycle and the duration, each with a place:\n{stderr}"
    );
    for line in &places {
        let rest = &line[file.len() + 1..];
        let mut parts = rest.splitn(3, ':');
        let line_no = parts.next().unwrap().parse::<u32>();
        let column = parts.next().unwrap().parse::<u32>();
        assert!(
            line_no.is_ok() && column.is_ok(),
            "file:line:col in `{line}`"
        );
    }
    assert!(
        stderr.contains("a -> b -> a") || stderr.contains("b -> a -> b"),
        "{stderr}"
    );
    assert!(
        stderr.contains(":8:"),
        "the bad duration on line 8:\n{stderr}"
    );
    assert!(stderr.contains("2 problems"), "{stderr}");
}

#[test]
fn a_missing_config_is_exit_2_and_says_how_to_name_another() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let out = check(&missing);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
    assert!(stderr.contains("-c FILE"), "{stderr}");
}

#[test]
fn medic_config_names_the_default_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "env.toml",
        "[service.x]\nrun = [\"/bin/true\"]\n",
    );
    let out = std::process::Command::new(medic_tests::medic_bin())
        .arg("check")
        .env("MEDIC_CONFIG", &config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("env.toml: valid, 1 service"));
}

#[test]
fn the_examples_print_every_service() {
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut configs: Vec<PathBuf> = std::fs::read_dir(&examples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    configs.sort();
    assert!(
        configs.iter().any(|p| p.ends_with("demo.toml")),
        "{configs:?}"
    );
    for path in configs {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let out = check(&path);
        let stdout = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {stdout}{}",
            text(&out.stderr)
        );
        let body = std::fs::read_to_string(&path).unwrap();
        let services = body
            .lines()
            .filter_map(|l| l.trim().strip_prefix("[service."))
            .filter_map(|l| l.strip_suffix(']'))
            .filter(|n| !n.contains('.'))
            .count();
        assert_eq!(
            stdout.lines().count(),
            services + 2,
            "{name}: a header, then a line per service:\n{stdout}"
        );
    }
}

#[test]
fn values_past_their_limits_are_refused_as_too_large_or_too_small() {
    // Issue 9: this stop-timeout passed `medic check`, and then the daemon's SIGTERM path
    // overflowed on it; this memory-max wrapped around to 543 bytes.
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "limits.toml",
        "[service.a]\nrun = [\"/bin/true\"]\nstop-timeout = \"18446744073709551615s\"\n\
         memory-max = \"340282366920938463463374607431768211.999KB\"\nmemory-every = \"1ns\"\n",
    );
    let out = check(&config);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let file = config.display().to_string();
    assert!(
        stderr.contains(&format!(
            "{file}:3:16: `stop-timeout` in [service.a]: `18446744073709551615s` is too large; \
             the longest is \"100y\" (100 years)"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{file}:4:14: `memory-max` in [service.a]: \
             `340282366920938463463374607431768211.999KB` is too large"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{file}:5:16: `memory-every` in [service.a]: `1ns` is too small; the shortest is \
             \"100ms\""
        )),
        "{stderr}"
    );
    assert!(stderr.contains("3 problems"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_flood_of_problems_lists_100_and_counts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut body = String::from("[service.a]\nrun = [\"/bin/true\"]\n");
    for i in 0..5_000 {
        body.push_str(&format!("unknown-key-{i} = 1\n"));
    }
    let config = write(dir.path(), "flood.toml", &body);
    let out = check(&config);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let file = config.display().to_string();
    let listed = stderr
        .lines()
        .filter(|l| l.starts_with(&format!("{file}:")) && l.contains("unknown key"))
        .count();
    assert_eq!(listed, 100, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{file}: … and 4900 more problems; fix these first, then check again"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("5000 problems"), "{stderr}");
}

#[test]
fn dot_prints_the_service_graph_for_graphviz() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "router.toml",
        r#"
[service.dnsmasq]
run = ["/usr/sbin/dnsmasq", "-k"]
needs = ["firewall"]
after = ["ntpd"]

[service.ntpd]
run = ["/usr/sbin/ntpd", "-n"]
needs = ["wan"]

[service.firewall]
oneshot = ["/etc/firewall.sh", "up"]
after = ["wan"]

[service.wan]
interface = "eth0"
"#,
    );
    let out = medic(&["check", "--dot", "-c", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dot = text(&out.stdout);
    assert!(dot.starts_with("digraph medic {\n"), "{dot}");
    assert!(dot.ends_with("}\n"), "{dot}");
    for line in [
        r#"  "wan" [label="wan\ninterface eth0"];"#,
        r#"  "firewall" [label="firewall\noneshot"];"#,
        r#"  "dnsmasq" -> "firewall";"#,
        r#"  "ntpd" -> "wan";"#,
        r#"  "dnsmasq" -> "ntpd" [style=dashed, label="after"];"#,
        r#"  "firewall" -> "wan" [style=dashed, label="after"];"#,
    ] {
        assert!(dot.lines().any(|l| l == line), "no `{line}` in:\n{dot}");
    }
    assert_eq!(dot.matches(" -> ").count(), 4, "{dot}");
    // A bad config is no graph: the problems, exit 2.
    let bad = write(
        dir.path(),
        "bad.toml",
        "[service.a]\nrun = [\"/bin/a\"]\nneeds = [\"nobody\"]\n",
    );
    let out = medic(&["check", "--dot", "-c", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}
