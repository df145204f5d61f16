//! A member turned hostile, talking straight to a node's FaqExchange with
//! its real certificate: versions signed by a non-owner, forged, replayed,
//! malformed, oversized or from a revoked member are refused, counted by
//! rule and logged, and the good versions of the same batch are stored.

use std::time::Duration;

use prost::Message as _;
use tonic::Code;
use urpnet_proto::hlc::system_time_ms;
use urpnet_proto::signing::NodeSigner;
use urpnet_proto::v1::faq_exchange_client::FaqExchangeClient;
use urpnet_proto::v1::{
    FaqContent, FaqPushRequest, FaqPushResponse, FaqSyncRequest, FaqVersion, GetFaqRequest, Hlc,
    Level, MemberStatus, OriginDigest, PayloadKind, ReviseFaqRequest, SetStatusRequest, Signed,
};
use urpnet_tests::federation::{ABRUZZO, CELANO, TestFederation, counter};
use urpnet_tests::shared::{exchange, publish, sample_faqs, search, wait_found};
use urpnet_tests::{Backend, wait_for};

const ROGUE: &str = "c_i804";
const GHOST: &str = "c_a515";

/// A version of `entry` owned by `owner`, signed by `signer`.
fn version(signer: &NodeSigner, owner: &str, entry: &str, n: u64, content: FaqContent) -> Signed {
    let v = FaqVersion {
        entry_id: entry.into(),
        owner: owner.into(),
        version: n,
        seq: n,
        published_at: Some(Hlc {
            wall_ms: system_time_ms(),
            logical: 0,
        }),
        retired: false,
        content: Some(content),
    };
    signer.sign(PayloadKind::FaqVersion, v.encode_to_vec())
}

async fn push(
    client: &mut FaqExchangeClient<tonic::transport::Channel>,
    versions: Vec<Signed>,
) -> Result<FaqPushResponse, tonic::Status> {
    client
        .push(FaqPushRequest {
            versions,
            want: Vec::new(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

fn refused(metrics: &str, reason: &str) -> f64 {
    counter(
        metrics,
        &format!("urpnet_faq_refused_total{{reason=\"{reason}\"}}"),
    )
}

async fn knows(dir: &std::path::Path, test: impl Fn(&urpnet_node::registry_link::Members) -> bool) {
    wait_for("Celano's member list", Duration::from_secs(20), || {
        let dir = dir.to_path_buf();
        let ok = &test;
        async move {
            let m = urpnet_node::registry_link::load_cache(&dir).0?;
            ok(&m).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn forged_replayed_malformed_and_revoked_versions_are_refused_and_good_ones_kept() {
    let fed = TestFederation::start(Backend::Sqlite, "faq_attacks", &[CELANO, ABRUZZO], |c| {
        c.faq.interval = Duration::from_millis(200);
        c.peering.max_message_bytes = 1024 * 1024;
    })
    .await
    .expect("sqlite is always there");
    let (rogue_tls, rogue) = fed.registry.enrol(ROGUE, Level::Comune, &["066098"]).await;
    let (_, ghost) = fed.registry.enrol(GHOST, Level::Comune, &["066006"]).await;
    let celano = fed.node(CELANO.id);
    let celano_dir = celano.config.node.data_dir.clone();
    knows(&celano_dir, |m| m.is_active(ROGUE) && m.is_active(GHOST)).await;
    let celano_faq = celano.faq().await;
    let mut region = fed.node(ABRUZZO.id).faq().await;

    // The Region publishes; the rogue, a member, pulls version 1 from it.
    let regional = sample_faqs("regione");
    let key = publish(&mut region, regional[0].clone()).await;
    wait_found(&celano_faq, "prenotare visita", &key, 1).await;
    let region_endpoint = fed.node(ABRUZZO.id).config.registry.advertise.clone();
    let pulled = exchange(&rogue_tls, &region_endpoint, ABRUZZO.id)
        .sync(FaqSyncRequest::default())
        .await
        .expect("a member may sync")
        .into_inner();
    let old_v1 = pulled.versions[0].clone();
    // Then the Region revises it, and version 2 reaches Celano.
    let mut revised = regional[0].clone();
    revised.answer.push_str("\n\nAggiornato.");
    region
        .revise_faq(ReviseFaqRequest {
            key: key.clone(),
            base_version: 1,
            content: Some(revised),
        })
        .await
        .expect("revise");
    wait_found(&celano_faq, "prenotare visita", &key, 2).await;

    let endpoint = celano.config.registry.advertise.clone();
    let mut client = exchange(&rogue_tls, &endpoint, CELANO.id);
    let before = celano.metrics().await;
    let comune = sample_faqs("comune");
    let entry = |n: u32| format!("01JD3Q5Z8W2N4V6X7Y9A0B1C{n:02}");
    let region_entry = key.split('/').nth(1).expect("entry id").to_string();

    // A batch mixing good versions with every kind of bad one.
    let good = version(&rogue, ROGUE, &entry(1), 1, comune[0].clone());
    let not_owner = version(&rogue, ABRUZZO.id, &region_entry, 9, comune[1].clone());
    let mut forged = version(&rogue, ABRUZZO.id, &region_entry, 9, comune[1].clone());
    forged.author = ABRUZZO.id.into();
    let garbage = rogue.sign(PayloadKind::FaqVersion, b"\xff\xff not a version".to_vec());
    let mut bad_content = comune[2].clone();
    bad_content.question = "?".into();
    bad_content.links[..]
        .iter_mut()
        .for_each(|l| l.url = "ftp://x".into());
    let invalid = version(&rogue, ROGUE, &entry(2), 1, bad_content);
    let huge = rogue.sign(PayloadKind::FaqVersion, vec![7; 200 * 1024]);
    let wrong_kind = rogue.sign(
        PayloadKind::TicketEvent,
        FaqVersion::default().encode_to_vec(),
    );
    let relayed = version(&ghost, GHOST, &entry(3), 1, comune[3].clone());
    let r = push(
        &mut client,
        vec![
            good.clone(),
            not_owner,
            forged,
            old_v1.clone(),
            garbage,
            invalid,
            huge,
            wrong_kind,
            relayed,
        ],
    )
    .await
    .expect("push");
    assert_eq!(r.applied, 2, "{r:?}");
    let refused_at: Vec<u32> = r.refused.iter().map(|v| v.index).collect();
    assert_eq!(refused_at, [1, 2, 3, 4, 5, 6, 7], "{r:?}");
    for (v, word) in r.refused.iter().zip([
        "only the owner",
        "signature",
        "older",
        "decode",
        "question",
        "bytes",
        "kind",
    ]) {
        assert!(v.reason.contains(word), "{word}: {}", v.reason);
    }
    // The good versions are searchable; the Region's entry is untouched.
    let key_rogue = format!("{ROGUE}/{}", entry(1));
    wait_found(&celano_faq, &comune[0].question, &key_rogue, 1).await;
    let key_ghost = format!("{GHOST}/{}", entry(3));
    wait_found(&celano_faq, &comune[3].question, &key_ghost, 1).await;
    let held = celano_faq
        .clone()
        .get_faq(GetFaqRequest { key: key.clone() })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(held.entry.unwrap().current.unwrap().version, 2);
    // Replaying the same batch changes nothing: duplicates and refusals.
    let again = push(&mut client, vec![good, old_v1]).await.expect("push");
    assert_eq!(
        (again.applied, again.duplicates, again.refused.len()),
        (0, 1, 1)
    );

    // Revoked: the ghost's versions are refused even when relayed.
    fed.registry
        .admin()
        .set_status(SetStatusRequest {
            id: GHOST.into(),
            status: MemberStatus::Revoked as i32,
            reason: "key compromised".into(),
        })
        .await
        .expect("revoke");
    knows(&celano_dir, |m| !m.is_active(GHOST)).await;
    let mut newer = comune[3].clone();
    newer.answer = "Testo sostituito da chi ha rubato la chiave.".into();
    let r = push(
        &mut client,
        vec![version(&ghost, GHOST, &entry(3), 2, newer)],
    )
    .await
    .expect("push");
    assert_eq!(r.applied, 0);
    assert!(r.refused[0].reason.contains("revoked"), "{r:?}");
    let found = search(&celano_faq, "sostituito chiave rubato")
        .await
        .expect("search");
    assert!(found.hits.iter().all(|h| h.key != key_ghost));

    // Whole messages over the limits: refused before anything is stored.
    let many = vec![version(&rogue, ROGUE, &entry(4), 1, comune[4].clone()); 501];
    let err = push(&mut client, many).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("versions"), "{err:?}");
    let err = client
        .sync(FaqSyncRequest {
            digest: vec![OriginDigest {
                origin: "NOT A NODE".into(),
                max_seq: 1,
                entries: 1,
                hash: vec![0; 3],
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("digest[0]"), "{err:?}");
    let big = vec![rogue.sign(PayloadKind::FaqVersion, vec![0; 100 * 1024]); 12];
    let err = push(&mut client, big).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");

    // Every refusal was counted under its rule. (The counters are the
    // process's, shared by both nodes: the Region may also refuse the
    // ghost's version when Celano relays it after the revocation, so that
    // rule is counted at least once.)
    let after = celano.metrics().await;
    assert!(
        refused(&after, "revoked_author") - refused(&before, "revoked_author") >= 1.0,
        "urpnet_faq_refused_total{{reason=revoked_author}}"
    );
    for (reason, n) in [
        ("not_owner", 1.0),
        ("bad_signature", 1.0),
        ("stale", 2.0),
        ("malformed", 2.0),
        ("oversized", 1.0),
        ("wrong_kind", 1.0),
        ("oversized_batch", 1.0),
        ("bad_digest", 1.0),
    ] {
        assert_eq!(
            refused(&after, reason) - refused(&before, reason),
            n,
            "urpnet_faq_refused_total{{reason={reason}}}"
        );
    }
}
