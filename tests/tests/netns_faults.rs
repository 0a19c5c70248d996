//! Fault tests on real nodes in network namespaces: a host SIGKILLed mid swarm-pull, a host
//! serving corrupted chunks, a partition between two sites during a pull, and 2% loss on
//! every link; and the two-site WAN budget (each chunk crosses about once). Small images and fast links keep each one to seconds; every wait is a
//! condition with a deadline. Needs root (see `netns_available`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;
use vwnet_sim::topology::Topology;
use vwnet_tests::images::TestImages;
use vwnet_tests::testbed::bench::{file_hash, make_description, publish, wait_known};
use vwnet_tests::testbed::net::Shape;
use vwnet_tests::testbed::{Options, Testbed, find_vwnet, netns_available, wait_for};

const MIB: u64 = 1 << 20;

/// One testbed at a time: the machine has few cores and the timings matter.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A testbed of `topology` with a node on every host (debug logs: the tests read them).
fn testbed(topology: &str, extra: impl FnMut(&str) -> Vec<String>) -> Testbed {
    let topo = Topology::from_toml(topology).unwrap();
    let mut options = Options::new(find_vwnet().unwrap());
    options.rust_log = "info,vwnet_node=debug,libp2p=warn".into();
    let mut tb = Testbed::create(&topo, options).unwrap();
    tb.start_nodes(extra).unwrap();
    tb
}

/// Publishes a random image of `size` bytes on the publisher; returns (workspace, disk, file).
fn publish_image(tb: &Testbed, size: u64, seed: u64) -> (String, String, PathBuf) {
    let images = TestImages::in_dir(tb.dir().join("images")).unwrap();
    let image = images.random("img.raw", size, seed).unwrap();
    let publisher = tb.publisher().to_owned();
    let desc = make_description(tb, &publisher, "fault").unwrap();
    let (ws, disk) = publish(tb, &publisher, &desc, &image).unwrap();
    (ws, disk, image)
}

/// What most fault tests start from: a testbed, an image published on its publisher, and every
/// other host knowing the workspace. Bind `_serial` first when destructuring: bindings drop in
/// reverse order, so the testbed is torn down before this test's turn on the machine ends.
struct Started {
    tb: Testbed,
    ws: String,
    disk: String,
    image: PathBuf,
    pullers: Vec<String>,
    _serial: MutexGuard<'static, ()>,
}

/// Takes this test's turn, starts `topology` and publishes a random image of `size` bytes;
/// `None` when network namespaces are not available here (the test then does nothing).
fn start_with_image(topology: &str, size: u64, seed: u64) -> Option<Started> {
    if !netns_available().unwrap() {
        return None;
    }
    let serial = serial();
    let tb = testbed(topology, |_| Vec::new());
    let (ws, disk, image) = publish_image(&tb, size, seed);
    let pullers = others(&tb);
    wait_known(&tb, &pullers, &ws, None).unwrap();
    Some(Started {
        tb,
        ws,
        disk,
        image,
        pullers,
        _serial: serial,
    })
}

fn others(tb: &Testbed) -> Vec<String> {
    tb.host_names()
        .into_iter()
        .filter(|h| h != tb.publisher())
        .collect()
}

/// `vwnet --json pull WS` against `host`'s node, in the background.
fn spawn_pull(tb: &Testbed, host: &str, ws: &str) -> Child {
    Command::new(find_vwnet().unwrap())
        .arg("--home")
        .arg(tb.home(host))
        .args(["--json", "pull", ws])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a background pull and returns its JSON summary, failing with its stderr.
fn finish_pull(tb: &Testbed, host: &str, child: Child, timeout: Duration) -> Value {
    let mut child = Some(child);
    wait_for(timeout, &format!("the pull on {host}"), || {
        child.as_mut()?.try_wait().unwrap().map(drop)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", tb.log_text(host)));
    let out = child.take().unwrap().wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "pull on {host} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Bytes of the (only) workspace `host` holds locally.
fn held(tb: &Testbed, host: &str) -> u64 {
    tb.vwnet_json(host, &["ls"])
        .ok()
        .and_then(|l| l.as_array()?.first()?["local_bytes"].as_u64())
        .unwrap_or(0)
}

fn assert_identical(tb: &Testbed, host: &str, disk: &str, original: &Path) {
    let out = tb.dir().join(format!("export-{host}.raw"));
    tb.vwnet_json(
        host,
        &["node", "export", disk, "--out", &out.to_string_lossy()],
    )
    .unwrap();
    assert_eq!(
        file_hash(&out).unwrap(),
        file_hash(original).unwrap(),
        "{host}'s copy differs from the original"
    );
    fs::remove_file(out).unwrap();
}

const ONE_SITE: &str = r#"
[defaults]
uplink = "40mbit"
downlink = "40mbit"
delay = "1ms"
[[site]]
name = "a"
hosts = 4
"#;

#[test]
fn host_sigkilled_mid_pull_others_finish_and_it_resumes_with_the_rest() {
    let size = 24 * MIB;
    let Some(Started {
        _serial,
        mut tb,
        ws,
        disk,
        image,
        pullers,
    }) = start_with_image(ONE_SITE, size, 11)
    else {
        return;
    };
    let victim = "a4";
    let mut pulls: Vec<(String, Child)> = pullers
        .iter()
        .map(|h| (h.clone(), spawn_pull(&tb, h, &ws)))
        .collect();
    // 24 MiB at 40 Mbit/s takes ~5 s: a quarter in, the kill lands mid-transfer.
    wait_for(
        Duration::from_secs(60),
        "the victim's pull to be under way",
        || (held(&tb, victim) >= size / 4).then_some(()),
    )
    .unwrap();
    tb.kill_node(victim).unwrap();
    let (_, victim_pull) = pulls.pop().unwrap();
    let _ = victim_pull.wait_with_output();
    for (h, child) in pulls {
        let summary = finish_pull(&tb, &h, child, Duration::from_secs(120));
        assert_eq!(
            summary["bytes_fetched"].as_u64().unwrap() + summary["bytes_local"].as_u64().unwrap(),
            size,
            "{summary}"
        );
        assert_identical(&tb, &h, &disk, &image);
    }

    tb.restart_node(victim).unwrap();
    let held_before = held(&tb, victim);
    assert!(
        held_before >= size / 4 && held_before < size,
        "held {held_before} of {size} after the restart"
    );
    wait_known(&tb, &[victim.to_owned()], &ws, None).unwrap();
    let summary = finish_pull(
        &tb,
        victim,
        spawn_pull(&tb, victim, &ws),
        Duration::from_secs(120),
    );
    let fetched = summary["bytes_fetched"].as_u64().unwrap();
    assert_eq!(
        summary["bytes_local"].as_u64().unwrap() + fetched,
        size,
        "{summary}"
    );
    assert!(
        fetched <= size - held_before,
        "refetched data it held: fetched {fetched}, held {held_before} of {size}"
    );
    assert_identical(&tb, victim, &disk, &image);
}

const FIVE_HOSTS: &str = r#"
[defaults]
uplink = "100mbit"
downlink = "100mbit"
delay = "1ms"
[[site]]
name = "a"
hosts = 5
"#;

#[test]
fn host_serving_corrupted_chunks_is_banned_and_everyone_ends_byte_identical() {
    if !netns_available().unwrap() {
        return;
    }
    let _serial = serial();
    let bad = "a2";
    let tb = testbed(FIVE_HOSTS, |h| {
        if h == bad {
            vec!["--fault-corrupt-uploads".into()]
        } else {
            Vec::new()
        }
    });
    let size = 8 * MIB;
    let (ws, disk, image) = publish_image(&tb, size, 12);
    // The bad host gets a full copy first, at full speed.
    wait_known(&tb, &[bad.to_owned()], &ws, None).unwrap();
    finish_pull(&tb, bad, spawn_pull(&tb, bad, &ws), Duration::from_secs(60));
    // Then the honest publisher becomes slow, so that the victims certainly ask the bad host.
    let slow = Shape {
        rate_bps: Some(8_000_000),
        delay: Duration::from_millis(1),
        loss_pct: 0.0,
    };
    let fast = tb.host("a1").unwrap().down;
    tb.set_host_shape("a1", slow, fast).unwrap();
    let bad_id = tb.vwnet_json(bad, &["node", "status"]).unwrap()["peer_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let victims = ["a3", "a4", "a5"].map(str::to_owned);
    wait_known(&tb, &victims, &ws, None).unwrap();
    // Wait until each victim knows the bad host has it all (it is a source from the start).
    for v in &victims {
        wait_for(
            Duration::from_secs(30),
            "victims to see the bad host",
            || (tb.peer_count(v).ok()? >= 4).then_some(()),
        )
        .unwrap();
    }
    let pulls: Vec<(String, Child)> = victims
        .iter()
        .map(|h| (h.clone(), spawn_pull(&tb, h, &ws)))
        .collect();
    let mut banned = 0;
    for (h, child) in pulls {
        let summary = finish_pull(&tb, &h, child, Duration::from_secs(120));
        assert_eq!(
            summary["bytes_fetched"].as_u64().unwrap(),
            size,
            "{summary}"
        );
        for p in summary["per_peer"].as_array().unwrap() {
            assert!(
                p[0] != bad_id.as_str() || p[1] == 0,
                "{h} credited verified bytes to the corrupting host: {summary}"
            );
        }
        assert_identical(&tb, &h, &disk, &image);
        let log = tb.log_text(&h);
        if log.contains("corrupt chunk received") {
            assert!(
                log.contains("banning peer") && log.contains(&bad_id),
                "{h} saw corruption but banned nobody:\n{log}"
            );
            banned += 1;
        }
    }
    assert!(banned >= 1, "no victim ever received a corrupted chunk");
}

const TWO_SITES: &str = r#"
[defaults]
uplink = "40mbit"
downlink = "40mbit"
delay = "1ms"
[[site]]
name = "a"
hosts = 3
[[site]]
name = "b"
hosts = 3
[[wan]]
sites = ["a", "b"]
rate = "40mbit"
delay = "5ms"
"#;

#[test]
fn partition_between_sites_each_side_progresses_and_completes_after_heal() {
    let size = 24 * MIB;
    let Some(Started {
        _serial,
        tb,
        ws,
        disk,
        image,
        pullers,
    }) = start_with_image(TWO_SITES, size, 13)
    else {
        return;
    };
    for h in &pullers {
        wait_for(Duration::from_secs(30), "the overlay to connect", || {
            (tb.peer_count(h).ok()? >= 3).then_some(())
        })
        .unwrap();
    }
    let site_b = ["b1", "b2", "b3"].map(str::to_owned);
    let mut pulls: Vec<(String, Child)> = pullers
        .iter()
        .map(|h| (h.clone(), spawn_pull(&tb, h, &ws)))
        .collect();
    // Cut while site b holds part of the image: some, far from all.
    wait_for(
        Duration::from_secs(60),
        "site b to hold a fifth per host on average",
        || {
            let total: u64 = site_b.iter().map(|h| held(&tb, h)).sum();
            (total >= size * 3 / 5).then_some(())
        },
    )
    .unwrap();
    tb.set_wan_cut("a", "b", true).unwrap();
    let cut_counters: Vec<_> = site_b
        .iter()
        .map(|h| tb.host_counters(h).unwrap())
        .collect();
    let at_cut: Vec<u64> = site_b.iter().map(|h| held(&tb, h)).collect();
    let best = *at_cut.iter().max().unwrap();
    assert!(
        best < size,
        "site b already had everything at the cut: {at_cut:?}"
    );

    // Site a reaches the publisher: it completes during the partition.
    let mut b_pulls: Vec<(String, Child)> = pulls.split_off(2);
    for (h, child) in pulls {
        let summary = finish_pull(&tb, &h, child, Duration::from_secs(60));
        assert_eq!(
            summary["bytes_fetched"].as_u64().unwrap() + summary["bytes_local"].as_u64().unwrap(),
            size
        );
    }
    // Site b shares what it has: every b host ends up holding as much as the best-stocked one
    // (they fetch from each other, so they may already hold the same set at the cut).
    let traded = || -> u64 {
        site_b
            .iter()
            .zip(&cut_counters)
            .map(|(h, c)| tb.host_counters(h).map_or(0, |n| n.since(*c).tx_bytes))
            .sum()
    };
    // Requests already sent across the cut only fail at the request timeout (20 s), and a
    // peer that times out is retried before it is given up on, so chunks in flight to site a
    // at the cut can be held up for a few timeouts before site b asks its own hosts.
    wait_for(
        Duration::from_secs(90),
        "site b to share its chunks",
        || {
            let now: Vec<u64> = site_b.iter().map(|h| held(&tb, h)).collect();
            (now.iter().min() == now.iter().max() && now[0] >= best).then_some(())
        },
    )
    .unwrap_or_else(|e| {
        let now: Vec<u64> = site_b.iter().map(|h| held(&tb, h)).collect();
        panic!(
            "{e}: held at cut {at_cut:?}, now {now:?}, sent within site b {} bytes",
            traded()
        )
    });
    let during: Vec<u64> = site_b.iter().map(|h| held(&tb, h)).collect();
    assert!(
        during.iter().all(|&b| b < size),
        "completed without the publisher: {during:?}"
    );

    // Their pulls wait for the missing chunks instead of failing.
    for (h, child) in &mut b_pulls {
        let status = child.try_wait().unwrap();
        assert!(
            status.is_none(),
            "the pull on {h} ended during the partition: {status:?}"
        );
    }
    tb.set_wan_cut("a", "b", false).unwrap();
    for (h, child) in b_pulls {
        let summary = finish_pull(&tb, &h, child, Duration::from_secs(120));
        assert_eq!(
            summary["bytes_fetched"].as_u64().unwrap() + summary["bytes_local"].as_u64().unwrap(),
            size,
            "{summary}"
        );
        assert_identical(&tb, &h, &disk, &image);
    }
}

const LOSSY: &str = r#"
[defaults]
uplink = "100mbit"
downlink = "100mbit"
delay = "1ms"
loss = 2.0
[[site]]
name = "a"
hosts = 3
[[site]]
name = "b"
hosts = 2
[[wan]]
sites = ["a", "b"]
rate = "100mbit"
delay = "2ms"
loss = 2.0
"#;

#[test]
fn two_percent_loss_on_every_link_still_completes() {
    let size = 16 * MIB;
    let Some(Started {
        _serial,
        tb,
        ws,
        disk,
        image,
        pullers,
    }) = start_with_image(LOSSY, size, 14)
    else {
        return;
    };
    let pulls: Vec<(String, Child)> = pullers
        .iter()
        .map(|h| (h.clone(), spawn_pull(&tb, h, &ws)))
        .collect();
    for (h, child) in pulls {
        let summary = finish_pull(&tb, &h, child, Duration::from_secs(120));
        assert_eq!(
            summary["bytes_fetched"].as_u64().unwrap(),
            size,
            "{summary}"
        );
        assert_identical(&tb, &h, &disk, &image);
    }
}

const TWO_SITES_SLOW_WAN: &str = r#"
[defaults]
uplink = "100mbit"
downlink = "100mbit"
delay = "1ms"
[[site]]
name = "a"
hosts = 2
[[site]]
name = "b"
hosts = 4
[[wan]]
sites = ["a", "b"]
rate = "20mbit"
delay = "10ms"
"#;

/// Regression (#6): every host of a site fetched each chunk across the WAN by itself, so a site
/// of 8 pullers moved 8 × S over the slow link. Now one host per chunk does and its neighbours
/// take it from there.
#[test]
fn two_site_pull_moves_each_chunk_across_the_wan_about_once() {
    let size = 24 * MIB;
    let Some(Started {
        _serial,
        tb,
        ws,
        disk,
        image,
        pullers,
    }) = start_with_image(TWO_SITES_SLOW_WAN, size, 15)
    else {
        return;
    };
    let before = tb.wan_counters("a", "b").unwrap();
    let pulls: Vec<(String, Child)> = pullers
        .iter()
        .map(|h| (h.clone(), spawn_pull(&tb, h, &ws)))
        .collect();
    for (h, child) in pulls {
        let summary = finish_pull(&tb, &h, child, Duration::from_secs(120));
        assert_eq!(
            summary["bytes_fetched"].as_u64().unwrap(),
            size,
            "{summary}"
        );
    }
    let moved = tb.wan_counters("a", "b").unwrap().since(before);
    let wan = moved.tx_bytes + moved.rx_bytes;
    // Both directions count: acknowledgements and gossip are part of the budget.
    assert!(
        wan <= size * 13 / 10,
        "{:.2} × S crossed the WAN",
        wan as f64 / size as f64
    );
    assert_identical(&tb, "b4", &disk, &image);
}

/// `vwnet --json ARGS` on `host` that must fail: returns its one-line error.
fn error_of(tb: &Testbed, host: &str, args: &[&str]) -> String {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = tb.vwnet(host, &all).unwrap();
    assert!(
        !out.status.success(),
        "vwnet {args:?} on {host} should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("a JSON error");
    v["error"].as_str().expect("an error line").to_owned()
}

const LOCK_SITES: &str = r#"
[defaults]
uplink = "100mbit"
downlink = "100mbit"
[[site]]
name = "a"
hosts = 2
[[site]]
name = "b"
hosts = 1
[[wan]]
sites = ["a", "b"]
rate = "100mbit"
"#;

#[test]
fn lock_holder_partitioned_away_loses_its_lease_and_cannot_restart_after_heal() {
    if !netns_available().unwrap() {
        return;
    }
    let _serial = serial();
    // Short leases (renewed every third) so that a cut-off holder's lease runs out quickly.
    let scratch = tempfile::tempdir().unwrap();
    let config = scratch.path().join("lease.toml");
    fs::write(&config, "lock_lease = \"3s\"\n").unwrap();
    let config = config.to_string_lossy().into_owned();
    let tb = testbed(LOCK_SITES, |_| vec!["--config".into(), config.clone()]);
    // a1 publishes, so it is the workspace's lock authority; b1 (across the WAN) deploys.
    let (ws, _, _) = publish_image(&tb, MIB, 15);
    wait_known(&tb, &others(&tb), &ws, None).unwrap();
    let first = tb.vwnet_json("b1", &["deploy", &ws]).unwrap();
    let first_token = first["fencing_token"].as_u64().unwrap();
    assert_eq!(
        tb.vwnet_json("b1", &["start", &ws]).unwrap()["state"],
        "running"
    );
    let err = error_of(&tb, "a2", &["deploy", &ws]);
    assert!(err.contains("locked by"), "{err}");

    // Partition: b1 cannot renew; its own view of its lease lapses, and the authority's too.
    tb.set_wan_cut("a", "b", true).unwrap();
    wait_for(Duration::from_secs(30), "b1 to see its lease lapse", || {
        let v = tb.vwnet_json("b1", &["lock", "show", &ws]).ok()?;
        (v["this_node"] != "valid").then_some(())
    })
    .unwrap();
    let second = wait_for(Duration::from_secs(30), "a2 to get the lock", || {
        let out = tb.vwnet("a2", &["--json", "deploy", &ws]).ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap())
    })
    .unwrap();
    assert!(
        second["fencing_token"].as_u64().unwrap() > first_token,
        "{second} after token {first_token}"
    );
    assert_eq!(
        tb.vwnet_json("a2", &["start", &ws]).unwrap()["state"],
        "running"
    );

    // Heal: b1 is back, but its token is stale; it may not run the workspace again.
    tb.set_wan_cut("a", "b", false).unwrap();
    if tb.vwnet_json("b1", &["ws-state", &ws]).unwrap()["state"] == "running" {
        tb.vwnet_json("b1", &["stop", &ws, "--force"]).unwrap();
    }
    let err = error_of(&tb, "b1", &["start", &ws]);
    assert!(err.contains("refused"), "{err}");
    assert_eq!(
        tb.vwnet_json("b1", &["ws-state", &ws]).unwrap()["state"],
        "shutdown"
    );
    assert_eq!(
        tb.vwnet_json("a2", &["ws-state", &ws]).unwrap()["state"],
        "running"
    );
}
