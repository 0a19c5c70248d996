//! Deploy locks over real `vwnet node run` processes on 127.0.0.1: racing nodes, a holder
//! killed with SIGKILL, an unreachable authority. Leases are 3 s so that expiry is quick;
//! every wait polls with a deadline.

mod swarm_common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use swarm_common::{Node, make_description, publish, random_file, vwnet_bin, wait_for};

const LEASE_SECS: u64 = 3;

fn workspace_listed(node: &Node, ws: &str) -> bool {
    node.json(&["ls", "--remote"])
        .as_array()
        .is_some_and(|l| l.iter().any(|w| w["workspace"] == ws))
}

fn identity(node: &Node) -> String {
    node.status()["identity"].as_str().unwrap().to_owned()
}

/// Starts `vwnet --json lock acquire WS` against `node` without waiting for it.
fn spawn_acquire(node: &Node, ws: &str) -> std::process::Child {
    Command::new(vwnet_bin())
        .arg("--home")
        .arg(&node.home)
        .args(["--json", "lock", "acquire", ws])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vwnet lock acquire")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn parse(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bad JSON ({e}): {}", text(out)))
}

/// The lock as `node` shows it (`lock show --json`), once it names `holder` with `token`.
fn wait_lock_seen(node: &Node, ws: &str, holder: &str, token: u64) -> Value {
    wait_for(
        Duration::from_secs(20),
        "the lock record to reach a node",
        || {
            let v = node.json(&["lock", "show", ws]);
            (v["holder"] == holder && v["token"] == token).then_some(v)
        },
    )
}

fn config(dir: &Path) -> String {
    let path = dir.join("locks.toml");
    fs::write(&path, format!("lock_lease = \"{LEASE_SECS}s\"\n")).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn racers_get_one_lock_and_a_killed_holder_loses_it_at_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let mut a = Node::start(dir.path(), "a", &["--config", &cfg]);
    let desc = make_description(&a.home, "locked");
    let image = dir.path().join("img.raw");
    random_file(&image, 256 * 1024, 7);
    // No lock_authorities in the description: publishing names node A.
    let (ws, _) = publish(&a, &desc, &image);
    let a_id = identity(&a);
    let detail = a.json(&["inspect", &ws]);
    assert!(
        detail["description_toml"].as_str().unwrap().contains(&a_id),
        "the publishing node is the lock authority: {detail}"
    );

    let addr = a.addr();
    let b = Node::start(dir.path(), "b", &["--config", &cfg, "--bootstrap", &addr]);
    let c = Node::start(dir.path(), "c", &["--config", &cfg, "--bootstrap", &addr]);
    for n in [&b, &c] {
        wait_for(Duration::from_secs(20), "the workspace to spread", || {
            workspace_listed(n, &ws).then_some(())
        });
    }

    // B and C race: exactly one wins, the other is told who holds it and until when.
    let (pb, pc) = (spawn_acquire(&b, &ws), spawn_acquire(&c, &ws));
    let (ob, oc) = (
        pb.wait_with_output().unwrap(),
        pc.wait_with_output().unwrap(),
    );
    let (mut winner, loser, won, lost) = match (ob.status.success(), oc.status.success()) {
        (true, false) => (b, c, ob, oc),
        (false, true) => (c, b, oc, ob),
        _ => panic!(
            "exactly one racer must win:\nB: {}\nC: {}",
            text(&ob),
            text(&oc)
        ),
    };
    let lost = text(&lost);
    assert!(
        lost.contains("locked by ") && lost.contains(" until "),
        "the loser's error: {lost}"
    );
    let lease = parse(&won);
    let winner_id = identity(&winner);
    assert_eq!(lease["holder"], winner_id.as_str(), "{lease}");
    assert_eq!(lease["state"], "held");
    assert_eq!(lease["this_node"], "valid");
    let first_token = lease["token"].as_u64().unwrap();

    // The signed grant travels by gossip: the authority and the loser see the holder.
    wait_lock_seen(&loser, &ws, &winner_id, first_token);
    wait_lock_seen(&a, &ws, &winner_id, first_token);
    let inspect = a.json(&["inspect", &ws]);
    assert_eq!(inspect["lock"]["holder"], winner_id.as_str(), "{inspect}");
    assert_eq!(inspect["lock"]["authority"], a_id.as_str(), "{inspect}");

    // While the winner renews, the lock stays taken past one lease.
    std::thread::sleep(Duration::from_secs(LEASE_SECS + 1));
    let again = loser.run(&["lock", "acquire", &ws]);
    assert!(!again.status.success(), "{}", text(&again));
    assert!(text(&again).contains("locked by "), "{}", text(&again));

    // The holder dies without a word; after its lease expires the other node gets the lock,
    // with a higher fencing token.
    winner.kill9();
    let second = wait_for(
        Duration::from_secs(30),
        "the lock to be free after the holder died",
        || {
            let out = loser.run(&["--json", "lock", "acquire", &ws]);
            out.status.success().then(|| parse(&out))
        },
    );
    assert_eq!(second["holder"], identity(&loser).as_str(), "{second}");
    assert!(second["token"].as_u64().unwrap() > first_token, "{second}");
    wait_lock_seen(
        &a,
        &ws,
        &identity(&loser),
        second["token"].as_u64().unwrap(),
    );

    // Released: the authority frees it at once.
    let out = loser.run(&["lock", "release", &ws]);
    assert!(out.status.success(), "{}", text(&out));
    let shown = wait_for(Duration::from_secs(20), "the release to be seen", || {
        let v = a.json(&["lock", "show", &ws]);
        (v["state"] == "released").then_some(v)
    });
    assert_eq!(shown["token"], second["token"]);

    // The authority is gone: new checkouts fail clearly.
    a.kill9();
    let out = loser.run(&["lock", "acquire", &ws]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("lock authority unreachable"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_restarted_holder_renews_its_lease_with_the_same_token() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let a = Node::start(dir.path(), "a", &["--config", &cfg]);
    let desc = make_description(&a.home, "kept");
    let image = dir.path().join("img.raw");
    random_file(&image, 64 * 1024, 3);
    let (ws, _) = publish(&a, &desc, &image);
    let mut b = Node::start(
        dir.path(),
        "b",
        &["--config", &cfg, "--bootstrap", &a.addr()],
    );
    wait_for(Duration::from_secs(20), "the workspace to spread", || {
        workspace_listed(&b, &ws).then_some(())
    });
    let lease = b.json(&["lock", "acquire", &ws]);
    let token = lease["token"].as_u64().unwrap();

    // Killed and restarted: the lease comes back from `locks.redb` and is renewed at once
    // (also if the restart took longer than the lease: nobody else took it meanwhile).
    b.kill9();
    b.restart();
    let shown = wait_for(
        Duration::from_secs(20),
        "the lease to be renewed after the restart",
        || {
            let v = b.json(&["lock", "show", &ws]);
            (v["this_node"] == "valid").then_some(v)
        },
    );
    assert_eq!(shown["token"], token, "{shown}");
    // The lease stays held past another lease length, so it is really being renewed.
    std::thread::sleep(Duration::from_secs(LEASE_SECS + 1));
    let v = b.json(&["lock", "show", &ws]);
    assert_eq!(v["this_node"], "valid", "{v}");
    let v = a.json(&["lock", "show", &ws]);
    assert_eq!(
        (v["token"].as_u64(), v["state"].as_str()),
        (Some(token), Some("held")),
        "{v}"
    );
}
