//! End-to-end tests of `vwnet key`, `vwnet desc` and `vwnet acl` through the real binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch directory with its own vwnet home.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `vwnet` with `home` as its home directory, in the sandbox.
    fn run_in(&self, home: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_vwnet"))
            .args(args)
            .current_dir(self.dir.path())
            .env("VWNET_HOME", self.path(home))
            .output()
            .expect("run vwnet")
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_in("home", args)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "vwnet {args:?} failed: {}",
            stderr(&out)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).expect("valid JSON on stdout")
    }

    /// A home with a key and a signed description `d.signed` made from `d.toml`.
    fn with_signed_description() -> Self {
        let sb = Self::new();
        sb.ok(&["key", "new"]);
        sb.ok(&["desc", "new", "-o", "d.toml"]);
        sb.ok(&["desc", "sign", "d.toml", "-o", "d.signed"]);
        sb
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts the command failed with exactly one line on stderr that contains `needle`.
fn assert_one_line_error(out: &Output, needle: &str) {
    assert!(!out.status.success(), "expected failure, got success");
    let err = stderr(out);
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "error is not one line: {err:?}"
    );
    assert!(
        err.contains(needle),
        "error {err:?} does not mention {needle:?}"
    );
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in {}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn key_new_refuses_to_overwrite_and_show_prints_the_same_identity() {
    let sb = Sandbox::new();
    let created = sb.json(&["key", "new"]);
    let shown = sb.json(&["key", "show"]);
    assert_eq!(created["identity"], shown["identity"]);
    assert_eq!(shown["identity"].as_str().unwrap().len(), 64);
    assert_one_line_error(&sb.run(&["key", "new"]), "already exists");
    assert_eq!(sb.json(&["key", "show"])["identity"], created["identity"]);
    let mode = std::fs::metadata(sb.path("home/identity.key")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
}

#[test]
fn sign_then_verify_round_trips_and_json_names_the_signer() {
    let sb = Sandbox::with_signed_description();
    let key = sb.json(&["key", "show"]);
    let verified = sb.json(&["desc", "verify", "d.signed"]);
    assert_eq!(verified["signer"], key["identity"]);
    assert_eq!(verified["owner"], key["identity"]);
    assert_eq!(verified["version"], 1);
    let shown = sb.ok(&["desc", "show", "d.signed"]);
    assert!(shown.starts_with("# signature ok"), "{shown}");
    let json = sb.json(&["desc", "show", "d.signed"]);
    assert_eq!(json["description"]["id"], verified["id"]);
}

#[test]
fn every_tampered_byte_fails_verification() {
    let sb = Sandbox::with_signed_description();
    let original = std::fs::read(sb.path("d.signed")).unwrap();
    // Every position, through the real binary, would take minutes; a spread of positions across
    // the version byte, kind, payload, signer and signature is enough here (the protocol crate
    // tests every byte in-process).
    let step = (original.len() / 40).max(1);
    for pos in (0..original.len())
        .step_by(step)
        .chain([original.len() - 1])
    {
        let mut bytes = original.clone();
        bytes[pos] ^= 0x01;
        std::fs::write(sb.path("t.signed"), &bytes).unwrap();
        let out = sb.run(&["desc", "verify", "t.signed"]);
        assert!(!out.status.success(), "flipping byte {pos} still verified");
        assert_eq!(
            stderr(&out).trim_end().lines().count(),
            1,
            "byte {pos}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn truncated_signed_file_is_a_one_line_error() {
    let sb = Sandbox::with_signed_description();
    let bytes = std::fs::read(sb.path("d.signed")).unwrap();
    std::fs::write(sb.path("t.signed"), &bytes[..bytes.len() / 2]).unwrap();
    assert_one_line_error(&sb.run(&["desc", "verify", "t.signed"]), "t.signed");
}

#[test]
fn signing_with_a_key_that_is_not_the_owner_fails_and_writes_nothing() {
    let sb = Sandbox::with_signed_description();
    assert!(sb.run_in("other", &["key", "new"]).status.success());
    let out = sb.run_in("other", &["desc", "sign", "d.toml", "-o", "x.signed"]);
    assert_one_line_error(&out, "owner");
    assert!(!sb.path("x.signed").exists());
}

#[test]
fn a_description_signed_by_someone_else_does_not_verify() {
    use vwnet_protocol::description::Description;
    use vwnet_protocol::identity::Identity;
    use vwnet_protocol::signed::SignedDescription;

    let sb = Sandbox::with_signed_description();
    // The CLI refuses to sign for another owner, so forge the envelope with the library: a valid
    // signature by a key that is not the description's owner.
    let text = std::fs::read_to_string(sb.path("d.toml")).unwrap();
    let desc = Description::from_toml_str(&text).unwrap();
    let forger = Identity::from_secret_bytes(&[7; 32]);
    let forged = SignedDescription::sign(&forger, &desc).unwrap();
    std::fs::write(sb.path("forged.signed"), forged.to_bytes()).unwrap();
    assert_one_line_error(
        &sb.run(&["desc", "verify", "forged.signed"]),
        "forged.signed",
    );
    assert!(!sb.run(&["desc", "show", "forged.signed"]).status.success());
}

#[test]
fn malformed_toml_names_the_file_and_line() {
    let sb = Sandbox::new();
    sb.ok(&["key", "new"]);
    sb.ok(&["desc", "new", "-o", "d.toml"]);
    edit(&sb.path("d.toml"), "name = ", "name = = ");
    let out = sb.run(&["desc", "check", "d.toml"]);
    assert_one_line_error(&out, "d.toml");
    assert!(stderr(&out).contains("line"), "{}", stderr(&out));
    let json = sb.run(&["--json", "desc", "check", "d.toml"]);
    assert!(!json.status.success());
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["ok"], false);
}

#[test]
fn inverted_ram_range_is_reported_with_its_field() {
    let sb = Sandbox::new();
    sb.ok(&["key", "new"]);
    sb.ok(&["desc", "new", "-o", "d.toml"]);
    let text = std::fs::read_to_string(sb.path("d.toml")).unwrap();
    let start = text
        .find("[hardware.ram]")
        .expect("template has [hardware.ram]");
    let end = start + text[start..].find("\n[").unwrap_or(text.len() - start);
    let fixed = format!(
        "{}[hardware.ram]\nmin = 4096\nmax = 2048\n{}",
        &text[..start],
        &text[end..]
    );
    std::fs::write(sb.path("d.toml"), fixed).unwrap();
    let out = sb.run(&["desc", "sign", "d.toml", "-o", "d.signed"]);
    assert_one_line_error(
        &out,
        "d.toml: hardware.ram: min 4096 MiB is above max 2048 MiB",
    );
    assert!(!sb.path("d.signed").exists());
}

#[test]
fn clone_refine_and_match() {
    let sb = Sandbox::with_signed_description();
    let original = sb.json(&["desc", "check", "d.signed"]);
    let clone = sb.json(&[
        "desc", "clone", "d.signed", "--name", "copy", "-o", "c.toml",
    ]);
    assert_ne!(clone["id"], original["id"]);
    assert_eq!(clone["name"], "copy");
    let clone_toml = std::fs::read_to_string(sb.path("c.toml")).unwrap();
    assert!(
        clone_toml.contains("[cloned_from]"),
        "lineage missing:\n{clone_toml}"
    );

    sb.ok(&[
        "desc",
        "refine",
        "d.toml",
        "--set",
        "hardware.ram=512-1536",
        "-o",
        "r.toml",
    ]);
    let refined = sb.json(&["desc", "check", "r.toml"]);
    assert_eq!(refined["version"], 2);
    let out = sb.run(&[
        "desc",
        "refine",
        "r.toml",
        "--set",
        "hardware.ram.max=8192",
        "-o",
        "w.toml",
    ]);
    assert_one_line_error(&out, "hardware.ram");
    assert!(!sb.path("w.toml").exists());

    let host = |ram: u32| {
        format!(
            "ram_mib = {ram}\nvcpus = 4\ndisk_free_bytes = 100000000000\nhypervisors = [\"kvm\"]\n\
             devices = [\"cdrom\"]\n[networks]\ndhcp = true\npools = [\"grid-pool\"]\n"
        )
    };
    std::fs::write(sb.path("small.toml"), host(1024)).unwrap();
    let fit = sb.json(&["desc", "match", "r.toml", "--host", "small.toml"]);
    assert_eq!(fit["fits"], true, "{fit}");
    assert_eq!(fit["placement"]["ram_mib"], 1024);

    sb.ok(&[
        "desc",
        "refine",
        "r.toml",
        "--set",
        "hardware.ram.min=1536",
        "-o",
        "big.toml",
    ]);
    let out = sb.run(&["desc", "match", "big.toml", "--host", "small.toml"]);
    assert_one_line_error(&out, "hardware.ram");
    let out = sb.run(&[
        "--json",
        "desc",
        "match",
        "big.toml",
        "--host",
        "small.toml",
    ]);
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["fits"], false);
}

#[test]
fn acl_default_deny_identity_allow_and_attribute_certificates() {
    let sb = Sandbox::new();
    let user = sb.json(&["key", "new"])["identity"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(sb.run_in("vo", &["key", "new"]).status.success());
    let vo_out = sb.run_in("vo", &["--json", "key", "show"]);
    let vo: serde_json::Value = serde_json::from_slice(&vo_out.stdout).unwrap();
    let vo = vo["identity"].as_str().unwrap().to_string();
    std::fs::write(
        sb.path("policy.toml"),
        format!(
            "[[trusted_vo]]\nname = \"biology\"\nkey = \"{vo}\"\n\n\
             [[rule]]\nname = \"biologists deploy\"\neffect = \"allow\"\nactions = [\"deploy\"]\n\
             attributes = [\"vo=biology\"]\n"
        ),
    )
    .unwrap();
    let check = |extra: &[&str]| {
        let mut args = vec![
            "--json",
            "acl",
            "check",
            "policy.toml",
            "--who",
            &user,
            "--action",
            "deploy",
        ];
        args.extend_from_slice(extra);
        let out = sb.run(&args);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (out.status.success(), v)
    };
    let (allowed, v) = check(&[]);
    assert!(!allowed);
    assert_eq!(v["allowed"], false);
    assert!(v["rule"].is_null(), "default deny names no rule: {v}");

    let issue = sb.run_in(
        "vo",
        &[
            "acl",
            "issue",
            "--subject",
            &user,
            "--attr",
            "vo=biology",
            "-o",
            "bio.cert",
        ],
    );
    assert!(issue.status.success(), "{}", stderr(&issue));
    let (allowed, v) = check(&["--attr-cert", "bio.cert"]);
    assert!(allowed, "{v}");
    assert_eq!(v["rule"]["name"], "biologists deploy");

    // The user's own key is not a trusted VO: a self-issued certificate does not count.
    sb.ok(&[
        "acl",
        "issue",
        "--subject",
        &user,
        "--attr",
        "vo=biology",
        "-o",
        "self.cert",
    ]);
    let (allowed, _) = check(&["--attr-cert", "self.cert"]);
    assert!(!allowed);

    let out = sb.run(&[
        "acl",
        "check",
        "policy.toml",
        "--who",
        &user,
        "--action",
        "deploy",
    ]);
    assert_one_line_error(&out, "may not deploy");
}
