//! The coordinators' CLI against a running `urpnet-registry serve`, as real
//! processes over mutual TLS, the way the operations guide tells a
//! coordinator to use it.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Registry {
    dir: tempfile::TempDir,
    listen: String,
    child: Option<Child>,
}

impl Registry {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_urpnet-registry"))
            .current_dir(self.dir.path())
            .env_remove("URPNET_REGISTRY_CONFIG")
            .env_remove("URPNET_STORE_URL")
            .env_remove("URPNET_REGISTRY")
            .env_remove("URPNET_IDENTITY")
            .env("URPNET_GRPC_LISTEN", &self.listen)
            .env("URPNET_METRICS_LISTEN", "")
            .args(args)
            .output()
            .expect("run urpnet-registry")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "urpnet-registry {args:?} failed:\n{}{}",
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.push("--json");
        serde_json::from_str(&self.ok(&all)).expect("json output")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn free_port() -> String {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().to_string()
}

#[test]
fn a_coordinator_runs_the_network_from_the_command_line() {
    let mut registry = Registry {
        dir: tempfile::tempdir().unwrap(),
        listen: free_port(),
        child: None,
    };
    let help = registry.ok(&["--help"]);
    for cmd in [
        "init", "serve", "ca", "enrol", "members", "suspend", "revoke", "taxonomy", "route",
        "overflow",
    ] {
        assert!(help.contains(cmd), "{cmd} missing from --help:\n{help}");
    }

    let init = registry.ok(&["init", "--name", "abruzzo"]);
    assert!(init.contains("created the federation CA"), "{init}");
    let config = std::fs::read_to_string(registry.dir.path().join("urpnet-registry.toml")).unwrap();
    assert!(
        config.contains("# How often nodes report"),
        "the file is commented"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let key = registry.dir.path().join("registry-data/ca/ca.key");
        assert_eq!(
            std::fs::metadata(key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    let log = std::fs::File::create(registry.dir.path().join("serve.log")).unwrap();
    registry.child = Some(
        Command::new(env!("CARGO_BIN_EXE_urpnet-registry"))
            .current_dir(registry.dir.path())
            .env("URPNET_GRPC_LISTEN", &registry.listen)
            .env("URPNET_METRICS_LISTEN", "")
            .env_remove("URPNET_STORE_URL")
            .args(["serve"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    // Ready when the CLI's own mTLS call succeeds.
    let start = Instant::now();
    loop {
        if registry.run(&["members", "list"]).status.success() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "registry did not start:\n{}",
            std::fs::read_to_string(registry.dir.path().join("serve.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let taxonomy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/taxonomy.toml");
    let imported = registry.ok(&["taxonomy", "import", taxonomy.to_str().unwrap()]);
    assert!(
        imported.contains("imported taxonomy version 1"),
        "{imported}"
    );
    let exported = registry.ok(&["taxonomy", "export"]);
    assert!(
        exported.contains("code = \"rifiuti.ingombranti\""),
        "{exported}"
    );

    let signer_hex = {
        // A real ed25519 public key: the node writes node.pub this way.
        use std::fmt::Write as _;
        let key = urpnet_proto::signing::NodeSigner::generate(
            urpnet_proto::ids::NodeId::new("c_c426").unwrap(),
        );
        key.verifying_key()
            .as_bytes()
            .iter()
            .fold(String::new(), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            })
    };
    let out = registry.dir.path().join("celano");
    let enrolled = registry.ok(&[
        "enrol",
        "--id",
        "c_c426",
        "--name",
        "Comune di Celano",
        "--level",
        "comune",
        "--territory",
        "066032",
        "--endpoint",
        "https://celano.example.it:7401",
        "--signing-key",
        &signer_hex,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(enrolled.contains("enrolled c_c426"), "{enrolled}");
    let material = urpnet_proto::tls::TlsFiles::in_dir(&out).load().unwrap();
    assert_eq!(
        material.info().unwrap().identity.uri(),
        "urn:urpnet:node:c_c426",
        "the certificate carries the member's identity"
    );

    // A bad enrolment names the field; nothing is stored.
    let bad = registry.run(&[
        "enrol",
        "--id",
        "c_a515",
        "--name",
        "Comune di Avezzano",
        "--level",
        "comune",
        "--territory",
        "66006",
        "--endpoint",
        "https://avezzano.example.it:7401",
        "--signing-key",
        &signer_hex,
        "--out",
        "/tmp/unused",
    ]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("territory[0]"), "{}", stderr(&bad));

    let members = registry.json(&["members", "list"]);
    let list = members["members"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{members}");
    assert_eq!(list[0]["id"], "c_c426");
    assert_eq!(list[0]["status"], "MEMBER_STATUS_ACTIVE");
    let table = registry.ok(&["members", "list"]);
    assert!(
        table.contains("Comune di Celano") && table.contains("unknown"),
        "{table}"
    );

    let route = registry.ok(&["route", "rifiuti", "Celano"]);
    assert!(route.contains("route to c_c426"), "{route}");
    let route = registry.json(&["route", "sanita", "066032"]);
    assert_eq!(
        route["member"]["id"], "c_c426",
        "the only member is the fallback"
    );
    assert_eq!(route["fallback"], true);

    registry.ok(&["suspend", "c_c426", "--reason", "audit"]);
    let shown = registry.json(&["members", "show", "c_c426"]);
    assert_eq!(shown["member"]["status"], "MEMBER_STATUS_SUSPENDED");
    assert_eq!(shown["member"]["statusReason"], "audit");
    assert_eq!(shown["certificates"].as_array().unwrap().len(), 1);
    registry.ok(&["reinstate", "c_c426"]);
    registry.ok(&["revoke", "c_c426", "--reason", "left"]);
    let again = registry.run(&["reinstate", "c_c426"]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("final"), "{}", stderr(&again));

    // A second coordinator, and the registry's own certificate renewed.
    let second = registry.dir.path().join("second");
    registry.ok(&[
        "ca",
        "coordinator",
        "anna",
        "--out",
        second.to_str().unwrap(),
    ]);
    let listed = registry.ok(&["--identity", second.to_str().unwrap(), "members", "list"]);
    assert!(listed.contains("c_c426"), "{listed}");
    // A lost laptop: anna's certificate is refused at once, and nobody can
    // revoke themselves.
    registry.ok(&[
        "ca",
        "revoke-coordinator",
        "anna",
        "--reason",
        "laptop stolen",
    ]);
    let refused = registry.run(&["--identity", second.to_str().unwrap(), "members", "list"]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("revoked"), "{}", stderr(&refused));
    let own = registry.run(&["ca", "revoke-coordinator", "admin"]);
    assert!(!own.status.success());
    assert!(stderr(&own).contains("its own"), "{}", stderr(&own));
    let renewed = registry.ok(&["ca", "renew-server"]);
    assert!(renewed.contains("new registry certificate"), "{renewed}");
}
