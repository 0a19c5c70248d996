//! The factory and workspace lifetime over real `vwnet node run` processes on 127.0.0.1:
//! policy decisions on create and on gossip, clones sharing chunks, expiry, pins, gc, extend.

mod swarm_common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use swarm_common::{Node, free_port, http_get, json, make_description, random_file, wait_for};

const MIB: usize = 1024 * 1024;

/// A user: a home of their own holding their key and a description they own.
struct User {
    home: PathBuf,
    desc: PathBuf,
    identity: String,
}

fn user(dir: &Path, name: &str) -> User {
    let home = dir.join(format!("user-{name}"));
    let desc = make_description(&home, name);
    let identity = json(&home, &["key", "show"])["identity"]
        .as_str()
        .unwrap()
        .to_owned();
    User {
        home,
        desc,
        identity,
    }
}

/// Makes `node`'s home act as `user`: the CLI signs with `<home>/identity.key`.
fn act_as(node: &Node, user: &User) {
    fs::copy(
        user.home.join("identity.key"),
        node.home.join("identity.key"),
    )
    .unwrap();
}

/// `vwnet create` on `node`; `Ok(json)` or `Err(stderr)`.
fn create(node: &Node, args: &[&str]) -> Result<Value, String> {
    let mut all = vec!["--json", "create"];
    all.extend_from_slice(args);
    let out = node.run(&all);
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        // With --json the error line is a JSON document on stdout.
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn listed(node: &Node, ws: &str) -> Option<Value> {
    node.json(&["ls", "--remote"])
        .as_array()
        .and_then(|l| l.iter().find(|w| w["workspace"] == ws).cloned())
}

/// `text` with its workspace id replaced by one made of `byte` (two hex digits) repeated.
fn with_fresh_id(text: &str, byte: &str) -> String {
    let line = text.lines().find(|l| l.starts_with("id = ")).unwrap();
    text.replacen(line, &format!("id = \"{}\"", byte.repeat(16)), 1)
}

fn set_toml(desc: &Path, from: &str, to: &str) {
    let text = fs::read_to_string(desc).unwrap();
    assert!(text.contains(from), "{from:?} not in {}", desc.display());
    fs::write(desc, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn create_is_decided_by_the_policy_and_a_refusal_names_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob, carol) = (
        user(dir.path(), "alice"),
        user(dir.path(), "bob"),
        user(dir.path(), "carol"),
    );
    let policy = dir.path().join("policy.toml");
    fs::write(
        &policy,
        format!(
            r#"
[[rule]]
name = "anyone publishes"
effect = "allow"
actions = ["publish"]
everyone = true

[[rule]]
name = "members create"
effect = "allow"
actions = ["create"]
identities = ["{a}", "{b}"]

[[rule]]
name = "no bob"
effect = "deny"
actions = ["create"]
identities = ["{b}"]

[[rule]]
name = "bob publishes nothing"
effect = "deny"
actions = ["publish"]
identities = ["{b}"]
"#,
            a = alice.identity,
            b = bob.identity
        ),
    )
    .unwrap();
    let node = Node::start(
        dir.path(),
        "n",
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--max-ram-mib",
            "4096",
        ],
    );
    let image = dir.path().join("img.raw");
    random_file(&image, MIB, 1);
    let img = image.to_str().unwrap();

    act_as(&node, &alice);
    let made = create(
        &node,
        &["--desc", alice.desc.to_str().unwrap(), "--image", img],
    )
    .unwrap();
    let ws = made["workspace"].as_str().unwrap();
    assert!(listed(&node, ws).is_some());

    act_as(&node, &bob);
    let err = create(
        &node,
        &["--desc", bob.desc.to_str().unwrap(), "--image", img],
    )
    .unwrap_err();
    assert!(err.contains(r#"rule[2] \"no bob\" denies create"#), "{err}");

    // Request::Publish goes through the same policy (action publish).
    let out = node.run(&[
        "publish",
        "--desc",
        bob.desc.to_str().unwrap(),
        "--image",
        img,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(r#"rule[3] "bob publishes nothing" denies publish"#),
        "{err}"
    );

    act_as(&node, &carol);
    let err = create(
        &node,
        &["--desc", carol.desc.to_str().unwrap(), "--image", img],
    )
    .unwrap_err();
    assert!(err.contains("no rule allows create"), "{err}");

    // Allowed by the rules, refused by a resource limit, which is named with its value.
    act_as(&node, &alice);
    let big = dir.path().join("big.toml");
    fs::write(
        &big,
        with_fresh_id(&fs::read_to_string(&alice.desc).unwrap(), "ab")
            .replacen("min = 512", "min = 8192", 1)
            .replacen("max = 2048", "max = 8192", 1),
    )
    .unwrap();
    let err = create(&node, &["--desc", big.to_str().unwrap(), "--image", img]).unwrap_err();
    assert!(
        err.contains("limit max_ram_mib=4096 < requested 8192"),
        "{err}"
    );
    // Nothing refused was published.
    assert_eq!(node.json(&["ls", "--remote"]).as_array().unwrap().len(), 1);

    // Creating the same workspace twice is refused too.
    let err = create(
        &node,
        &["--desc", alice.desc.to_str().unwrap(), "--image", img],
    )
    .unwrap_err();
    assert!(err.contains("already exists"), "{err}");
}

/// `vwnet store stats` as JSON (the node must be stopped: it holds the store).
fn store_stats(home: &Path) -> Value {
    json(home, &["store", "stats"])
}

#[test]
fn create_from_clones_with_shared_chunks_and_copies_no_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), "n", &[]);
    let owner = make_description(&node.home, "source");
    let image = dir.path().join("img.raw");
    random_file(&image, 4 * MIB, 2);
    let src = create(
        &node,
        &[
            "--desc",
            owner.to_str().unwrap(),
            "--image",
            image.to_str().unwrap(),
        ],
    )
    .unwrap();
    let src_ws = src["workspace"].as_str().unwrap().to_owned();

    node.stop();
    let before = store_stats(&node.home);
    node.restart();

    let clone_desc = dir.path().join("clone.toml");
    fs::copy(&owner, &clone_desc).unwrap();
    set_toml(&clone_desc, "name = \"source\"", "name = \"the-clone\"");
    let made = create(
        &node,
        &["--desc", clone_desc.to_str().unwrap(), "--from", &src_ws],
    )
    .unwrap();
    let clone_ws = made["workspace"].as_str().unwrap().to_owned();
    assert_ne!(clone_ws, src_ws);
    assert_eq!(made["cloned_from"], src_ws.as_str());
    assert_eq!(made["disk"], src["disk"], "the clone names the same image");

    let detail = node.json(&["inspect", &clone_ws]);
    let toml = detail["description_toml"].as_str().unwrap();
    assert!(
        toml.contains("[cloned_from]") && toml.contains(&src_ws),
        "{toml}"
    );
    assert!(toml.contains("name = \"the-clone\""), "{toml}");
    assert_eq!(
        detail["summary"]["local_bytes"],
        4 * MIB,
        "held in full, shared"
    );

    node.stop();
    let after = store_stats(&node.home);
    assert_eq!(after["chunks"], before["chunks"], "no chunk was added");
    assert_eq!(
        after["pack_bytes"], before["pack_bytes"],
        "no byte was written"
    );
    assert_eq!(after["images"], before["images"]);
}

#[test]
fn a_description_the_policy_rejects_is_not_propagated() {
    let dir = tempfile::tempdir().unwrap();
    let (xavier, yvonne) = (user(dir.path(), "xavier"), user(dir.path(), "yvonne"));
    let policy = dir.path().join("policy.toml");
    fs::write(
        &policy,
        format!(
            r#"
[[rule]]
name = "no xavier"
effect = "deny"
actions = ["publish"]
identities = ["{x}"]

[[rule]]
name = "anyone else publishes"
effect = "allow"
actions = ["publish"]
everyone = true
"#,
            x = xavier.identity
        ),
    )
    .unwrap();
    let metrics = free_port();
    let b = Node::start(
        dir.path(),
        "b",
        &["--policy", policy.to_str().unwrap(), "--metrics", &metrics],
    );
    let mut a = Node::start(dir.path(), "a", &["--bootstrap", &b.addr()]);
    wait_for(Duration::from_secs(20), "A and B to connect", || {
        (b.peer_count() > 0).then_some(())
    });
    let image = dir.path().join("img.raw");
    random_file(&image, MIB, 3);
    let img = image.to_str().unwrap();
    act_as(&a, &xavier);
    let denied = create(
        &a,
        &["--desc", xavier.desc.to_str().unwrap(), "--image", img],
    )
    .unwrap();
    let denied = denied["workspace"].as_str().unwrap().to_owned();
    act_as(&a, &yvonne);
    let allowed = create(
        &a,
        &["--desc", yvonne.desc.to_str().unwrap(), "--image", img],
    )
    .unwrap();
    let allowed = allowed["workspace"].as_str().unwrap().to_owned();

    // B takes Yvonne's (the positive control) and refuses Xavier's, counting and logging it.
    wait_for(
        Duration::from_secs(30),
        "B to accept the allowed one",
        || listed(&b, &allowed).map(|_| ()),
    );
    wait_for(
        Duration::from_secs(30),
        "B to refuse the denied one",
        || {
            http_get(&metrics)
                .lines()
                .any(|l| l.starts_with("vwnet_descriptions_denied_total ") && !l.ends_with(" 0"))
                .then_some(())
        },
    );
    assert!(listed(&b, &denied).is_none(), "B must not store it");
    // Both were created after A and B connected, so gossip carried them: the validator
    // rejected it there (MessageAcceptance::Reject: not forwarded, A's score drops).
    let text = http_get(&metrics);
    assert!(
        text.lines()
            .any(|l| l.starts_with("vwnet_gossip_rejected_total ") && !l.ends_with(" 0")),
        "{text}"
    );
    assert!(
        b.log_text()
            .contains(r#"rule[0] \"no xavier\" denies publish"#)
            || b.log_text()
                .contains(r#"rule[0] "no xavier" denies publish"#),
        "B's log names the rule"
    );

    // C can only hear from B: A is gone before C joins.
    a.kill9();
    let c = Node::start(dir.path(), "c", &["--bootstrap", &b.addr()]);
    wait_for(
        Duration::from_secs(30),
        "C to learn the allowed one from B",
        || listed(&c, &allowed).map(|_| ()),
    );
    assert!(
        listed(&c, &denied).is_none(),
        "B relayed a description its policy rejects"
    );
}

#[test]
fn expired_workspace_is_listed_expired_collected_unless_pinned_and_extend_revives_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start(dir.path(), "n", &[]);
    let short = make_description(&node.home, "short");
    let long = dir.path().join("long.toml");
    let text = fs::read_to_string(&short).unwrap();
    fs::write(
        &long,
        with_fresh_id(&text, "cd").replacen("name = \"short\"", "name = \"long\"", 1),
    )
    .unwrap();
    // `desc new` stamped the creation time a moment ago: the short one expires soon after.
    let life = text
        .lines()
        .find(|l| l.starts_with("life_cycle"))
        .unwrap()
        .to_owned();
    fs::write(&short, text.replacen(&life, "life_cycle = \"15s\"", 1)).unwrap();

    let (img1, img2) = (dir.path().join("a.raw"), dir.path().join("b.raw"));
    random_file(&img1, 2 * MIB, 4);
    random_file(&img2, 2 * MIB, 5);
    let ws = create(
        &node,
        &[
            "--desc",
            short.to_str().unwrap(),
            "--image",
            img1.to_str().unwrap(),
        ],
    )
    .unwrap()["workspace"]
        .as_str()
        .unwrap()
        .to_owned();
    let keep = create(
        &node,
        &[
            "--desc",
            long.to_str().unwrap(),
            "--image",
            img2.to_str().unwrap(),
        ],
    )
    .unwrap()["workspace"]
        .as_str()
        .unwrap()
        .to_owned();
    let entry = listed(&node, &ws).unwrap();
    assert_eq!(entry["expired"], false, "{entry}");
    assert!(entry["expires_at"].is_string(), "{entry}");

    node.json(&["pin", &ws]);
    wait_for(Duration::from_secs(60), "the workspace to expire", || {
        listed(&node, &ws)
            .filter(|e| e["expired"] == true)
            .map(|_| ())
    });
    let text = String::from_utf8_lossy(&node.run(&["ls"]).stdout).into_owned();
    assert!(text.contains("EXPIRED at"), "{text}");
    let detail = node.json(&["inspect", &ws]);
    assert_eq!(detail["summary"]["expired"], true);
    assert_eq!(detail["summary"]["pinned"], true);

    // Pinned: gc keeps it.
    let gc = node.json(&["store", "gc"]);
    assert_eq!(gc["deleted_chunks"], 0, "{gc}");
    assert_eq!(listed(&node, &ws).unwrap()["local_bytes"], 2 * MIB);

    // Unpinned: its chunks go, the live workspace keeps all of its own.
    node.json(&["unpin", &ws]);
    let gc = node.json(&["store", "gc"]);
    assert_eq!(gc["expired_workspaces"], serde_json::json!([ws]), "{gc}");
    assert!(gc["deleted_chunks"].as_u64().unwrap() > 0, "{gc}");
    assert_eq!(listed(&node, &ws).unwrap()["local_bytes"], 0);
    assert_eq!(listed(&node, &keep).unwrap()["local_bytes"], 2 * MIB);

    // Only the owner's key can extend; the renewal is version 2 and live again.
    let out = node.run(&["extend", &ws, "--by", "1h"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entry = listed(&node, &ws).unwrap();
    assert_eq!(entry["version"], 2, "{entry}");
    assert_eq!(entry["expired"], false, "{entry}");
    // Live again: the next gc pins its image again instead of collecting it.
    let gc = node.json(&["store", "gc"]);
    assert_eq!(gc["expired_workspaces"], serde_json::json!([]), "{gc}");
    assert!(
        !gc["repinned_images"].as_array().unwrap().is_empty(),
        "{gc}"
    );

    // With no node running, `store gc` applies the same live set from the node's catalog.
    node.stop();
    let gc = json(&node.home, &["store", "gc"]);
    assert_eq!(gc["expired_workspaces"], serde_json::json!([]), "{gc}");
    assert_eq!(gc["deleted_chunks"], 0, "{gc}");
}

#[test]
fn a_manager_extends_with_the_owners_delegation_only_if_the_policy_allows_manage() {
    let dir = tempfile::tempdir().unwrap();
    let (owner, manager, stranger) = (
        user(dir.path(), "owner"),
        user(dir.path(), "manager"),
        user(dir.path(), "stranger"),
    );
    let policy = dir.path().join("policy.toml");
    fs::write(
        &policy,
        format!(
            r#"
[[rule]]
name = "anyone publishes"
effect = "allow"
actions = ["publish"]
everyone = true

[[rule]]
name = "owner creates"
effect = "allow"
actions = ["create"]
identities = ["{o}"]

[[rule]]
name = "operators manage"
effect = "allow"
actions = ["manage"]
identities = ["{m}"]
"#,
            o = owner.identity,
            m = manager.identity
        ),
    )
    .unwrap();
    let node = Node::start(dir.path(), "n", &["--policy", policy.to_str().unwrap()]);
    let image = dir.path().join("img.raw");
    random_file(&image, MIB, 6);
    act_as(&node, &owner);
    let ws = create(
        &node,
        &[
            "--desc",
            owner.desc.to_str().unwrap(),
            "--image",
            image.to_str().unwrap(),
        ],
    )
    .unwrap()["workspace"]
        .as_str()
        .unwrap()
        .to_owned();
    let deleg = |to: &User, name: &str| {
        let out = dir.path().join(name);
        json(
            &owner.home,
            &[
                "delegate",
                "--to",
                &to.identity,
                "--workspace",
                &ws,
                "-o",
                out.to_str().unwrap(),
            ],
        );
        out
    };
    let for_manager = deleg(&manager, "manager.deleg");
    let for_stranger = deleg(&stranger, "stranger.deleg");
    let extend = |args: &[&str]| {
        let mut all = vec!["extend", ws.as_str(), "--by", "1h"];
        all.extend_from_slice(args);
        let out = node.run(&all);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // Without a delegation a non-owner cannot sign for the owner.
    act_as(&node, &manager);
    let (ok, err) = extend(&[]);
    assert!(!ok && err.contains("only its owner"), "{err}");
    // A delegated key the policy does not let manage is refused, naming why.
    act_as(&node, &stranger);
    let (ok, err) = extend(&["--delegation", for_stranger.to_str().unwrap()]);
    assert!(!ok && err.contains("no rule allows manage"), "{err}");
    assert_eq!(listed(&node, &ws).unwrap()["version"], 1);
    // The manager with the owner's delegation renews it.
    act_as(&node, &manager);
    let (ok, err) = extend(&["--delegation", for_manager.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert_eq!(listed(&node, &ws).unwrap()["version"], 2);
    let detail = node.json(&["inspect", &ws]);
    assert!(
        detail["signature"]
            .as_str()
            .unwrap()
            .contains("delegate of the owner"),
        "{detail}"
    );
}
