//! A workspace's life on the embedded `test:///default` hypervisor, through real
//! `vwnet node run` processes: publish → deploy → start → pause → unpause → stop → undeploy with
//! the state following at every step (in `ws-state`, `ls` and `inspect`); a node restart keeps
//! its deployments; hot images (save → undeploy --publish → deploy restores); an expired
//! workspace is refused; a stale fencing token is refused.

#[path = "swarm_common/mod.rs"]
mod swarm_common;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use swarm_common::{Node, make_description, publish, random_file, wait_for};

/// `vwnet --json ARGS` that must fail: returns its one-line error.
fn error_of(node: &Node, args: &[&str]) -> String {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = node.run(&all);
    assert!(
        !out.status.success(),
        "vwnet {args:?} should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("a JSON error");
    let line = v["error"].as_str().expect("an error line").to_owned();
    assert!(!line.contains('\n'), "{line}");
    line
}

/// The state `ws-state` reports (and checks that `ls` and `inspect` agree with it).
fn state(node: &Node, ws: &str) -> String {
    let s = node.json(&["ws-state", ws]);
    let state = s["state"].as_str().unwrap().to_owned();
    let listed = node.json(&["ls"]);
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["workspace"].as_str() == Some(ws))
        .expect("the workspace in ls");
    if s["deployed"].as_bool() == Some(true) {
        assert_eq!(entry["live_state"].as_str(), Some(state.as_str()), "ls");
        let inspect = node.json(&["inspect", ws]);
        let toml = inspect["description_toml"].as_str().unwrap();
        assert!(
            toml.contains(&format!("state = \"{state}\"")),
            "inspect shows the live state {state}: {toml}"
        );
    } else {
        assert!(entry["live_state"].is_null(), "ls: {entry}");
    }
    state
}

fn setup(dir: &Path, name: &str) -> (Node, String) {
    let node = Node::start(dir, name, &[]);
    let desc = make_description(&node.home, name);
    let image = dir.join(format!("{name}.img"));
    random_file(&image, 3 << 20, 11);
    let (ws, _) = publish(&node, &desc, &image);
    (node, ws)
}

#[test]
fn lifecycle_with_the_state_following_reality() {
    let dir = tempfile::tempdir().unwrap();
    let (mut node, ws) = setup(dir.path(), "life");
    assert_eq!(state(&node, &ws), "shutdown");
    assert_eq!(node.json(&["ws-state", &ws])["deployed"], false);

    let d = node.json(&["deploy", &ws, "--uri", "test:///default"]);
    assert_eq!(d["hot"], false);
    assert_eq!(d["state"]["state"], "shutdown");
    assert_eq!(d["state"]["domain_state"], "shutoff");
    assert!(d["fencing_token"].as_u64().unwrap() >= 1, "{d}");
    // The template asks for 512..=2048 MiB and 1..=2 vCPUs; this host has more than the max.
    assert_eq!(d["memory_mib"], 2048);
    let domain = d["state"]["domain"].as_str().unwrap().to_owned();
    assert!(
        domain.starts_with(&format!("vwnet-{}-", &ws[..8])),
        "{domain}"
    );
    let images = node.home.join("images").join(&ws);
    assert_eq!(
        std::fs::metadata(images.join("disk.qcow2")).unwrap().len(),
        3 << 20,
        "the disk is materialised in the node's images directory"
    );

    assert_eq!(state(&node, &ws), "shutdown");
    assert_eq!(node.json(&["start", &ws])["state"], "running");
    assert_eq!(state(&node, &ws), "running");
    assert_eq!(node.json(&["pause", &ws])["state"], "paused");
    assert_eq!(state(&node, &ws), "paused");
    let err = error_of(&node, &["pause", &ws]);
    assert!(err.contains("it is paused"), "{err}");
    assert_eq!(node.json(&["unpause", &ws])["state"], "running");
    assert_eq!(state(&node, &ws), "running");
    assert_eq!(node.json(&["stop", &ws])["state"], "shutdown");
    assert_eq!(state(&node, &ws), "shutdown");

    // A second deploy, another hypervisor and an unknown workspace are refused in one line.
    let err = error_of(&node, &["deploy", &ws]);
    assert!(err.contains("already deployed"), "{err}");
    let err = error_of(&node, &["deploy", &ws, "--uri", "qemu:///system"]);
    assert!(err.contains("this node holds test:///default"), "{err}");
    let err = error_of(&node, &["start", "nope"]);
    assert!(err.contains("not known"), "{err}");

    // A restarted node knows what it deployed; the test driver's machine was lost with the
    // process, so the domain is defined again (shut off) and starts.
    node.json(&["start", &ws]);
    node.stop();
    node.restart();
    let s = node.json(&["ws-state", &ws]);
    assert_eq!(s["deployed"], true, "{s}");
    assert_eq!(s["domain_state"], "shutoff", "{s}");
    assert_eq!(node.json(&["start", &ws])["state"], "running");
    node.json(&["stop", &ws, "--force"]);

    let u = node.json(&["undeploy", &ws]);
    assert_eq!(u["published"], Value::Null);
    let s = node.json(&["ws-state", &ws]);
    assert_eq!(s["deployed"], false);
    assert_eq!(s["state"], "shutdown");
    assert!(!images.exists(), "undeploy removes the workspace directory");
    let err = error_of(&node, &["start", &ws]);
    assert!(err.contains("not deployed on this node"), "{err}");
    // The lock was given back: deploying again works.
    node.json(&["deploy", &ws]);
    node.json(&["undeploy", &ws]);
}

#[test]
fn running_workspaces_are_not_undeployed_and_hot_images_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (node, ws) = setup(dir.path(), "hot");
    node.json(&["deploy", &ws]);
    node.json(&["start", &ws]);
    let err = error_of(&node, &["undeploy", &ws]);
    assert!(err.contains("stop or save it first"), "{err}");

    let saved = node.json(&["save", &ws]);
    assert_eq!(
        saved["state"]["state"], "paused",
        "a saved workspace is paused: {saved}"
    );
    assert_eq!(saved["state"]["saved"], true);
    assert!(saved["bytes"].as_u64().unwrap() > 0);
    assert_eq!(state(&node, &ws), "paused");

    let u = node.json(&["undeploy", &ws, "--publish"]);
    assert_eq!(u["published"], 2, "{u}");
    assert_eq!(u["state"], "paused");
    let s = node.json(&["ws-state", &ws]);
    assert_eq!(
        (s["deployed"].as_bool(), s["version"].as_u64()),
        (Some(false), Some(2))
    );
    assert_eq!(s["state"], "paused", "the published version is a hot image");
    let inspect = node.json(&["inspect", &ws]);
    let toml = inspect["description_toml"].as_str().unwrap();
    assert!(toml.contains("[image.memory_state]"), "{toml}");

    // Deploying a hot workspace restores it (paused) instead of booting it.
    let d = node.json(&["deploy", &ws]);
    assert_eq!(d["hot"], true, "{d}");
    assert_eq!(d["state"]["state"], "paused");
    assert_eq!(d["state"]["version"], 2);
    assert_eq!(node.json(&["unpause", &ws])["state"], "running");
    node.json(&["stop", &ws, "--force"]);
    let u = node.json(&["undeploy", &ws, "--publish"]);
    assert_eq!(
        (u["published"].as_u64(), u["state"].as_str()),
        (Some(3), Some("shutdown"))
    );
}

#[test]
fn an_expired_workspace_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), "exp", &[]);
    let desc = make_description(&node.home, "exp");
    let text = std::fs::read_to_string(&desc).unwrap();
    let text = text.replace("life_cycle = \"30days\"", "life_cycle = \"4s\"");
    // The description's creation time is its `desc new` time; publish right away.
    std::fs::write(&desc, text).unwrap();
    let image = dir.path().join("exp.img");
    random_file(&image, 1 << 20, 5);
    let (ws, _) = publish(&node, &desc, &image);
    let err = wait_for(Duration::from_secs(20), "the workspace to expire", || {
        let out = node.run(&["--json", "deploy", &ws]);
        if out.status.success() {
            node.json(&["undeploy", &ws]);
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let line = v["error"].as_str()?.to_owned();
        line.contains("expired at").then_some(line)
    });
    assert!(
        err.starts_with(&format!("workspace {} expired at ", &ws[..8])),
        "{err}"
    );
    assert_eq!(node.json(&["ws-state", &ws])["deployed"], false);
}

/// Whether `node` knows `ws` at `version` (from gossip or the catalog exchange).
fn knows(node: &Node, ws: &str, version: u64) -> bool {
    let list = node.json(&["ls", "--remote"]);
    list.as_array().is_some_and(|l| {
        l.iter()
            .any(|e| e["workspace"].as_str() == Some(ws) && e["version"].as_u64() >= Some(version))
    })
}

#[test]
fn migrate_moves_only_changed_chunks_and_resumes_at_the_destination() {
    let dir = tempfile::tempdir().unwrap();
    let (a, ws) = setup(dir.path(), "mig-a");
    let b = Node::start(dir.path(), "mig-b", &["--bootstrap", &a.addr()]);
    wait_for(Duration::from_secs(30), "B to learn the workspace", || {
        knows(&b, &ws, 1).then_some(())
    });
    // B already holds version 1's disk: the migration must not send it again.
    b.json(&["pull", &ws]);

    a.json(&["deploy", &ws]);
    a.json(&["start", &ws]);
    let to = b.peer_id();
    let m = a.json(&["migrate", &ws, "--to", &to]);
    assert_eq!(m["to"], to.as_str());
    assert_eq!(m["version"], 2);
    assert_eq!(m["state"], "running", "{m}");
    // Only the memory state is new (the test driver does not write to the disk).
    let moved = m["bytes_moved"].as_u64().unwrap();
    assert!(moved <= m["new_bytes"].as_u64().unwrap(), "{m}");
    assert!(m["bytes_local"].as_u64().unwrap() >= 3 << 20, "{m}");

    let at_b = b.json(&["ws-state", &ws]);
    assert_eq!(
        (at_b["deployed"].as_bool(), at_b["state"].as_str()),
        (Some(true), Some("running"))
    );
    let at_a = a.json(&["ws-state", &ws]);
    assert_eq!(at_a["deployed"], false, "{at_a}");
    // B holds the lock now: A cannot deploy it back.
    let err = error_of(&a, &["deploy", &ws]);
    assert!(err.contains("locked by"), "{err}");
    b.json(&["stop", &ws, "--force"]);
    b.json(&["undeploy", &ws]);
}

#[test]
fn a_stale_fencing_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Short leases so that a dead holder's lease runs out quickly.
    let config = dir.path().join("lease.toml");
    std::fs::write(&config, "lock_lease = \"3s\"\n").unwrap();
    let config = config.to_str().unwrap();
    // P publishes, and so is the workspace's lock authority; A and B deploy.
    let (p, ws) = setup(dir.path(), "fence-p");
    let mut a = Node::start(
        dir.path(),
        "fence-a",
        &["--bootstrap", &p.addr(), "--config", config],
    );
    let b = Node::start(
        dir.path(),
        "fence-b",
        &["--bootstrap", &p.addr(), "--config", config],
    );
    for n in [&a, &b] {
        wait_for(Duration::from_secs(30), "the workspace to be known", || {
            knows(n, &ws, 1).then_some(())
        });
    }
    let first = a.json(&["deploy", &ws]);
    let first_token = first["fencing_token"].as_u64().unwrap();
    assert_eq!(a.json(&["start", &ws])["state"], "running");
    // While A's lease is live and renewed, B is told who holds it.
    let err = error_of(&b, &["deploy", &ws]);
    assert!(err.contains("locked by"), "{err}");

    // A dies (or is cut off); its lease runs out at the authority and B takes the lock.
    a.kill9();
    let second = wait_for(Duration::from_secs(30), "B to get the lock", || {
        let out = b.run(&["--json", "deploy", &ws]);
        out.status
            .success()
            .then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap())
    });
    assert!(
        second["fencing_token"].as_u64().unwrap() > first_token,
        "{second} after token {first_token}"
    );
    assert_eq!(b.json(&["start", &ws])["state"], "running");

    // A comes back believing it deployed the workspace; its token is stale: it may not run it.
    a.restart();
    let s = a.json(&["ws-state", &ws]);
    assert_eq!(
        (s["deployed"].as_bool(), s["state"].as_str()),
        (Some(true), Some("shutdown"))
    );
    for op in ["start", "unpause"] {
        let err = error_of(&a, &[op, &ws]);
        assert!(
            err.starts_with(&format!("{op} of workspace {} refused: ", &ws[..8])),
            "{err}"
        );
    }
    assert_eq!(a.json(&["ws-state", &ws])["state"], "shutdown");
    assert_eq!(b.json(&["ws-state", &ws])["state"], "running");
}

#[test]
fn racing_deploys_have_one_winner_and_a_policy_denied_deploy_names_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    // P publishes, and so grants the workspace's leases; A and B race; D's policy forbids
    // deploys (but relays publications, so D knows the workspace).
    let (p, ws) = setup(dir.path(), "race-p");
    let policy = dir.path().join("no-deploys.toml");
    std::fs::write(
        &policy,
        "[[rule]]\nname = \"no deploys here\"\neffect = \"deny\"\nactions = [\"deploy\"]\n\
         everyone = true\n\n[[rule]]\nname = \"anyone publishes\"\neffect = \"allow\"\n\
         actions = [\"publish\"]\neveryone = true\n",
    )
    .unwrap();
    let boot = p.addr();
    let a = Node::start(dir.path(), "race-a", &["--bootstrap", &boot]);
    let b = Node::start(dir.path(), "race-b", &["--bootstrap", &boot]);
    let d = Node::start(
        dir.path(),
        "race-d",
        &["--bootstrap", &boot, "--policy", policy.to_str().unwrap()],
    );
    for n in [&a, &b, &d] {
        wait_for(Duration::from_secs(30), "the workspace to be known", || {
            knows(n, &ws, 1).then_some(())
        });
    }

    let err = error_of(&d, &["deploy", &ws]);
    assert!(err.contains("no deploys here"), "{err}");
    assert_eq!(d.json(&["ws-state", &ws])["deployed"], false);

    let spawn = |n: &Node| {
        std::process::Command::new(swarm_common::vwnet_bin())
            .arg("--home")
            .arg(&n.home)
            .args(["--json", "deploy", &ws])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn vwnet deploy")
    };
    let (ra, rb) = (spawn(&a), spawn(&b));
    let outs = [
        ra.wait_with_output().unwrap(),
        rb.wait_with_output().unwrap(),
    ];
    let won: Vec<bool> = outs.iter().map(|o| o.status.success()).collect();
    assert_eq!(
        won.iter().filter(|w| **w).count(),
        1,
        "exactly one deploy wins: {:?}",
        outs.iter()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .collect::<Vec<_>>()
    );
    let loser = &outs[usize::from(won[0])];
    let line: Value = serde_json::from_slice(&loser.stdout).expect("a JSON error");
    let line = line["error"].as_str().unwrap_or_default();
    assert!(
        line.contains("locked by") && line.contains("until"),
        "{line}"
    );
    let (winner, other) = if won[0] { (&a, &b) } else { (&b, &a) };
    assert_eq!(winner.json(&["ws-state", &ws])["deployed"], true);
    assert_eq!(other.json(&["ws-state", &ws])["deployed"], false);
    winner.json(&["undeploy", &ws]);
}
