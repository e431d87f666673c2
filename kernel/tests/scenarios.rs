//! The kernel's rules as small scenarios: a config, timed inputs, the effects and conditions
//! that must follow. Each test reads as a story of one rule.

mod common;

use common::{link_admin_down, link_no_carrier, link_ok, World};
use medic_kernel::config::Reports;
use medic_kernel::{
    CheckPurpose, CheckResult, Effect, ExitStatus, Input, Kernel, Operator, ServiceId,
    SignalTarget, WallClock,
};

/// Crashes `name` 100 ms after each of its spawns until `until_ms`.
fn crash_loop(w: &mut World, name: &str, until_ms: u64) {
    loop {
        let next = match w.kernel.next_deadline() {
            Some(d) => d.as_millis(),
            None => u64::MAX,
        };
        if w.is_running(name) {
            let spawned = *w.spawns(name).last().unwrap();
            let crash_at = spawned + 100;
            if crash_at > until_ms {
                break;
            }
            if next < crash_at {
                w.run_until(next);
                continue;
            }
            w.run_until(crash_at);
            w.crash(name, 1);
        } else {
            if next > until_ms {
                break;
            }
            w.run_until(next);
        }
    }
    w.run_until(until_ms);
}

#[test]
fn crash_loop_backs_off_1_2_4_8_then_gives_up_and_an_operator_restart_revives_it() {
    let mut w = World::new(
        r#"
        [service.flaky]
        run = ["/bin/flaky"]
        give-up-after = 5
        "#,
    )
    .boot();
    crash_loop(&mut w, "flaky", 60_000);
    // Boot at 0; the first crash (100 ms) is restarted at once, then 1, 2, 4, 8 s apart.
    assert_eq!(w.spawns("flaky"), vec![0, 100, 1_100, 3_100, 7_100, 15_100]);
    assert_eq!(w.strikes("flaky"), 5);
    assert_eq!(w.condition("flaky"), "given-up");
    let last = w.history("flaky").last().unwrap().clone();
    assert!(last.contains("given up after 5 strikes"), "{last}");
    assert_eq!(
        w.kernel.next_deadline().map(|d| d.as_millis()),
        Some(16_100 + 3_600_000), // the last restart (15.1 s) got its 1 s settle time first
        "only the retry-after timer is left"
    );

    // A new fact: the operator restarts it, at once.
    w.operator(Operator::Restart("flaky".into()));
    assert_eq!(w.spawns("flaky").last(), Some(&60_000));
    assert_eq!(w.strikes("flaky"), 0);
    assert_eq!(w.condition("flaky"), "ready");
}

#[test]
fn given_up_service_is_retried_after_retry_after() {
    let mut w = World::new(
        r#"
        [service.flaky]
        run = ["/bin/flaky"]
        give-up-after = 2
        retry-after = "1m"
        "#,
    )
    .boot();
    crash_loop(&mut w, "flaky", 10_000);
    assert_eq!(w.condition("flaky"), "given-up");
    let given_up_at = w.spawns("flaky").last().unwrap() + 1_000; // after the settle time
    w.run_until(given_up_at + 60_000);
    assert_eq!(w.spawns("flaky").last(), Some(&(given_up_at + 60_000)));
    assert_eq!(w.condition("flaky"), "ready");
}

#[test]
fn given_up_stays_given_up_with_retry_after_never() {
    let mut w = World::new(
        r#"
        [service.flaky]
        run = ["/bin/flaky"]
        give-up-after = 1
        retry-after = "never"
        "#,
    )
    .boot();
    crash_loop(&mut w, "flaky", 5_000);
    assert_eq!(w.condition("flaky"), "given-up");
    assert_eq!(
        w.kernel.next_deadline(),
        None,
        "nothing left to do, no wake-ups"
    );
    let spawns = w.spawns("flaky").len();
    w.run_until(10_000_000);
    assert_eq!(w.spawns("flaky").len(), spawns);
}

#[test]
fn a_changed_watched_file_revives_a_given_up_service() {
    let mut w = World::new(
        r#"
        [service.dropbear]
        run = ["/usr/sbin/dropbear", "-F"]
        restart-on = ["/etc/dropbear/authorized_keys"]
        give-up-after = 1
        "#,
    )
    .boot();
    crash_loop(&mut w, "dropbear", 5_000);
    assert_eq!(w.condition("dropbear"), "given-up");
    w.input(Input::FileChanged {
        path: "/etc/dropbear/authorized_keys".into(),
    });
    w.wait(100); // debounce
    assert_eq!(w.condition("dropbear"), "ready");
    assert_eq!(w.spawns("dropbear").last(), Some(&5_100));
}

#[test]
fn a_service_whose_need_is_down_is_never_healed() {
    let mut w = World::new(
        r#"
        [service.wan]
        interface = "eth0"
        [service.ntpd]
        run = ["/usr/sbin/ntpd", "-n"]
        needs = ["wan"]
        "#,
    );
    w.link("eth0", link_ok());
    let mut w = w.boot();
    assert_eq!(w.condition("wan"), "ready");
    assert_eq!(w.condition("ntpd"), "ready");
    w.link("eth0", link_no_carrier());
    assert_eq!(w.condition("wan"), "no-carrier");
    assert_eq!(w.condition("ntpd"), "blocked");
    // It crashes while blocked: nobody restarts it, the cure is upstream.
    w.crash("ntpd", 1);
    w.wait(600_000);
    assert_eq!(w.spawns("ntpd"), vec![0]);
    assert!(w.heals("ntpd").is_empty());
    assert!(
        w.heals("wan").is_empty(),
        "no carrier: nothing medic can fix"
    );
    assert!(w
        .history("ntpd")
        .iter()
        .any(|l| l.contains("blocked") && l.contains("blocked by wan")));
    // Carrier back: ntpd starts again at once.
    w.link("eth0", link_ok());
    assert_eq!(w.condition("ntpd"), "ready");
    assert_eq!(w.spawns("ntpd").len(), 2);
}

#[test]
fn boot_is_one_pass_each_service_starts_when_its_needs_become_ready() {
    let mut w = World::new(
        r#"
        [service.a]
        run = ["/bin/a"]
        ready = { tcp = "127.0.0.1:1" }
        [service.b]
        run = ["/bin/b"]
        needs = ["a"]
        ready = { file = "/run/b.ready" }
        [service.c]
        run = ["/bin/c"]
        needs = ["b"]
        [service.d]
        run = ["/bin/d"]
        "#,
    )
    .boot();
    assert_eq!(w.spawns("a"), vec![0]);
    assert_eq!(
        w.spawns("d"),
        vec![0],
        "independent services start in parallel"
    );
    assert!(w.spawns("b").is_empty());
    assert_eq!(w.condition("b"), "waiting");
    w.run_until(10); // first readiness poll
    w.answer_check("a", CheckResult::Ok);
    assert_eq!(w.spawns("b"), vec![10], "b starts the moment a is ready");
    w.run_until(20);
    w.answer_check("b", CheckResult::Failed("no file".into()));
    // Polls back off: 10 ms, 20 ms, 40 ms ...
    w.run_until(40);
    w.answer_check("b", CheckResult::Ok);
    assert_eq!(w.spawns("c"), vec![40]);
    assert_eq!(w.condition("c"), "ready");
}

#[test]
fn readiness_polls_back_off_to_one_second_and_start_timeout_restarts() {
    let mut w = World::new(
        r#"
        [service.slow]
        run = ["/bin/slow"]
        ready = { tcp = "127.0.0.1:53" }
        start-timeout = "5s"
        "#,
    )
    .boot();
    let mut polls = Vec::new();
    for _ in 0..20 {
        let Some(d) = w.kernel.next_deadline() else {
            break;
        };
        if d.as_millis() >= 5_000 {
            break;
        }
        w.run_until(d.as_millis());
        polls.push(w.now.as_millis());
        w.answer_check("slow", CheckResult::Failed("refused".into()));
    }
    assert_eq!(&polls[..8], &[10, 30, 70, 150, 310, 630, 1270, 2270]);
    w.run_until(5_000);
    assert_eq!(w.condition("slow"), "starting", "restart heal under way");
    assert_eq!(w.spawns("slow"), vec![0, 5_000]);
    assert_eq!(w.heals("slow"), vec![(5_000, "restart".to_string())]);
}

#[test]
fn forgiveness_after_forgive_after_clears_strikes() {
    let mut w = World::new(
        r#"
        [service.x]
        run = ["/bin/x"]
        forgive-after = "1m"
        "#,
    )
    .boot();
    w.run_until(1_000);
    w.crash("x", 1);
    w.run_until(2_000);
    w.crash("x", 1);
    assert_eq!(w.strikes("x"), 2);
    w.run_until(3_000); // restarted at 2 s (1 s after the first restart)
    assert_eq!(w.condition("x"), "ready");
    w.run_until(2_000 + 59_999);
    assert_eq!(w.strikes("x"), 2, "not yet");
    w.run_until(62_000);
    assert_eq!(w.strikes("x"), 0, "healthy for a minute: forgiven");
    assert!(w.history("x").last().unwrap().contains("forgiven"));
    // A crash now is restarted at once again: the backoff starts over.
    w.run_until(70_000);
    w.crash("x", 1);
    assert_eq!(w.spawns("x").last(), Some(&70_000));
}

#[test]
fn a_flap_before_forgive_after_keeps_the_strikes() {
    let mut w = World::new(
        r#"
        [service.x]
        run = ["/bin/x"]
        forgive-after = "1m"
        "#,
    )
    .boot();
    w.run_until(1_000);
    w.crash("x", 1);
    w.run_until(30_000);
    w.crash("x", 1);
    w.run_until(80_000);
    assert_eq!(w.strikes("x"), 2, "healthy 50 s only since the last crash");
}

#[test]
fn an_escalation_ladder_uses_rung_n_for_the_nth_attempt() {
    let mut w = World::new(
        r#"
        [service.tunnel]
        run = ["/usr/sbin/xl2tpd", "-D"]
        reload = { signal = "HUP" }
        probe = { run = ["/bin/check"], every = "1s", failures = 1 }
        [service.tunnel.on.unresponsive]
        heal = ["reload", { run = ["/sbin/modprobe", "-r", "l2tp"] }, "restart"]
        settle = "2s"
        "#,
    )
    .boot();
    for round in 0..4 {
        w.wait(1_000);
        w.answer_check("tunnel", CheckResult::Failed(format!("round {round}")));
        w.wait(10_000);
    }
    // With no successful probe in between, the condition stands and the ladder climbs.
    let heals: Vec<String> = w
        .heals("tunnel")
        .into_iter()
        .map(|(_, h)| h)
        .take(4)
        .collect();
    assert_eq!(
        heals,
        vec!["reload", "run /sbin/modprobe", "restart", "restart"]
    );
    assert!(w
        .effects_of("tunnel")
        .iter()
        .any(|e| e.ends_with("signal HUP")));
    assert!(w
        .effects_of("tunnel")
        .iter()
        .any(|e| e.ends_with("run /sbin/modprobe -r l2tp")));
}

#[test]
fn settle_time_holds_the_next_intervention_and_records_the_outcome() {
    let mut w = World::new(
        r#"
        [service.x]
        run = ["/bin/x"]
        probe = { run = ["/bin/check"], every = "1s", failures = 1 }
        [service.x.on.unresponsive]
        heal = { signal = "USR1" }
        settle = "30s"
        "#,
    )
    .boot();
    w.wait(1_000);
    w.answer_check("x", CheckResult::Failed("no".into()));
    assert_eq!(w.heals("x"), vec![(1_000, "signal USR1".to_string())]);
    // Still failing during the settle time: no second intervention before 31 s.
    for _ in 0..29 {
        w.wait(1_000);
        w.answer_check("x", CheckResult::Failed("no".into()));
    }
    assert_eq!(w.heals("x").len(), 1);
    w.run_until(31_000);
    let history = w.history("x");
    assert!(
        history
            .iter()
            .any(|l| l.contains("signal USR1 (unresolved at 31.000s)")),
        "{history:#?}"
    );
    assert_eq!(w.heals("x").len(), 2, "settle over: second attempt");
    // It recovers: the attempt stays pending until its settle time ends, then is resolved.
    w.wait(1_000);
    w.answer_check("x", CheckResult::Ok);
    assert_eq!(w.condition("x"), "ready");
    assert!(w
        .history("x")
        .iter()
        .any(|l| l.contains("strike 2") && l.contains("(pending)")));
    w.run_until(61_000);
    let history = w.history("x");
    assert!(
        history
            .iter()
            .any(|l| l.contains("signal USR1 (resolved at 61.000s): strike 2")),
        "{history:#?}"
    );
}

#[test]
fn a_link_with_no_carrier_gets_no_heal_and_admin_down_gets_link_up() {
    let mut w = World::new(
        r#"
        [service.wan]
        interface = "eth0"
        "#,
    );
    w.link("eth0", link_no_carrier());
    let mut w = w.boot();
    assert_eq!(w.condition("wan"), "no-carrier");
    w.wait(3_600_000);
    assert!(w.effects_of("wan").is_empty());
    assert!(w.history("wan")[0].contains("no heal for no-carrier"));

    w.link("eth0", link_admin_down());
    assert_eq!(w.condition("wan"), "admin-down");
    assert_eq!(w.effects_of("wan"), vec!["3600000ms link-up"]);
    // The link stays down: the next link-up waits for settle (5 s) then backoff.
    w.wait(4_999);
    assert_eq!(w.effects_of("wan").len(), 1);
    w.wait(1);
    assert_eq!(w.effects_of("wan").len(), 2);
    w.link("eth0", link_ok());
    assert_eq!(w.condition("wan"), "ready");
}

#[test]
fn an_absent_link_can_be_healed_by_a_configured_command() {
    let mut w = World::new(
        r#"
        [service.wan]
        interface = "eth0"
        ready-when = "ipv4"
        [service.wan.on.absent]
        heal = { run = ["modprobe", "e1000e"] }
        settle = "10s"
        "#,
    )
    .boot();
    assert_eq!(w.condition("wan"), "absent");
    assert_eq!(w.effects_of("wan"), vec!["0ms run modprobe e1000e"]);
    w.wait(5_000);
    w.link("eth0", link_no_carrier());
    assert_eq!(w.condition("wan"), "no-carrier");
    w.link(
        "eth0",
        Some(medic_kernel::LinkState {
            admin_up: true,
            carrier: true,
            ipv4: false,
            ipv6_global: true,
        }),
    );
    assert_eq!(w.condition("wan"), "no-address");
    w.link("eth0", link_ok());
    assert_eq!(w.condition("wan"), "ready");
    // The outcome is decided when the settle time ends, not when the link came up.
    assert!(w.history("wan").iter().any(|l| l.contains("(pending)")));
    w.run_until(10_000);
    let history = w.history("wan");
    assert!(
        history.iter().any(|l| l.contains("(resolved at 10.000s)")),
        "{history:#?}"
    );
}

#[test]
fn memory_high_kills_the_group_and_starts_again() {
    let mut w = World::new(
        r#"
        [service.leaky]
        run = ["/bin/leaky"]
        memory-max = "48MiB"
        memory-every = "5s"
        "#,
    )
    .boot();
    w.run_until(5_000);
    let id = w.id("leaky");
    let job = w.job("leaky");
    w.input(Input::MemorySampled {
        service: id,
        job,
        rss_bytes: Some(10 << 20),
        total_bytes: Some(1 << 30),
    });
    assert_eq!(w.condition("leaky"), "ready");
    w.run_until(10_000);
    w.input(Input::MemorySampled {
        service: id,
        job,
        rss_bytes: Some(49 << 20),
        total_bytes: Some(1 << 30),
    });
    assert_eq!(
        w.effects_of("leaky"),
        vec![
            "0ms spawn",
            "5000ms sample",
            "10000ms sample",
            "10000ms kill",
            "10000ms spawn"
        ]
    );
    assert_eq!(w.condition("leaky"), "ready");
    assert!(w
        .history("leaky")
        .iter()
        .any(|l| l.contains("memory-high kill")));
}

#[test]
fn memory_max_as_a_percentage_of_ram() {
    let mut w = World::new(
        r#"
        [service.leaky]
        run = ["/bin/leaky"]
        memory-max = "50%"
        memory-every = "1s"
        "#,
    )
    .boot();
    w.run_until(1_000);
    let (id, job) = (w.id("leaky"), w.job("leaky"));
    w.input(Input::MemorySampled {
        service: id,
        job,
        rss_bytes: Some(500),
        total_bytes: Some(1000),
    });
    assert_eq!(w.condition("leaky"), "ready");
    w.input(Input::MemorySampled {
        service: id,
        job,
        rss_bytes: Some(501),
        total_bytes: Some(1000),
    });
    assert_eq!(w.heals("leaky"), vec![(1_000, "kill".to_string())]);
}

#[test]
fn a_failed_oneshot_is_retried_with_backoff_and_unblocks_dependents_when_it_succeeds() {
    let mut w = World::new(
        r#"
        [service.firewall]
        oneshot = ["/etc/firewall.sh", "up"]
        stop = ["/etc/firewall.sh", "down"]
        [service.dnsmasq]
        run = ["/usr/sbin/dnsmasq", "-k"]
        needs = ["firewall"]
        "#,
    );
    w.oneshot_exit.insert("firewall".into(), 1);
    let mut w = w.boot();
    assert_eq!(w.condition("firewall"), "failed");
    assert_eq!(w.condition("dnsmasq"), "waiting");
    w.run_until(3_000);
    assert_eq!(w.spawns("firewall"), vec![0, 0, 1_000, 3_000]);
    w.oneshot_exit.insert("firewall".into(), 0);
    w.run_until(7_000);
    assert_eq!(w.condition("firewall"), "ready");
    assert_eq!(w.spawns("dnsmasq"), vec![7_000]);
    // Shutdown: dnsmasq first, then the firewall's stop command.
    w.operator(Operator::Shutdown);
    let order: Vec<String> = w
        .log
        .iter()
        .filter(|(t, _)| t.as_millis() == 7_000)
        .filter_map(|(_, e)| match e {
            Effect::Signal { service, .. } => Some(format!("stop {}", w.kernel.name(*service))),
            Effect::RunCommand { argv, .. } => Some(format!("run {}", argv.join(" "))),
            Effect::ShutdownComplete => Some("done".into()),
            _ => None,
        })
        .collect();
    assert_eq!(
        order,
        vec!["stop dnsmasq", "run /etc/firewall.sh down", "done"]
    );
    assert!(w.kernel.is_shut_down());
}

#[test]
fn a_sigterm_ignorer_gets_sigkill_after_stop_timeout() {
    let mut w = World::new(
        r#"
        [service.stubborn]
        run = ["/bin/stubborn"]
        stop-timeout = "3s"
        stop-signal = "INT"
        "#,
    )
    .boot();
    w.ignore_term.insert("stubborn".into());
    w.run_until(1_000);
    w.operator(Operator::Stop("stubborn".into()));
    assert_eq!(w.condition("stubborn"), "stopping");
    w.run_until(3_999);
    assert!(w.is_running("stubborn"));
    w.run_until(4_000);
    assert_eq!(
        w.effects_of("stubborn"),
        vec!["0ms spawn", "1000ms signal INT", "4000ms kill"]
    );
    assert_eq!(w.condition("stubborn"), "stopped");
    assert!(w
        .history("stubborn")
        .iter()
        .any(|l| l.contains("SIGKILL to the group")));
}

#[test]
fn shutdown_stops_in_reverse_dependency_order() {
    let mut w = World::new(
        r#"
        [service.a]
        run = ["/bin/a"]
        [service.b]
        run = ["/bin/b"]
        needs = ["a"]
        [service.c]
        run = ["/bin/c"]
        needs = ["b"]
        [service.d]
        run = ["/bin/d"]
        after = ["a"]
        "#,
    )
    .boot();
    w.ignore_term.insert("c".into());
    w.run_until(1_000);
    w.operator(Operator::Shutdown);
    let stops = |w: &World| -> Vec<String> {
        w.log
            .iter()
            .filter_map(|(t, e)| match e {
                Effect::Signal { service, .. } | Effect::Kill { service, .. } => {
                    Some(format!("{} {}", t.as_millis(), w.kernel.name(*service)))
                }
                _ => None,
            })
            .collect()
    };
    // c ignores TERM: b and a wait for it; d (ordered after a) stops at once.
    assert_eq!(stops(&w), vec!["1000 c", "1000 d"]);
    w.run_until(6_000);
    assert_eq!(
        stops(&w),
        vec!["1000 c", "1000 d", "6000 c", "6000 b", "6000 a"]
    );
    assert!(w.kernel.is_shut_down());
    assert_eq!(w.kernel.next_deadline(), None);
}

#[test]
fn stop_when_needs_fail_stops_and_restarts_with_the_link() {
    let mut w = World::new(
        r#"
        [service.wan]
        interface = "ppp0"
        [service.l2tp]
        run = ["/usr/sbin/xl2tpd", "-D"]
        needs = ["wan"]
        stop-when-needs-fail = true
        "#,
    );
    w.link("ppp0", link_ok());
    let mut w = w.boot();
    w.run_until(1_000);
    w.link("ppp0", None);
    assert_eq!(w.condition("wan"), "absent");
    assert_eq!(w.condition("l2tp"), "blocked");
    assert!(!w.is_running("l2tp"));
    w.run_until(2_000);
    w.link("ppp0", link_ok());
    assert_eq!(w.condition("l2tp"), "ready");
    assert_eq!(
        w.effects_of("l2tp"),
        vec!["0ms spawn", "1000ms signal TERM", "2000ms spawn"]
    );
    assert!(
        w.heals("l2tp").is_empty(),
        "stops and starts for a need are not heals"
    );
}

#[test]
fn a_flapping_link_does_not_restart_a_dependent_faster_than_it_flaps() {
    let mut w = World::new(
        r#"
        [service.wan]
        interface = "eth0"
        [service.ntpd]
        run = ["/usr/sbin/ntpd"]
        needs = ["wan"]
        "#,
    );
    w.link("eth0", link_ok());
    let mut w = w.boot();
    for i in 0..50 {
        w.run_until(i * 100 + 50);
        w.link("eth0", link_no_carrier());
        w.run_until(i * 100 + 100);
        w.link("eth0", link_ok());
    }
    assert_eq!(
        w.spawns("ntpd"),
        vec![0],
        "blocked, not healed: the process kept running"
    );
    assert!(w.heals("ntpd").is_empty());
}

#[test]
fn probes_report_custom_conditions_with_their_own_verdicts() {
    let mut w = World::new(
        r#"
        [service.l2tp]
        run = ["/usr/sbin/xl2tpd", "-D"]
        probe = { run = ["/etc/medic/l2tp-status"], every = "2s", reports = "condition" }
        [service.l2tp.on.connecting]
        healthy = false
        [service.l2tp.on.tunnel-down]
        heal = "restart"
        settle = "30s"
        "#,
    )
    .boot();
    w.run_until(2_000);
    w.answer_check("l2tp", CheckResult::Condition("connecting".into()));
    assert_eq!(w.condition("l2tp"), "connecting");
    assert!(!w.healthy("l2tp"));
    w.run_until(4_000);
    w.answer_check("l2tp", CheckResult::Condition("ready".into()));
    assert_eq!(w.condition("l2tp"), "ready");
    w.run_until(6_000);
    w.answer_check("l2tp", CheckResult::Condition("tunnel-down".into()));
    assert_eq!(w.heals("l2tp"), vec![(6_000, "restart".to_string())]);
    assert_eq!(w.spawns("l2tp"), vec![0, 6_000]);
    assert!(w.heals("l2tp").len() == 1);
    // Every probe went out saying its word is the condition: an adapter reading only the exit
    // status would take "tunnel-down" printed by a script that exits 0 for healthy.
    let l2tp = w.id("l2tp");
    let reports: Vec<Reports> = w
        .log
        .iter()
        .filter_map(|(_, e)| match e {
            Effect::Check {
                service,
                purpose: CheckPurpose::Probe,
                reports,
                ..
            } if *service == l2tp => Some(*reports),
            _ => None,
        })
        .collect();
    assert!(reports.len() >= 3, "{reports:?}");
    assert!(
        reports.iter().all(|r| *r == Reports::Condition),
        "{reports:?}"
    );
}

#[test]
fn a_run_heal_of_an_exited_process_is_the_run_alone_and_the_restart_is_the_next_rung() {
    let mut w = World::new(
        r#"
        [service.pppd]
        run = ["/usr/sbin/pppd", "nodetach"]
        [service.pppd.on.exited]
        heal = [{ run = ["/etc/ppp/reset-modem"] }, "restart"]
        settle = "5s"
        "#,
    )
    .boot();
    w.wait(1_000);
    w.crash("pppd", 1);
    assert_eq!(
        w.heals("pppd"),
        vec![(1_000, "run /etc/ppp/reset-modem".to_string())]
    );
    assert_eq!(
        w.spawns("pppd"),
        vec![0],
        "the run heal alone: no restart with it"
    );
    // Still exited when the settle time ends: the next rung restarts it.
    w.wait(5_000);
    assert_eq!(w.spawns("pppd"), vec![0, 6_000]);
    assert_eq!(
        w.heals("pppd").last().map(|h| h.1.as_str()),
        Some("restart")
    );
    // The heal command succeeded: no line of its own.
    let lines = w.history("pppd");
    assert!(!lines.iter().any(|l| l.contains("command:")), "{lines:?}");
    // It fails next time: that is worth a line.
    w.command_exit.insert("pppd".into(), 3);
    w.wait(3_600_000); // healthy for forgive-after: the ladder starts again at its first rung
    w.crash("pppd", 1);
    let lines = w.history("pppd");
    assert!(
        lines.iter().any(|l| l.contains("command: exit code 3")),
        "{lines:?}"
    );
}

#[test]
fn a_condition_probe_that_prints_unresponsive_is_unresponsive_and_restarted() {
    let mut w = World::new(
        r#"
        [service.l2tp]
        run = ["/usr/sbin/xl2tpd", "-D"]
        probe = { run = ["/etc/medic/l2tp-status"], every = "2s", reports = "condition" }
        "#,
    )
    .boot();
    w.run_until(2_000);
    w.answer_check("l2tp", CheckResult::Condition("unresponsive".into()));
    // The default heal of `unresponsive`, not a custom condition nobody heals.
    assert_eq!(w.heals("l2tp"), vec![(2_000, "restart".to_string())]);
    assert_eq!(w.spawns("l2tp"), vec![0, 2_000]);
}

#[test]
fn a_service_ordered_after_one_the_operator_stopped_before_it_started_starts() {
    let mut w = World::new(
        r#"
        [service.wan]
        interface = "eth0"
        [service.pppoe]
        run = ["/usr/sbin/pppd", "call", "isp"]
        needs = ["wan"]
        [service.firewall]
        oneshot = ["/etc/firewall.sh"]
        after = ["pppoe"]
        "#,
    )
    .boot();
    // pppoe waits for wan (no link), never started: firewall, ordered after it, waits too.
    assert_eq!(w.condition("pppoe"), "waiting");
    assert!(w.spawns("firewall").is_empty());
    // The operator stops pppoe: nothing is left to wait for.
    w.operator(Operator::Stop("pppoe".into()));
    assert_eq!(w.spawns("firewall").len(), 1, "{:?}", w.history("firewall"));
}

#[test]
fn unresponsive_after_n_failed_probes_is_restarted() {
    let mut w = World::new(
        r#"
        [service.dnsmasq]
        run = ["/usr/sbin/dnsmasq", "-k"]
        probe = { tcp = "127.0.0.1:53", every = "10s", timeout = "2s", failures = 3 }
        "#,
    )
    .boot();
    for i in 1..=2 {
        w.run_until(i * 10_000);
        w.answer_check("dnsmasq", CheckResult::TimedOut);
        assert_eq!(w.condition("dnsmasq"), "ready");
    }
    w.run_until(30_000);
    w.answer_check("dnsmasq", CheckResult::Ok);
    w.run_until(40_000);
    w.answer_check("dnsmasq", CheckResult::TimedOut);
    assert_eq!(
        w.condition("dnsmasq"),
        "ready",
        "a success resets the count"
    );
    for i in 5..=6 {
        w.run_until(i * 10_000);
        w.answer_check("dnsmasq", CheckResult::Failed("refused".into()));
    }
    assert_eq!(w.heals("dnsmasq"), vec![(60_000, "restart".to_string())]);
    assert_eq!(
        w.effects_of("dnsmasq")
            .iter()
            .filter(|e| e.contains("signal TERM"))
            .count(),
        1
    );
    assert_eq!(w.condition("dnsmasq"), "ready");
}

#[test]
fn reload_on_is_debounced_and_sends_the_reload_signal() {
    let mut w = World::new(
        r#"
        [service.dnsmasq]
        run = ["/usr/sbin/dnsmasq", "-k"]
        reload = { signal = "HUP" }
        reload-on = ["/etc/dnsmasq.conf"]
        debounce = "200ms"
        "#,
    )
    .boot();
    assert!(w
        .log
        .iter()
        .any(|(_, e)| matches!(e, Effect::Watch { path } if path == "/etc/dnsmasq.conf")));
    w.run_until(1_000);
    for t in [1_000, 1_050, 1_150] {
        w.run_until(t);
        w.input(Input::FileChanged {
            path: "/etc/dnsmasq.conf".into(),
        });
    }
    w.run_until(1_349);
    assert_eq!(w.effects_of("dnsmasq"), vec!["0ms spawn"]);
    w.run_until(1_350);
    assert_eq!(
        w.effects_of("dnsmasq"),
        vec!["0ms spawn", "1350ms signal HUP"]
    );
}

#[test]
fn a_file_change_while_the_service_is_down_does_nothing() {
    let mut w = World::new(
        r#"
        [service.dropbear]
        run = ["/usr/sbin/dropbear"]
        restart-on = ["/etc/dropbear/authorized_keys"]
        "#,
    )
    .boot();
    w.operator(Operator::Stop("dropbear".into()));
    w.input(Input::FileChanged {
        path: "/etc/dropbear/authorized_keys".into(),
    });
    w.wait(1_000);
    assert_eq!(w.condition("dropbear"), "stopped");
    assert_eq!(w.spawns("dropbear"), vec![0]);
}

#[test]
fn config_replacement_leaves_unchanged_services_alone() {
    let old = r#"
        [service.a]
        run = ["/bin/a"]
        [service.b]
        run = ["/bin/b"]
        needs = ["a"]
        [service.gone]
        run = ["/bin/gone"]
    "#;
    let mut w = World::new(old).boot();
    w.run_until(1_000);
    w.input(Input::ReplaceConfig {
        text: r#"
        [service.a]
        run = ["/bin/a"]
        [service.b]
        run = ["/bin/b", "--verbose"]
        needs = ["a"]
        [service.new]
        run = ["/bin/new"]
        "#
        .into(),
    });
    assert_eq!(w.effects_of("a"), vec!["0ms spawn"], "unchanged: untouched");
    assert_eq!(
        w.effects_of("b"),
        vec!["0ms spawn", "1000ms signal TERM", "1000ms spawn"]
    );
    assert_eq!(w.spawns("new"), vec![1_000]);
    assert!(w.kernel.lookup("gone").is_none());
    assert!(w.log.iter().any(|(t, e)| t.as_millis() == 1_000
        && matches!(e, Effect::Signal { service, .. } if w.kernel.name(*service) == "gone")));
    let names: Vec<&str> = w.kernel.views().map(|s| s.name()).collect();
    assert_eq!(names, vec!["a", "b", "new"]);
}

#[test]
fn a_broken_replacement_config_is_refused_and_changes_nothing() {
    let mut w = World::new("[service.a]\nrun = [\"/bin/a\"]\n").boot();
    w.input(Input::ReplaceConfig {
        text: "[service.a]\nrun = 5\n".into(),
    });
    let notice = w
        .log
        .iter()
        .find_map(|(_, e)| match e {
            Effect::Notice { message } => Some(message.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        notice.contains("refused") && notice.contains("config:2:"),
        "{notice}"
    );
    assert_eq!(w.condition("a"), "ready");
    assert_eq!(w.spawns("a"), vec![0]);
}

#[test]
fn operator_restart_acts_at_once_whatever_the_backoff() {
    let mut w = World::new("[service.x]\nrun = [\"/bin/x\"]\n").boot();
    crash_loop(&mut w, "x", 3_300);
    assert_eq!(w.condition("x"), "exited", "backing off until 7.1 s");
    w.operator(Operator::Restart("x".into()));
    assert_eq!(w.spawns("x").last(), Some(&3_300));
    assert!(w
        .history("x")
        .iter()
        .any(|l| l.contains("operator restart")));
}

#[test]
fn after_orders_starts_without_needing_health() {
    let mut w = World::new(
        r#"
        [service.sysctl]
        oneshot = ["/sbin/sysctl", "-p"]
        [service.dnsmasq]
        run = ["/usr/sbin/dnsmasq"]
        after = ["sysctl"]
        "#,
    );
    w.oneshot_exit.insert("sysctl".into(), 1);
    let w = w.boot();
    assert_eq!(w.condition("sysctl"), "failed");
    assert_eq!(
        w.spawns("dnsmasq"),
        vec![0],
        "after: tried, whatever the outcome"
    );
    assert_eq!(w.condition("dnsmasq"), "ready");
}

#[test]
fn spawn_failures_are_exits_with_the_reason_in_the_history() {
    let mut w = World::new("[service.x]\nrun = [\"/nonexistent\"]\ngive-up-after = 2\n");
    w.fail_spawns.insert("x".into());
    let mut w = w.boot();
    w.run_until(10_000);
    assert_eq!(w.condition("x"), "given-up");
    assert!(w.history("x")[0].contains("spawn failed: No such file or directory"));
}

#[test]
fn late_answers_about_old_jobs_are_ignored() {
    let mut w = World::new("[service.x]\nrun = [\"/bin/x\"]\n").boot();
    let old = w.job("x");
    w.crash("x", 1);
    let id = w.id("x");
    w.input(Input::Exited {
        service: id,
        job: old,
        status: medic_kernel::ExitStatus::Code(1),
    });
    w.input(Input::ReadyNotified {
        service: id,
        job: old,
    });
    assert_eq!(w.condition("x"), "ready");
    assert_eq!(w.spawns("x").len(), 2);
}

#[test]
fn the_same_inputs_give_the_same_effects_and_the_state_round_trips() {
    let run = || {
        let mut w = World::new(
            r#"
            [service.wan]
            interface = "eth0"
            [service.x]
            run = ["/bin/x"]
            needs = ["wan"]
            probe = { run = ["/bin/p"], every = "1s", failures = 1 }
            "#,
        );
        w.link("eth0", link_ok());
        let mut w = w.boot();
        crash_loop(&mut w, "x", 20_000);
        w.link("eth0", None);
        w.wait(5_000);
        w.link("eth0", link_ok());
        w.wait(5_000);
        w
    };
    let a = run();
    let b = run();
    assert_eq!(a.log, b.log);
    let bytes = postcard::to_stdvec(&a.kernel).unwrap();
    let back: Kernel = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(postcard::to_stdvec(&back).unwrap(), bytes);
    back.check_invariants().unwrap();
}

#[test]
fn idle_kernel_without_probes_has_no_deadline() {
    let w = World::new(
        r#"
        [service.a]
        run = ["/bin/a"]
        forgive-after = "1m"
        "#,
    )
    .boot();
    assert_eq!(
        w.kernel.next_deadline(),
        None,
        "nothing due: no wake-ups at all"
    );
}

#[test]
fn notify_readiness_gates_dependents_and_start_timeout_applies() {
    let mut w = World::new(
        r#"
        [service.ntpd]
        run = ["/usr/sbin/ntpd"]
        ready = { notify-fd = 3 }
        start-timeout = "10s"
        [service.chrony-client]
        run = ["/bin/client"]
        needs = ["ntpd"]
        [service.hostapd]
        run = ["/usr/sbin/hostapd"]
        ready = "sd-notify"
        "#,
    )
    .boot();
    assert_eq!(w.condition("ntpd"), "starting");
    assert!(w.spawns("chrony-client").is_empty());
    w.run_until(500);
    let (id, job) = (w.id("ntpd"), w.job("ntpd"));
    w.input(Input::ReadyNotified { service: id, job });
    assert_eq!(w.spawns("chrony-client"), vec![500]);
    // hostapd never says READY=1: start-timeout, then a restart.
    w.run_until(30_000);
    assert_eq!(w.heals("hostapd"), vec![(30_000, "restart".to_string())]);
    let first = &w.history("hostapd")[0];
    assert!(
        first.contains("start-timeout: not ready after 30s"),
        "{first}"
    );
}

#[test]
fn operator_stop_of_a_need_stops_what_needs_it_first_transitively() {
    let mut w = World::new(
        r#"
        [service.xl2tpd]
        run = ["/usr/sbin/xl2tpd"]
        [service.tunnel-user]
        run = ["/bin/user"]
        needs = ["xl2tpd"]
        stop-when-needs-fail = true
        [service.bystander]
        run = ["/bin/bystander"]
        needs = ["xl2tpd"]
        [service.bystander-user]
        run = ["/bin/bystander-user"]
        needs = ["bystander"]
        [service.unrelated]
        run = ["/bin/unrelated"]
        "#,
    )
    .boot();
    w.ignore_term.insert("tunnel-user".into());
    w.run_until(1_000);
    w.operator(Operator::Stop("xl2tpd".into()));
    // Everything that needs it, directly or not, is asked to stop first, leaves first.
    assert_eq!(
        w.effects_of("tunnel-user"),
        vec!["0ms spawn", "1000ms signal TERM"]
    );
    assert_eq!(
        w.effects_of("bystander-user"),
        vec!["0ms spawn", "1000ms signal TERM"]
    );
    assert_eq!(
        w.effects_of("bystander"),
        vec!["0ms spawn", "1000ms signal TERM"],
        "its own dependent exited at once"
    );
    assert_eq!(
        w.effects_of("xl2tpd"),
        vec!["0ms spawn"],
        "waits for tunnel-user"
    );
    assert!(w
        .history("bystander-user")
        .iter()
        .any(|l| l.contains("operator stop of xl2tpd, which it needs")));
    w.run_until(6_000);
    assert_eq!(w.effects_of("tunnel-user").last().unwrap(), "6000ms kill");
    assert_eq!(w.effects_of("xl2tpd").last().unwrap(), "6000ms signal TERM");
    for name in ["xl2tpd", "tunnel-user", "bystander", "bystander-user"] {
        assert_eq!(w.condition(name), "stopped", "{name}");
    }
    assert_eq!(w.effects_of("unrelated"), vec!["0ms spawn"]);
    // Started again: only it (and what it needs); what the operator stopped stays stopped.
    w.operator(Operator::Start("xl2tpd".into()));
    assert_eq!(w.condition("xl2tpd"), "ready");
    assert_eq!(w.condition("bystander"), "stopped");
    assert_eq!(w.strikes("tunnel-user") + w.strikes("bystander"), 0);
}

#[test]
fn operator_start_brings_the_needs_up_first() {
    let mut w = World::new(
        r#"
        [service.wan-dhcp]
        run = ["/sbin/udhcpc"]
        [service.ntpd]
        run = ["/usr/sbin/ntpd"]
        needs = ["wan-dhcp"]
        "#,
    )
    .boot();
    w.run_until(1_000);
    w.operator(Operator::Stop("wan-dhcp".into()));
    w.run_until(2_000);
    assert_eq!(w.condition("ntpd"), "stopped");
    assert_eq!(w.condition("wan-dhcp"), "stopped");
    w.operator(Operator::Start("ntpd".into()));
    assert_eq!(w.spawns("wan-dhcp"), vec![0, 2_000], "its need first");
    assert_eq!(w.spawns("ntpd"), vec![0, 2_000]);
    assert_eq!(w.condition("ntpd"), "ready");
    assert!(w
        .history("wan-dhcp")
        .iter()
        .any(|l| l.contains("operator start of ntpd, which needs it")));
}

#[test]
fn reload_runs_the_reload_command_and_a_reload_without_one_restarts() {
    let mut w = World::new(
        r#"
        [service.a]
        run = ["/bin/a"]
        reload = { run = ["/bin/a-reload", "--now"] }
        [service.b]
        run = ["/bin/b"]
        "#,
    )
    .boot();
    w.run_until(1_000);
    w.operator(Operator::Reload("a".into()));
    w.operator(Operator::Reload("b".into()));
    assert_eq!(
        w.effects_of("a"),
        vec!["0ms spawn", "1000ms run /bin/a-reload --now"]
    );
    assert_eq!(
        w.effects_of("b"),
        vec!["0ms spawn", "1000ms signal TERM", "1000ms spawn"]
    );
}

#[test]
fn the_history_is_a_bounded_ring() {
    let mut w = World::new(
        r#"
        [daemon]
        history-size = 8
        [service.x]
        run = ["/bin/x"]
        give-up-after = 100
        max-backoff = "1s"
        "#,
    )
    .boot();
    crash_loop(&mut w, "x", 60_000);
    let history = w.kernel.history(w.id("x")).unwrap();
    assert_eq!(history.len(), 8);
    assert!(
        history.iter().next().unwrap().seq > 50,
        "oldest records were dropped"
    );
}

#[test]
fn unknown_operator_targets_get_a_notice() {
    let mut w = World::new("[service.a]\nrun = [\"/bin/a\"]\n").boot();
    w.operator(Operator::Restart("nope".into()));
    assert!(w.log.iter().any(
        |(_, e)| matches!(e, Effect::Notice { message } if message.contains("no service called `nope`"))
    ));
}

#[test]
fn a_flapping_need_does_not_cycle_a_stop_when_needs_fail_dependent_faster_than_settle() {
    let mut w = World::new(
        r#"
        [service.wan]
        interface = "wan"
        [service.tunnel]
        run = ["/usr/sbin/xl2tpd", "-D"]
        needs = ["wan"]
        stop-when-needs-fail = true
        forgive-after = "1m"
        "#,
    );
    w.link("wan", link_ok());
    let mut w = w.boot();
    // 25 flaps, 40 ms apart.
    for i in 0..25 {
        w.run_until(1_000 + i * 40);
        w.link("wan", link_no_carrier());
        w.run_until(1_020 + i * 40);
        w.link("wan", link_ok());
    }
    w.run_until(10_000);
    // Boot, the first comeback at once, then 1 s later (the restart settle time); the flapping
    // stopped, so the last start waits only for its gate.
    assert_eq!(w.spawns("tunnel"), vec![0, 1_020, 2_020]);
    assert_eq!(w.condition("tunnel"), "ready");
    // A minute of health forgives the flapping: the next comeback is immediate again.
    w.run_until(70_000);
    w.link("wan", link_no_carrier());
    w.link("wan", link_ok());
    assert_eq!(w.spawns("tunnel").last(), Some(&70_000));
}

#[test]
fn a_planned_restart_of_a_need_is_not_flapping_for_a_stop_when_needs_fail_dependent() {
    let mut w = World::new(
        r#"
        [service.leaky]
        run = ["/usr/sbin/leaky-daemon"]
        restart-every = "10s"
        [service.tunnel]
        run = ["/usr/sbin/xl2tpd", "-D"]
        needs = ["leaky"]
        stop-when-needs-fail = true
        "#,
    )
    .boot();
    w.run_until(125_000);
    let every_10s: Vec<u64> = (0..=12).map(|i| i * 10_000).collect();
    assert_eq!(w.spawns("leaky"), every_10s);
    // Stopped with its need, and started again with it each time: a planned restart is not
    // a failure, so the start gate never grows past the restart period.
    assert_eq!(w.spawns("tunnel"), every_10s);
    assert_eq!(w.condition("tunnel"), "ready");
}

#[test]
fn a_planned_run_upstream_is_not_flapping_for_a_stop_when_needs_fail_dependent() {
    let mut w = World::new(
        r#"
        [service.rules]
        oneshot = ["/sbin/load-rules"]
        every = "10s"
        [service.relay]
        run = ["/usr/sbin/relay"]
        needs = ["rules"]
        [service.tunnel]
        run = ["/usr/sbin/xl2tpd", "-D"]
        needs = ["relay"]
        stop-when-needs-fail = true
        "#,
    )
    .boot();
    w.run_until(125_000);
    let every_10s: Vec<u64> = (0..=12).map(|i| i * 10_000).collect();
    assert_eq!(w.spawns("rules"), every_10s);
    // The run blocks the relay (blocked, not transient), and the tunnel goes down with it:
    // still a plan upstream, not a failure.
    assert_eq!(w.spawns("relay"), vec![0]);
    assert_eq!(w.spawns("tunnel"), every_10s);
}

/// Feeds a memory sample of `rss` bytes for the current process of `name` (1 GiB of RAM).
fn sample(w: &mut World, name: &str, rss: u64) {
    let (service, job) = (w.id(name), w.job(name));
    w.input(Input::MemorySampled {
        service,
        job,
        rss_bytes: Some(rss),
        total_bytes: Some(1 << 30),
    });
}

#[test]
fn memory_over_the_limit_is_killed_at_once_and_only_the_restart_backs_off() {
    let mut w = World::new(
        r#"
        [service.hog]
        run = ["/bin/hog"]
        memory-max = "48MiB"
        memory-every = "500ms"
        give-up-after = 2
        "#,
    )
    .boot();
    w.run_until(500);
    sample(&mut w, "hog", 49 << 20); // strike 1: killed and started again at once
    w.run_until(1_000);
    sample(&mut w, "hog", 49 << 20); // killed at once; the restart waits for the settle time
    assert!(!w.is_running("hog"), "contained while the restart waits");
    assert_eq!(w.condition("hog"), "memory-high");
    w.run_until(2_000);
    sample(&mut w, "hog", 49 << 20); // strike 2 was the last: killed, then given up
    w.run_until(60_000);
    assert_eq!(
        w.effects_of("hog"),
        vec![
            "0ms spawn",
            "500ms sample",
            "500ms kill",
            "500ms spawn",
            "1000ms sample",
            "1000ms kill",
            "1500ms spawn",
            "2000ms sample",
            "2000ms kill",
        ]
    );
    assert_eq!(w.condition("hog"), "given-up");
    assert!(!w.is_running("hog"), "never left running over its limit");
    let history = w.history("hog");
    assert!(
        history
            .iter()
            .any(|l| l.contains("memory-high: rss 50176 KiB > limit 49152 KiB: killed")),
        "{history:#?}"
    );
}

#[test]
fn a_given_up_service_over_its_memory_limit_is_still_killed() {
    let mut w = World::new(
        r#"
        [service.x]
        run = ["/bin/x"]
        memory-max = "48MiB"
        memory-every = "1s"
        probe = { run = ["/bin/check"], every = "1s", failures = 1 }
        give-up-after = 1
        "#,
    )
    .boot();
    // Unresponsive, restarted once, unresponsive again: given up, left running.
    w.wait(1_000);
    w.answer_check("x", CheckResult::Failed("no".into()));
    w.wait(2_000);
    w.answer_check("x", CheckResult::Failed("no".into()));
    w.wait(2_000);
    assert_eq!(w.condition("x"), "given-up");
    assert!(w.is_running("x"));
    sample(&mut w, "x", 49 << 20);
    assert!(!w.is_running("x"), "killed although given up");
    assert_eq!(w.condition("x"), "given-up");
}

#[test]
fn memory_that_cannot_be_judged_is_not_enforced_and_said_once() {
    let mut w = World::new(
        r#"
        [service.x]
        run = ["/bin/x"]
        memory-max = "50%"
        memory-every = "1s"
        "#,
    )
    .boot();
    for t in 1..=3 {
        w.run_until(t * 1_000);
        let (service, job) = (w.id("x"), w.job("x"));
        w.input(Input::MemorySampled {
            service,
            job,
            rss_bytes: Some(u64::MAX),
            total_bytes: None,
        });
    }
    assert_eq!(w.condition("x"), "ready");
    assert!(w.is_running("x"));
    let notes: Vec<String> = w
        .history("x")
        .into_iter()
        .filter(|l| l.contains("memory-max not enforced: the machine's total RAM is unknown"))
        .collect();
    assert_eq!(notes.len(), 1, "{notes:#?}");
}

#[test]
fn outcomes_are_decided_when_the_settle_time_ends() {
    let mut w = World::new("[service.x]\nrun = [\"/bin/x\"]\n").boot();
    w.run_until(100);
    w.crash("x", 1); // restarted at once: strike 1, settle 1 s
    w.run_until(600);
    w.crash("x", 1); // healthy in between, failed again within the settle time
    w.run_until(1_100);
    let history = w.history("x");
    assert!(
        history
            .iter()
            .any(|l| l == "0.100s exited restart (unresolved at 1.100s): strike 1 of 10"),
        "{history:#?}"
    );
    assert!(
        !history.iter().any(|l| l.contains("(resolved")),
        "{history:#?}"
    );
    // The second attempt holds: resolved when its settle time ends.
    w.run_until(5_000);
    let history = w.history("x");
    assert!(
        history
            .iter()
            .any(|l| l == "1.100s exited restart (resolved at 2.100s): strike 2 of 10"),
        "{history:#?}"
    );
}

#[test]
fn reload_and_signal_heals_go_to_the_main_process_and_stop_to_the_group() {
    let mut w = World::new(
        r#"
        [service.x]
        run = ["/bin/x"]
        reload = { signal = "HUP" }
        probe = { run = ["/bin/check"], every = "1s", failures = 1 }
        [service.x.on.unresponsive]
        heal = { signal = "USR1" }
        "#,
    )
    .boot();
    w.wait(1_000);
    w.answer_check("x", CheckResult::Failed("no".into()));
    w.operator(Operator::Reload("x".into()));
    w.operator(Operator::Stop("x".into()));
    let targets: Vec<(String, SignalTarget)> = w
        .log
        .iter()
        .filter_map(|(_, e)| match e {
            Effect::Signal { signal, to, .. } => Some((signal.name().to_string(), *to)),
            _ => None,
        })
        .collect();
    assert_eq!(
        targets,
        vec![
            ("USR1".to_string(), SignalTarget::Main),
            ("HUP".to_string(), SignalTarget::Main),
            ("TERM".to_string(), SignalTarget::Group),
        ]
    );
}

#[test]
fn a_changed_service_is_stopped_as_it_was_started() {
    let old = r#"
        [service.fw]
        oneshot = ["/etc/fw", "up-v1"]
        stop = ["/etc/fw", "down-v1"]
        [service.d]
        run = ["/bin/d", "v1"]
        stop-signal = "INT"
        "#;
    let new = r#"
        [service.fw]
        oneshot = ["/etc/fw", "up-v2"]
        stop = ["/etc/fw", "down-v2"]
        [service.d]
        run = ["/bin/d", "v2"]
        stop-signal = "QUIT"
        "#;
    let mut w = World::new(old).boot();
    w.run_until(1_000);
    w.input(Input::ReplaceConfig { text: new.into() });
    w.run_until(2_000);
    assert_eq!(
        w.effects_of("fw"),
        vec!["0ms spawn", "1000ms run /etc/fw down-v1", "1000ms spawn"],
        "the old teardown undoes the old rules"
    );
    assert_eq!(
        w.effects_of("d"),
        vec!["0ms spawn", "1000ms signal INT", "1000ms spawn"]
    );
    // The new instance stops with the new definition.
    w.operator(Operator::Stop("d".into()));
    assert_eq!(w.effects_of("d").last().unwrap(), "2000ms signal QUIT");
}

#[test]
fn a_spawn_the_daemon_cannot_afford_is_retried_without_a_strike() {
    let mut w = World::new("[service.x]\nrun = [\"/bin/x\"]\ngive-up-after = 1\n");
    w.defer_spawns.insert("x".into());
    let mut w = w.boot();
    // Three deferrals in a row: 100 ms, 200 ms, 400 ms apart; never a strike, never given up.
    w.run_until(700);
    assert_eq!(w.spawns("x"), vec![0, 100, 300, 700]);
    assert_eq!(w.strikes("x"), 0);
    assert_eq!(w.condition("x"), "waiting");
    w.defer_spawns.clear();
    w.run_until(1_500);
    assert_eq!(w.spawns("x"), vec![0, 100, 300, 700, 1_500]);
    assert_eq!(w.condition("x"), "ready");
    let history = w.history("x");
    assert!(
        history.iter().any(|l| l.contains(
            "could not start: Too many open files; the daemon is short of resources, not the \
             service's fault: trying again in 800ms"
        )),
        "{history:#?}"
    );
}

#[test]
fn the_view_says_what_is_next_and_when() {
    let mut w = World::new("[service.x]\nrun = [\"/bin/x\"]\ngive-up-after = 2\n").boot();
    let next = |w: &World| {
        let v = w.kernel.status(w.id("x")).unwrap();
        v.next_action().map(|(at, what)| (at.as_millis(), what))
    };
    assert_eq!(next(&w), None, "ready and idle");
    w.run_until(100);
    w.crash("x", 1); // restart at once: strike 1, settle 1 s
    assert_eq!(next(&w), Some((1_100, "decide the outcome".into())));
    w.run_until(200);
    w.crash("x", 1); // within the settle time: the restart waits
    assert_eq!(next(&w), Some((1_100, "restart".into())));
    w.run_until(1_100); // strike 2
    w.run_until(1_200);
    w.crash("x", 1);
    assert_eq!(next(&w), Some((2_100, "give up".into())));
    w.run_until(2_100);
    assert_eq!(w.condition("x"), "given-up");
    assert_eq!(next(&w), Some((3_602_100, "retry (given up)".into())));
}

#[test]
fn a_removed_services_slot_is_reused_and_late_answers_about_it_are_ignored() {
    let named = |name: &str| format!("[service.{name}]\nrun = [\"/bin/{name}\"]\n");
    let mut w = World::new(&named("s0")).boot();
    w.run_until(1_000);
    let (first, old_job) = (w.id("s0"), w.job("s0"));
    for i in 1..=50 {
        w.input(Input::ReplaceConfig {
            text: named(&format!("s{i}")),
        });
        w.wait(100);
        assert_eq!(w.condition(&format!("s{i}")), "ready");
    }
    // One slot stopping while the next runs: two slots, however many renames.
    let held = (0..100)
        .filter(|&i| w.kernel.status(ServiceId(i)).is_some())
        .count();
    assert_eq!(held, 1, "only the running service's slot is held");
    // An answer about the first service's process, arriving late, is not about the service
    // that holds its slot now.
    // Two slots take turns: s50 holds the first one.
    assert_eq!(w.id("s50"), first);
    let before = w.history("s50");
    let spawns = w.log.len();
    w.input(Input::Exited {
        service: first,
        job: old_job,
        status: ExitStatus::Code(1),
    });
    // (A heal command of the first service, say, that failed long after it was removed.)
    w.input(Input::CommandDone {
        service: first,
        job: old_job,
        status: ExitStatus::Code(1),
    });
    assert_eq!(w.condition("s50"), "ready", "a stale exit is ignored");
    assert_eq!(w.history("s50"), before);
    assert_eq!(w.log.len(), spawns, "no effect at all");
}

// ----- timed jobs (DESIGN.md §11) -------------------------------------------------------------

#[test]
fn a_oneshot_with_every_runs_again_that_long_after_each_success() {
    let mut w = World::new(
        r#"
        [service.blocklist]
        oneshot = ["/usr/bin/refresh-blocklist"]
        every = "10s"
        "#,
    )
    .boot();
    w.run_until(35_000);
    assert_eq!(w.spawns("blocklist"), vec![0, 10_000, 20_000, 30_000]);
    assert_eq!(w.strikes("blocklist"), 0, "a planned run is no strike");
    assert!(w
        .history("blocklist")
        .iter()
        .any(|l| l.contains("every 10s: run again")));
    // A run that fails is healed like any other; the next success starts the period again.
    w.oneshot_exit.insert("blocklist".into(), 1);
    w.run_until(40_000);
    assert_eq!(w.condition("blocklist"), "failed");
    w.oneshot_exit.remove("blocklist");
    w.run_until(45_000);
    // Restarted at once (strike 1, failed again while the test still fails it), then after
    // its settle time (strike 2), which succeeds.
    let spawns = w.spawns("blocklist");
    assert_eq!(spawns[4..], [40_000, 40_000, 41_000], "{spawns:?}");
    let healed = 41_000;
    assert_eq!(w.strikes("blocklist"), 2);
    w.run_until(healed + 10_500);
    assert_eq!(*w.spawns("blocklist").last().unwrap(), healed + 10_000);
}

#[test]
fn a_timed_run_due_while_the_previous_one_is_still_going_is_skipped_and_said() {
    let mut w = World::new(
        r#"
        [service.dyndns]
        oneshot = ["/usr/bin/dyndns-update"]
        every = "10s"
        "#,
    )
    .boot();
    w.run_until(5_000);
    // The operator runs it again by hand at 5 s, and this run takes 12 s.
    w.slow_oneshots.insert("dyndns".into());
    w.operator(Operator::Restart("dyndns".into()));
    w.run_until(12_000);
    assert_eq!(w.spawns("dyndns"), vec![0, 5_000], "not twice at once");
    assert!(
        w.history("dyndns")
            .iter()
            .any(|l| l.contains("run again skipped: the previous run is still going")),
        "{:?}",
        w.history("dyndns")
    );
    w.slow_oneshots.remove("dyndns");
    w.crash("dyndns", 0);
    w.run_until(26_500);
    assert_eq!(w.spawns("dyndns"), vec![0, 5_000, 22_000]);
}

#[test]
fn restart_every_restarts_a_healthy_process_as_planned_without_a_strike() {
    let mut w = World::new(
        r#"
        [service.wan]
        interface = "wan0"
        [service.leaky]
        run = ["/usr/sbin/leaky-daemon"]
        needs = ["wan"]
        restart-every = "1m"
        "#,
    );
    w.link("wan0", link_ok());
    let mut w = w.boot();
    w.run_until(61_000);
    assert_eq!(w.spawns("leaky"), vec![0, 60_000]);
    assert_eq!(
        w.effects_of("leaky")[1],
        "60000ms signal TERM",
        "stopped as any stop is"
    );
    assert_eq!(w.strikes("leaky"), 0);
    assert!(w
        .history("leaky")
        .iter()
        .any(|l| l.contains("restart-every 1m: planned restart")));
    // With its need down when the restart is due, it is left alone (upstream first).
    w.run_until(119_000);
    w.link("wan0", link_no_carrier());
    w.run_until(121_000);
    assert_eq!(w.spawns("leaky"), vec![0, 60_000]);
    assert!(w
        .history("leaky")
        .iter()
        .any(|l| l.contains("planned restart skipped: needs wan down")));
    w.link("wan0", link_ok());
    w.run_until(181_000);
    assert_eq!(w.spawns("leaky"), vec![0, 60_000, 180_000]);
}

/// 2026-11-30, a Monday, 00:00 UTC, in Unix ms.
const MONDAY: i64 = 1_795_996_800_000;
const HOUR: u64 = 3_600_000;

fn wall(unix_ms: i64) -> Input {
    Input::WallClock(WallClock {
        unix_ms,
        utc_offset_s: 0,
        host: 7,
    })
}

#[test]
fn an_at_time_waits_for_a_trusted_clock_then_for_its_next_time_not_at_once() {
    let mut w = World::new(
        r#"
        [service.nightly]
        oneshot = ["/usr/bin/refresh-blocklist"]
        at = ["03:00"]
        "#,
    );
    // A router without a battery clock boots in 1970.
    w.input(wall(10_000));
    let mut w = w.boot();
    assert_eq!(
        w.spawns("nightly"),
        vec![0],
        "started at boot as any oneshot"
    );
    w.run_until(2 * 24 * HOUR);
    assert_eq!(
        w.spawns("nightly"),
        vec![0],
        "no `at` time on an untrusted clock"
    );
    // NTP steps the clock to Monday 10:00: the next 03:00 is Tuesday's, 17 hours on.
    w.input(wall(MONDAY + 10 * HOUR as i64));
    let stepped = 2 * 24 * HOUR;
    w.run_until(stepped + 17 * HOUR - 1_000);
    assert_eq!(w.spawns("nightly"), vec![0]);
    w.run_until(stepped + 17 * HOUR + 1_000);
    assert_eq!(w.spawns("nightly"), vec![0, stepped + 17 * HOUR]);
    assert!(w
        .history("nightly")
        .iter()
        .any(|l| l.contains("at 03:00: run again")));
    // The clock is stepped back an hour after the run: 03:00 does not come round twice.
    w.input(wall(MONDAY + 26 * HOUR as i64 + 2_000));
    w.run_until(stepped + 17 * HOUR + 2 * HOUR);
    assert_eq!(w.spawns("nightly").len(), 2, "{:?}", w.spawns("nightly"));
    // … and the next day's 03:00 does.
    w.run_until(stepped + 17 * HOUR + 25 * HOUR);
    assert_eq!(w.spawns("nightly").len(), 3, "{:?}", w.spawns("nightly"));
}

#[test]
fn catch_up_runs_a_time_missed_while_the_clock_was_untrusted_once_it_is_trusted_again() {
    let text = |catch_up: bool| {
        format!(
            "[service.nightly]\noneshot = [\"/usr/bin/refresh-blocklist\"]\nat = [\"03:00\"]\n\
             catch-up = {catch_up}\n"
        )
    };
    for catch_up in [true, false] {
        let mut w = World::new(&text(catch_up));
        // Monday 02:00 on a trusted clock: the boot run is the last run.
        w.input(wall(MONDAY + 2 * HOUR as i64));
        let mut w = w.boot();
        assert_eq!(w.spawns("nightly"), vec![0]);
        // The RTC battery fails and the clock reads 1970 for three hours: 03:00 passes
        // unseen. Then NTP sets it to 05:00.
        w.run_until(HOUR / 2);
        w.input(wall(HOUR as i64));
        w.run_until(3 * HOUR);
        assert_eq!(w.spawns("nightly"), vec![0]);
        w.input(wall(MONDAY + 5 * HOUR as i64));
        w.run_until(3 * HOUR + 1_000);
        let caught_up = w
            .history("nightly")
            .iter()
            .any(|l| l.contains("catch-up of at 03:00: run again"));
        match catch_up {
            true => {
                assert_eq!(w.spawns("nightly"), vec![0, 3 * HOUR], "once, at once");
                assert!(caught_up, "{:?}", w.history("nightly"));
            }
            false => assert_eq!(w.spawns("nightly"), vec![0], "let go"),
        }
        // Either way the next 03:00 is tomorrow's, 22 hours on, and runs once.
        w.run_until(3 * HOUR + 22 * HOUR + 1_000);
        assert_eq!(
            w.spawns("nightly").last(),
            Some(&(3 * HOUR + 22 * HOUR)),
            "{:?}",
            w.spawns("nightly")
        );
        assert_eq!(w.spawns("nightly").len(), 2 + usize::from(catch_up));
    }
}

/// medic trusts the wall clock once ntpd says it synced (its readiness file).
const NTPD_SYNCS: &str = r#"
[daemon]
clock-trusted-after = "ntpd"
[service.ntpd]
run = ["/usr/sbin/ntpd", "-n"]
ready = { file = "/run/ntpd.synced" }
start-timeout = "1d"
"#;

#[test]
fn clock_trusted_after_names_the_service_whose_readiness_means_synced() {
    let mut w = World::new(&format!(
        "{NTPD_SYNCS}[service.leaky]\nrun = [\"/usr/sbin/leaky\"]\nat = [\"Mon 04:00\"]\n"
    ));
    w.input(wall(MONDAY + 3 * HOUR as i64));
    let mut w = w.boot();
    // The clock reads a plausible date, but ntpd has not synced: 04:00 passes unheeded.
    w.run_until(2 * HOUR);
    assert_eq!(w.spawns("leaky"), vec![0]);
    assert_eq!(w.condition("ntpd"), "starting");
    // Synced at 05:00: the next Monday 04:00 is a week away, less an hour.
    w.answer_check("ntpd", CheckResult::Ok);
    let trusted = w.log.iter().any(|(_, e)| {
        matches!(e, Effect::Notice { message }
            if message == "wall clock trusted (ntpd is ready): `at` times planned")
    });
    assert!(trusted, "the operator is told why `at` times start now");
    w.run_until(2 * HOUR + 7 * 24 * HOUR - 2 * HOUR - 1_000);
    assert_eq!(w.spawns("leaky"), vec![0]);
    w.run_until(2 * HOUR + 7 * 24 * HOUR);
    assert_eq!(w.spawns("leaky"), vec![0, 7 * 24 * HOUR + HOUR]);
    assert!(w
        .history("leaky")
        .iter()
        .any(|l| l.contains("at 04:00: planned restart")));
    assert_eq!(w.strikes("leaky"), 0);
}

#[test]
fn a_new_service_does_not_start_in_the_step_its_changed_need_is_restarted() {
    let mut w = World::new("[service.a]\nrun = [\"/bin/a\"]\n").boot();
    w.run_until(1_000);
    w.input(Input::ReplaceConfig {
        text: "[service.a]\nrun = [\"/bin/a\", \"-v\"]\n[service.b]\nrun = [\"/bin/b\"]\nneeds = [\"a\"]\n"
            .into(),
    });
    // `a` is restarted for its new definition: `b` waits for the new `a`, and is never
    // started against the old one (that is being stopped).
    let a_again = w.spawns("a")[1];
    let b = w.spawns("b");
    assert_eq!(b.len(), 1, "{b:?}");
    let order: Vec<String> = w
        .log
        .iter()
        .filter_map(|(_, e)| match e {
            Effect::Spawn { config, .. } => Some(config.name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        order,
        ["a", "a", "b"],
        "b after the new a (at {a_again} ms)"
    );
    assert_eq!(
        w.history("b").iter().filter(|l| l.contains("stop")).count(),
        0
    );
}

#[test]
fn a_router_with_many_services_boots_them_all_in_one_pass_without_a_notice() {
    // 120 independent daemons and a chain of 40 through them: every one is started at boot,
    // and the re-derivation settles within its budget (a budget too small for the number of
    // services would leave some unstarted until the next input, with "did not settle").
    let mut text = String::new();
    for i in 0..120 {
        text.push_str(&format!("[service.d{i}]\nrun = [\"/bin/d{i}\"]\n"));
    }
    for i in 0..40 {
        let need = if i == 0 {
            "d0".to_string()
        } else {
            format!("c{}", i - 1)
        };
        text.push_str(&format!(
            "[service.c{i}]\nrun = [\"/bin/c{i}\"]\nneeds = [\"{need}\"]\n"
        ));
    }
    let w = World::new(&text).boot();
    for i in 0..120 {
        assert_eq!(w.spawns(&format!("d{i}")), vec![0], "d{i}");
    }
    for i in 0..40 {
        assert_eq!(w.spawns(&format!("c{i}")), vec![0], "c{i}");
    }
    let notices: Vec<_> = w
        .log
        .iter()
        .filter(|(_, e)| matches!(e, Effect::Notice { .. }))
        .collect();
    assert!(notices.is_empty(), "{notices:?}");
}

/// `medic restart netifd`: its stop-when-needs-fail dependent is stopped first (it would lose
/// its need under it), and netifd is signaled only once it is down.
#[test]
fn operator_restart_of_a_need_stops_a_stop_when_needs_fail_dependent_first() {
    let mut w = World::new(
        r#"
        [service.netifd]
        run = ["/sbin/netifd"]
        [service.dnsmasq]
        run = ["/usr/sbin/dnsmasq"]
        needs = ["netifd"]
        stop-when-needs-fail = true
        "#,
    )
    .boot();
    w.ignore_term.insert("dnsmasq".into());
    w.run_until(1_000);
    w.operator(Operator::Restart("netifd".into()));
    assert_eq!(
        w.effects_of("dnsmasq"),
        vec!["0ms spawn", "1000ms signal TERM"]
    );
    assert_eq!(
        w.effects_of("netifd"),
        vec!["0ms spawn"],
        "waits for dnsmasq"
    );
    w.run_until(10_000);
    let netifd = w.effects_of("netifd");
    assert_eq!(
        netifd[1], "6000ms signal TERM",
        "after dnsmasq's SIGKILL: {netifd:?}"
    );
    assert!(w.effects_of("dnsmasq").contains(&"6000ms kill".to_string()));
    assert!(w.is_running("netifd") && w.is_running("dnsmasq"));
}

/// NTP steps a trusted clock from 02:50 over 03:00 to 03:10: trust does not change, but the
/// 03:00 run of a `catch-up` job was missed, so it runs now, not tomorrow.
#[test]
fn catch_up_runs_a_time_a_trusted_clock_was_stepped_over() {
    let mut w = World::new(
        "[service.nightly]\noneshot = [\"/usr/bin/refresh-blocklist\"]\nat = [\"03:00\"]\n\
         catch-up = true\n",
    );
    w.input(wall(MONDAY + 2 * HOUR as i64));
    let mut w = w.boot();
    let fifty_minutes = 50 * 60_000;
    w.run_until(fifty_minutes);
    assert_eq!(w.spawns("nightly"), vec![0]);
    w.input(wall(MONDAY + 3 * HOUR as i64 + 10 * 60_000));
    assert_eq!(w.spawns("nightly"), vec![0, fifty_minutes], "at once");
    assert!(
        w.history("nightly")
            .iter()
            .any(|l| l.contains("catch-up of at 03:00: run again")),
        "{:?}",
        w.history("nightly")
    );
}

/// An input handled at 03:00, before the tick that fires the `at` time: the run is the
/// planned one, not a catch-up (catch-up is looked for at boot and when the clock changes).
#[test]
fn an_input_at_an_at_time_before_its_tick_is_no_catch_up() {
    let mut w = World::new(
        "[service.nightly]\noneshot = [\"/usr/bin/refresh-blocklist\"]\nat = [\"03:00\"]\n\
         catch-up = true\n",
    );
    w.input(wall(MONDAY + 2 * HOUR as i64));
    let mut w = w.boot();
    w.run_until(HOUR - 1);
    w.now = medic_kernel::Instant::from_millis(HOUR);
    w.input(Input::FileChanged {
        path: "/etc/unwatched".into(),
    });
    w.run_until(HOUR + 1_000);
    assert_eq!(w.spawns("nightly"), vec![0, HOUR]);
    let history = w.history("nightly");
    assert!(
        history.iter().any(|l| l.contains("at 03:00: run again")),
        "{history:?}"
    );
    assert!(
        !history.iter().any(|l| l.contains("catch-up")),
        "{history:?}"
    );
}

/// NTP steps the clock to exactly 03:00:00.000: the 03:00 time is now, not tomorrow.
#[test]
fn a_clock_stepped_to_exactly_an_at_time_fires_it_now() {
    // Started at 02:00 on a trusted clock (its last run), or on a 1970 one (none known).
    for first in [MONDAY + 2 * HOUR as i64, 10_000] {
        let mut w = World::new(
            r#"
            [service.leaky]
            run = ["/usr/sbin/leaky"]
            at = ["03:00"]
            "#,
        );
        w.input(wall(first));
        let mut w = w.boot();
        w.run_until(10 * 60_000);
        w.input(wall(MONDAY + 3 * HOUR as i64));
        w.run_until(10 * 60_000 + 1_000);
        assert_eq!(
            w.spawns("leaky"),
            vec![0, 10 * 60_000],
            "{:?}",
            w.history("leaky")
        );
    }
}

/// What `medic status` reads of a service (the kernel's view) is what the kernel holds: when
/// its condition began, its process's start, whether it is wanted and was ever started, what
/// is ordered after it, how many of its needs are down, a file change waiting out its
/// debounce, and the SIGKILL or abandonment a stop waits for.
#[test]
fn the_status_view_says_what_the_kernel_holds() {
    let mut w = World::new(
        r#"
        [service.wan]
        interface = "eth0"
        [service.a]
        run = ["/bin/a"]
        restart-on = ["/etc/a.conf"]
        [service.b]
        run = ["/bin/b"]
        needs = ["wan"]
        after = ["a"]
        [service.idle]
        run = ["/bin/idle"]
        needs = ["wan"]
        "#,
    );
    w.link("eth0", link_ok());
    let mut w = w.boot();
    w.run_until(1_000);
    w.link("eth0", link_no_carrier());
    w.run_until(2_000);
    fn view<'a>(w: &'a World, name: &str) -> medic_kernel::ServiceView<'a> {
        w.kernel.status(w.id(name)).unwrap()
    }
    w.crash("a", 1);
    w.run_until(3_000);
    let restarted = *w.spawns("a").last().unwrap();
    assert!(restarted >= 2_000, "{:?}", w.spawns("a"));
    let a = view(&w, "a");
    assert_eq!(a.since().as_millis(), restarted, "ready since its restart");
    assert_eq!(a.process_started().map(|t| t.as_millis()), Some(restarted));
    assert!(a.wanted() && a.ever_started());
    assert_eq!(a.successors(), &[w.id("b")]);
    assert_eq!(a.unhealthy_needs(), 0);
    assert!(!a.file_change_pending());
    let b = view(&w, "b");
    assert_eq!(b.unhealthy_needs(), 1, "wan has no carrier");
    assert_eq!(b.since().as_millis(), 1_000);
    assert!(b.successors().is_empty());
    // A file change waits out its debounce.
    w.input(Input::FileChanged {
        path: "/etc/a.conf".into(),
    });
    assert!(view(&w, "a").file_change_pending());
    // The operator stops a; it ignores SIGTERM: SIGKILL, then abandonment, are what come.
    w.ignore_term.insert("a".into());
    w.ignore_term.insert("idle".into());
    w.operator(Operator::Stop("idle".into()));
    let idle = view(&w, "idle");
    assert!(!idle.wanted() && idle.ever_started());
    assert_eq!(idle.process_started().map(|t| t.as_millis()), Some(0));
    let (_, next) = idle.next_action().expect("a stop waits");
    assert_eq!(next, "SIGKILL to the group");
    // SIGKILL does not end it either (the world ignores it only for TERM: simulate by
    // leaving it running): after the kill, the next action is abandonment.
    let id = w.id("idle");
    let job = w.job("idle");
    w.running.remove(&id);
    let mut out = Vec::new();
    let at = w.now.as_millis() + 10_000;
    w.kernel.step(
        medic_kernel::Instant::from_millis(at),
        Input::Tick,
        &mut out,
    );
    assert!(out
        .iter()
        .any(|e| matches!(e, Effect::Kill { service, job: j } if *service == id && *j == job)));
    let (_, next) = w.kernel.status(id).unwrap().next_action().expect("waits");
    assert_eq!(next, "abandon (still alive after SIGKILL)");
    let debug = format!("{:?}", w.kernel.status(id).unwrap());
    assert!(debug.starts_with("ServiceView { name: \"idle\""), "{debug}");
}

/// With no `at` time in the config, ntpd's sync is no news: no notice about `at` times.
#[test]
fn clock_trust_without_at_times_is_no_news() {
    let mut w = World::new(NTPD_SYNCS);
    w.input(wall(MONDAY + 3 * HOUR as i64));
    let mut w = w.boot();
    w.run_until(HOUR);
    w.answer_check("ntpd", CheckResult::Ok);
    assert_eq!(w.condition("ntpd"), "ready");
    let notices: Vec<_> = w
        .log
        .iter()
        .filter(|(_, e)| matches!(e, Effect::Notice { message } if message.contains("wall clock")))
        .collect();
    assert!(notices.is_empty(), "{notices:?}");
}
