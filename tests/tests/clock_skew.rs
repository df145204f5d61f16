//! Clock skew (issue 19): Celano runs as a child process whose clock is a
//! few seconds ahead (libfaketime, Debian's `faketime`); the region, whose
//! clock is right, refuses Celano's events for now under the HLC rule
//! (500 ms), names Celano in a metric, and accepts every event once its own
//! clock is within the offset: nothing is lost, the two hold the same
//! events. Without libfaketime the test says it was skipped.

use std::time::Duration;

use urpnet_proto::v1::HandoffRequest;
use urpnet_tests::federation::{ABRUZZO, CELANO, TestRegistry, counter};
use urpnet_tests::shared::{
    accept, converged, create, note, request, wait_cached_members, wait_offer,
};
use urpnet_tests::{Backend, ProcessNode, TestNode, node_config, wait_for};

const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
/// Celano's lead: well over the 500 ms the HLC rule tolerates.
const AHEAD_S: u64 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_from_a_clock_ahead_wait_and_arrive_without_loss() {
    if !std::path::Path::new(FAKETIME).exists() {
        eprintln!("clock_skew: skipped (no libfaketime; apt-get install faketime)");
        return;
    }
    let Some((rdir, mut rconfig)) = TestRegistry::config(Backend::Sqlite, "skew_registry").await
    else {
        return;
    };
    rconfig.membership.heartbeat_interval = Duration::from_millis(200);
    let registry = TestRegistry::start_with(rconfig, Some(rdir)).await;
    registry.import_sample_taxonomy().await;
    let (cdir, mut celano_config) = node_config(CELANO.id, Backend::Sqlite, "skew_celano")
        .await
        .expect("config");
    celano_config.peering.max_backoff = Duration::from_millis(500);
    registry
        .enrol_node(&mut celano_config, CELANO.level, CELANO.territory)
        .await;
    let (rdir2, mut region_config) = node_config(ABRUZZO.id, Backend::Sqlite, "skew_region")
        .await
        .expect("config");
    region_config.peering.max_backoff = Duration::from_millis(500);
    registry
        .enrol_node(&mut region_config, ABRUZZO.level, ABRUZZO.territory)
        .await;
    let region = TestNode::start_with(region_config, Some(rdir2)).await;
    let ahead = format!("+{AHEAD_S}s");
    let celano = ProcessNode::start_with_env(
        &celano_config,
        &[
            ("LD_PRELOAD", FAKETIME),
            ("FAKETIME", ahead.as_str()),
            // Timers run on the monotonic clock: leave it alone.
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    )
    .await;
    for dir in [&celano_config.node.data_dir, &region.config.node.data_dir] {
        wait_cached_members(dir, &[CELANO.id, ABRUZZO.id]).await;
    }

    // Celano's offer is stamped AHEAD_S seconds in the region's future.
    let mut desk = celano.desk().await;
    let mut region_desk = region.desk().await;
    let ticket = create(&mut desk, request("sanita.prenotazioni", false)).await;
    let stamped = std::time::Instant::now();
    desk.handoff(HandoffRequest {
        ticket_id: ticket.id.clone(),
        to_node: ABRUZZO.id.into(),
        reason: "per competenza".into(),
        overflow: false,
    })
    .await
    .expect("handoff");
    // The region refuses for now and says whose clock it is.
    let m = wait_for(
        "a clock_ahead refusal at the region",
        Duration::from_secs(20),
        || {
            let region = &region;
            async move {
                let m = region.metrics().await;
                (counter(&m, "urpnet_peering_refused_total{reason=\"clock_ahead\"}") > 0.0)
                    .then_some(m)
            }
        },
    )
    .await;
    let lead = counter(
        &m,
        &format!("urpnet_peer_clock_ahead_seconds{{peer=\"{}\"}}", CELANO.id),
    );
    assert!(
        lead > 0.5 && lead <= AHEAD_S as f64 + 1.0,
        "Celano's lead as the region measured it: {lead}"
    );

    // Once within the offset, the offer arrives: nothing was dropped.
    wait_offer(&region_desk, &ticket.id).await;
    assert!(
        stamped.elapsed() >= Duration::from_millis(AHEAD_S * 1000 - 1000),
        "accepted only once the region's clock caught up ({:?})",
        stamped.elapsed()
    );
    accept(&mut region_desk, &ticket.id).await;
    note(&mut desk, &ticket.id, "nota da un orologio avanti").await;
    note(&mut region_desk, &ticket.id, "nota della Regione").await;
    let history = converged(&desk, &region_desk, &ticket.id, Duration::from_secs(30)).await;
    assert!(history.len() >= 5, "{history:?}");
    drop(cdir);
}
