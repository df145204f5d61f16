//! The `urpnet-node` binary's local commands, run as a real process.

use std::path::Path;
use std::process::{Command, Output};

fn node(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_urpnet-node"))
        .current_dir(dir)
        .env_remove("URPNET_CONFIG")
        .env_remove("URPNET_STORE_URL")
        .args(args)
        .output()
        .expect("run urpnet-node")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn init_writes_a_commented_config_a_key_and_a_private_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = node(dir.path(), &["init", "--id", "c_c426"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("c_c426 (Comune di Celano)"),
        "{}",
        stdout(&out)
    );
    let config = std::fs::read_to_string(dir.path().join("urpnet.toml")).unwrap();
    assert!(
        config.contains("# The body's IPA code"),
        "the file is commented"
    );
    assert!(config.contains("id = \"c_c426\""));
    let token = dir.path().join("data/operator.token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&token).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(dir.path().join("data/node.key"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
    assert!(
        std::fs::read_to_string(&token)
            .unwrap()
            .starts_with("urpnet_")
    );

    let again = node(dir.path(), &["init", "--id", "c_c426"]);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("already exists (use --force"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn operators_are_added_listed_and_revoked() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        node(dir.path(), &["init", "--id", "c_a662"])
            .status
            .success()
    );
    let add = node(
        dir.path(),
        &[
            "operator",
            "add",
            "maria.rossi",
            "--role",
            "operator",
            "--json",
        ],
    );
    assert!(add.status.success(), "{}", stderr(&add));
    let added: serde_json::Value = serde_json::from_str(&stdout(&add)).unwrap();
    assert!(added["token"].as_str().unwrap().starts_with("urpnet_"));
    let bad = node(dir.path(), &["operator", "add", "x", "--role", "boss"]);
    assert!(
        stderr(&bad).contains("unknown role `boss`"),
        "{}",
        stderr(&bad)
    );
    assert!(
        node(dir.path(), &["operator", "revoke", "maria.rossi"])
            .status
            .success()
    );
    let list = node(dir.path(), &["operator", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_str(&stdout(&list)).unwrap();
    let maria = list
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "maria.rossi")
        .unwrap();
    assert!(maria["revoked_ms"].is_i64());
    let table = stdout(&node(dir.path(), &["operator", "list"]));
    assert!(
        table.contains("admin") && table.contains("supervisor"),
        "{table}"
    );
}

#[test]
fn a_bad_config_gets_one_line_naming_the_file_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let missing = node(dir.path(), &["--config", "nowhere.toml", "serve"]);
    assert!(!missing.status.success());
    assert_eq!(
        stderr(&missing).trim(),
        "error: config file nowhere.toml: not found (create one with `urpnet-node init`)"
    );

    std::fs::write(
        dir.path().join("bad.toml"),
        "[node]\nid = \"c_a662\"\nname = \"Bari\"\ndata_dir = \"data\"\n[desk]\nlisten = \"everywhere\"\n",
    )
    .unwrap();
    let bad = node(dir.path(), &["--config", "bad.toml", "serve"]);
    let err = stderr(&bad);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("config file bad.toml: key `desk.listen`"),
        "{err}"
    );

    std::fs::write(dir.path().join("broken.toml"), "[node\nid = 1\n").unwrap();
    let broken = node(dir.path(), &["--config", "broken.toml", "serve"]);
    let err = stderr(&broken);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("config file broken.toml: invalid TOML at line 1"),
        "{err}"
    );
}

#[test]
fn help_explains_and_taxonomy_lists_categories() {
    let dir = tempfile::tempdir().unwrap();
    let help = stdout(&node(dir.path(), &["--help"]));
    assert!(help.contains("urpnet-node init --id"), "{help}");
    for cmd in ["init", "serve", "ticket", "operator", "taxonomy", "check"] {
        assert!(help.contains(cmd), "{cmd} missing from --help");
    }
    let taxonomy: serde_json::Value =
        serde_json::from_str(&stdout(&node(dir.path(), &["taxonomy", "--json"]))).unwrap();
    // Canonical proto3 JSON of urpnet.v1.Taxonomy.
    assert!(
        taxonomy["categories"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["code"] == "rifiuti.ingombranti" && c["level"] == "LEVEL_COMUNE"),
        "{taxonomy}"
    );
}
