//! Backup and restore (issue 19): `urpnet-node backup` copies a serving
//! node's data; after more traffic the node loses its data directory, gets
//! the backup back, and its peer's anti-entropy returns everything that
//! happened since, its own events included; the database checks out.

use std::path::Path;
use std::time::Duration;

use urpnet_tests::federation::{ABRUZZO, CELANO, TestFederation};
use urpnet_tests::shared::{converged, create, get, handed_over, note, request, try_history};
use urpnet_tests::{Backend, wait_for};

urpnet_tests::on_both_backends!(a_restored_node_gets_back_what_happened_since_from_its_peers,);

async fn cli(config: &urpnet_node::NodeConfig, args: &[&str]) -> std::process::Output {
    let dir = config.node.data_dir.parent().expect("parent");
    let path = dir.join("backup-test.toml");
    std::fs::write(&path, toml::to_string(config).expect("config serialises")).unwrap();
    tokio::process::Command::new(urpnet_tests::binary("urpnet-node"))
        .arg("--config")
        .arg(&path)
        .args(args)
        .output()
        .await
        .expect("urpnet-node runs")
}

async fn a_restored_node_gets_back_what_happened_since_from_its_peers(
    backend: Backend,
    test: &str,
) {
    let Some(mut fed) = TestFederation::start(backend, test, &[CELANO, ABRUZZO], |c| {
        c.peering.anti_entropy_interval = Duration::from_millis(300);
    })
    .await
    else {
        eprintln!("{test}: skipped (no PostgreSQL URL)");
        return;
    };
    let mut celano = fed.node(CELANO.id).desk().await;
    let mut region = fed.node(ABRUZZO.id).desk().await;
    let before = handed_over(&mut celano, &mut region, ABRUZZO.id, "sanita.prenotazioni").await;
    let local = create(&mut celano, request("rifiuti.ingombranti", false)).await;

    // The backup, taken by the CLI while the node serves.
    let config = fed.node(CELANO.id).config.clone();
    let file = config.node.data_dir.parent().unwrap().join("celano.backup");
    let out = cli(
        &config,
        &["--json", "backup", "--out", file.to_str().unwrap()],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let manifest: urpnet_node::backup::Manifest =
        serde_json::from_slice(&out.stdout).expect("manifest as JSON");
    assert_eq!(manifest.node_id, CELANO.id);
    assert_eq!(
        file.metadata().unwrap().permissions().mode() & 0o777,
        0o600,
        "it holds the key"
    );
    if backend == Backend::Postgres {
        // The database is not in the file (pg_dump's job); the key is.
        assert_eq!(manifest.database, "postgres");
        let names = entries(&file);
        assert!(names.iter().any(|n| n == "node.key"), "{names:?}");
        assert!(!names.iter().any(|n| n.ends_with(".db")), "{names:?}");
        return;
    }
    assert_eq!(manifest.database, "sqlite");

    // After the backup: a new ticket handed over, notes by both bodies.
    let after = handed_over(&mut celano, &mut region, ABRUZZO.id, "sanita.prenotazioni").await;
    note(&mut celano, &before.id, "nota di Celano dopo il backup").await;
    note(&mut region, &before.id, "nota della Regione dopo il backup").await;
    // Both bodies hold the same events (both notes) before the loss.
    let expected = converged(&celano, &region, &before.id, Duration::from_secs(20)).await;
    assert!(expected.len() >= 5, "{expected:?}");

    // The Region is down while Celano comes back, so Celano cannot catch up.
    let at = fed
        .nodes
        .iter()
        .position(|n| n.config.node.id.as_str() == ABRUZZO.id)
        .expect("region");
    let region_node = fed.nodes.remove(at);
    let region_config = region_node.config.clone();
    let region_dir = region_node.stop_keep_dir().await;

    // The disk is lost; the backup comes back.
    let mut restored = None;
    fed.restart(CELANO.id, |config| {
        std::fs::remove_dir_all(&config.node.data_dir).unwrap();
        restored = Some(urpnet_node::backup::restore(config, &file, false).expect("restore"));
        // A second restore over the restored database needs --force.
        let again = urpnet_node::backup::restore(config, &file, false).unwrap_err();
        assert!(again.to_string().contains("--force"), "{again}");
    })
    .await;
    assert_eq!(restored.expect("restored"), manifest);
    let mut celano = fed.node(CELANO.id).desk().await;
    assert!(
        get(&celano, &local.id).await.is_some(),
        "the local ticket came back from the backup"
    );
    // Until its peers have been heard, it signs nothing: a note now could
    // reuse the place of the note it made after the backup.
    let held = celano
        .add_note(urpnet_proto::v1::AddNoteRequest {
            ticket_id: before.id.clone(),
            public: false,
            text: "troppo presto".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(held.code(), tonic::Code::Unavailable, "{held:?}");
    assert!(
        held.message().contains("restored from a backup"),
        "{held:?}"
    );
    let held = celano
        .create_ticket(request("rifiuti.ingombranti", false))
        .await
        .unwrap_err();
    assert_eq!(held.code(), tonic::Code::Unavailable, "{held:?}");

    // Operators see why on every console page.
    let http = urpnet_tests::console::client();
    let (status, _) =
        urpnet_tests::console::sign_in(&http, fed.node(CELANO.id), &fed.node(CELANO.id).token)
            .await;
    assert_eq!(status, 303);
    let (_, queue) = urpnet_tests::console::page(&http, fed.node(CELANO.id), "/queue").await;
    assert!(queue.contains("ripristinato da un backup"), "{queue}");

    // The Region returns: Celano catches up and writes again by itself.
    fed.nodes.insert(
        at,
        urpnet_tests::TestNode::start_with(region_config, region_dir).await,
    );
    let region = fed.node(ABRUZZO.id).desk().await;

    // Anti-entropy returns the ticket handed over after the backup, and
    // every event of the older one, Celano's own note included.
    wait_for(
        "the post-backup ticket at Celano",
        Duration::from_secs(30),
        || {
            let celano = celano.clone();
            let id = after.id.clone();
            async move {
                get(&celano, &id)
                    .await
                    .filter(|t| t.owner_node == ABRUZZO.id)
            }
        },
    )
    .await;
    wait_for(
        "the same history at Celano as at the region",
        Duration::from_secs(30),
        || {
            let celano = celano.clone();
            let id = before.id.clone();
            let expected = expected.clone();
            async move { (try_history(&celano, &id).await? == expected).then_some(()) }
        },
    )
    .await;
    // Caught up, it writes again: its next note follows its own chain, and
    // both bodies agree on every event (none is an equivocation).
    wait_for("writes at Celano again", Duration::from_secs(30), || {
        let mut celano = celano.clone();
        let id = before.id.clone();
        async move {
            celano
                .add_note(urpnet_proto::v1::AddNoteRequest {
                    ticket_id: id,
                    public: false,
                    text: "dopo il ripristino".into(),
                })
                .await
                .ok()
        }
    })
    .await;
    let after_restore = converged(&celano, &region, &before.id, Duration::from_secs(20)).await;
    assert_eq!(after_restore.len(), expected.len() + 1);
    assert!(
        after_restore.iter().all(|(_, effective)| *effective),
        "{after_restore:?}"
    );
    assert!(
        !config_dir(&fed).join("restored.json").exists(),
        "the restore marker is removed once caught up"
    );
    let (_, queue) = urpnet_tests::console::page(&http, fed.node(CELANO.id), "/queue").await;
    assert!(
        !queue.contains("ripristinato da un backup"),
        "the notice is gone"
    );
    drop(celano);

    fed.restart(CELANO.id, |config| {
        let check = std::process::Command::new(urpnet_tests::binary("urpnet-node"))
            .arg("--config")
            .arg(
                config
                    .node
                    .data_dir
                    .parent()
                    .unwrap()
                    .join("backup-test.toml"),
            )
            .arg("check")
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "check after restore: {} {}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    })
    .await;
    // A backup of another node is refused.
    let mut other = fed.node(ABRUZZO.id).config.clone();
    other.node.data_dir = other.node.data_dir.join("elsewhere");
    let err = urpnet_node::backup::restore(&other, &file, true).unwrap_err();
    assert!(err.to_string().contains("not of this node"), "{err}");
    // A file that is not a backup is refused.
    let bogus = file.with_extension("bogus");
    std::fs::write(&bogus, b"not a backup").unwrap();
    assert!(urpnet_node::backup::manifest(&bogus).is_err());
}

fn config_dir(fed: &TestFederation) -> std::path::PathBuf {
    fed.node(CELANO.id).config.node.data_dir.clone()
}

fn entries(file: &Path) -> Vec<String> {
    let gz = flate2::read::GzDecoder::new(std::fs::File::open(file).unwrap());
    tar::Archive::new(gz)
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect()
}

use std::os::unix::fs::PermissionsExt as _;
