//! The service charter between real nodes and a real registry, in-process
//! on loopback with mutual TLS: a charter published at the Region is
//! answered from at Celano (where, when — open now across the DST change —
//! what to bring, how much, who, how long), found by an operator's words,
//! kept with its history (`as_of`), exported, and withdrawn; the desk's
//! rules refuse bad charters; a hostile member's versions are refused at
//! the exchange; a node outside the region does not hold the region's
//! charters but holds the national ones.

use std::time::Duration;

use prost::Message as _;
use tonic::Code;
use urpnet_node::auth::Role;
use urpnet_proto::hlc::system_time_ms;
use urpnet_proto::signing::NodeSigner;
use urpnet_proto::v1::{
    CharterVersion, ExplainRequest, FaqPushRequest, FaqSyncRequest, GetCharterRequest, Hlc,
    ImportCharterRequest, Level, ListChartersRequest, PayloadKind, SearchCharterRequest,
    SharedKind, Signed, WithdrawCharterRequest,
};
use urpnet_tests::federation::{ABRUZZO, CELANO, Office, TestFederation, counter};
use urpnet_tests::shared::{Charter, DEADLINE, exchange, sample_charter};
use urpnet_tests::{Backend, wait_for};

urpnet_tests::on_both_backends!(
    a_charter_published_at_the_region_is_answered_at_celano_with_history_and_open_now,
);

fn fast(config: &mut urpnet_node::NodeConfig) {
    config.faq.interval = Duration::from_millis(200);
}

fn ms(rfc3339: &str) -> u64 {
    rfc3339
        .parse::<jiff::Timestamp>()
        .expect("instant")
        .as_millisecond() as u64
}

/// Waits until `node` holds `body`'s charter at `version`.
async fn wait_version(node: &Charter, body: &str, version: u64) {
    wait_for(&format!("{body}'s charter v{version}"), DEADLINE, || {
        let mut node = node.clone();
        async move {
            let list = node
                .list_charters(ListChartersRequest {})
                .await
                .ok()?
                .into_inner();
            list.charters
                .iter()
                .any(|c| c.body == body && c.version == version)
                .then_some(())
        }
    })
    .await;
}

async fn a_charter_published_at_the_region_is_answered_at_celano_with_history_and_open_now(
    backend: Backend,
    test: &str,
) {
    let Some(fed) = TestFederation::start(backend, test, &[CELANO, ABRUZZO], fast).await else {
        eprintln!("{test}: skipped (no PostgreSQL URL)");
        return;
    };
    let mut region = fed.node(ABRUZZO.id).charter().await;
    let mut celano = fed.node(CELANO.id).charter().await;

    // The Region publishes its charter.
    let v1 = sample_charter("regione-abruzzo");
    let published = region
        .import_charter(ImportCharterRequest {
            charter: Some(v1.clone()),
        })
        .await
        .expect("import")
        .into_inner();
    assert_eq!((published.version, published.unchanged), (1, false));
    assert_eq!(published.services as usize, v1.services.len());
    // The same charter again publishes nothing.
    let again = region
        .import_charter(ImportCharterRequest {
            charter: Some(v1.clone()),
        })
        .await
        .expect("import again")
        .into_inner();
    assert_eq!((again.version, again.unchanged), (1, true));
    wait_version(&celano, ABRUZZO.id, 1).await;

    // At Celano an operator types the citizen's question and finds the
    // Region's service, in Italian words, with a typo.
    for words in [
        "dove rinnovo la tessera sanitaria e cosa devo portare",
        "tesera sanitria",
        "tessera sanit",
    ] {
        let hits = celano
            .search_charter(SearchCharterRequest {
                query: words.into(),
                ..Default::default()
            })
            .await
            .expect("search")
            .into_inner();
        let first = hits
            .hits
            .first()
            .unwrap_or_else(|| panic!("{words}: no hit"));
        assert_eq!(
            (first.body.as_str(), first.service.as_str()),
            (ABRUZZO.id, "tessera-sanitaria"),
            "{words}: {hits:?}"
        );
    }
    // The FAQ suggestions for the same words carry the charter's answer.
    let suggested = fed
        .node(CELANO.id)
        .faq()
        .await
        .suggest_faq(urpnet_proto::v1::SuggestFaqRequest {
            text: "dove rinnovo la tessera sanitaria e cosa devo portare?".into(),
            ..Default::default()
        })
        .await
        .expect("suggest")
        .into_inner();
    assert_eq!(
        suggested.services.first().map(|h| h.service.as_str()),
        Some("tessera-sanitaria"),
        "{suggested:?}"
    );

    // Filtered by body and category.
    let other = celano
        .search_charter(SearchCharterRequest {
            query: "tessera sanitaria".into(),
            body: CELANO.id.into(),
            ..Default::default()
        })
        .await
        .expect("search")
        .into_inner();
    assert!(other.hits.iter().all(|h| h.body == CELANO.id), "{other:?}");

    // Explain in one call, at a Friday 11:00 in March (CET): open; at
    // 13:00: closed, and the next opening is Monday after the clocks went
    // forward (UTC+2).
    let explain = |at: u64| {
        let mut c = celano.clone();
        async move {
            c.explain(ExplainRequest {
                body: ABRUZZO.id.into(),
                service: "tessera-sanitaria".into(),
                at_ms: at,
            })
            .await
            .expect("explain")
            .into_inner()
        }
    };
    let open = explain(ms("2026-03-27T10:00:00Z")).await;
    let avezzano = open
        .offices
        .iter()
        .find(|o| o.office.as_ref().unwrap().id == "urp-avezzano")
        .expect("the Avezzano desk");
    assert!(avezzano.open_now, "{avezzano:?}");
    assert_eq!(avezzano.closes_at, "2026-03-27T13:00:00+01:00");
    assert!(!open.service.as_ref().unwrap().documents.is_empty());
    // The body's name as the registry lists it (test nodes are "Test node <id>").
    assert_eq!(open.body_name, format!("Test node {}", ABRUZZO.id));
    assert!(open.time.contains("30 giorni"), "{}", open.time);
    assert!(!open.responsible.is_empty());
    assert_eq!(open.booking.len(), 1);
    let closed = explain(ms("2026-03-27T12:30:00Z")).await;
    let avezzano = closed
        .offices
        .iter()
        .find(|o| o.office.as_ref().unwrap().id == "urp-avezzano")
        .unwrap();
    assert!(!avezzano.open_now);
    assert_eq!(avezzano.next_opening, "2026-03-30T09:00:00+02:00");
    assert!(
        avezzano.status.contains("lunedì 30 marzo"),
        "{}",
        avezzano.status
    );

    // The public side answers the same as JSON, and exports.
    let http = reqwest::Client::new();
    let base = format!("http://{}", fed.node(CELANO.id).public_addr);
    let answer: serde_json::Value = http
        .get(format!(
            "{base}/charter/{}/services/tessera-sanitaria?at=2026-03-27T11:00:00%2B01:00",
            ABRUZZO.id
        ))
        .send()
        .await
        .expect("GET explain")
        .json()
        .await
        .expect("json");
    assert_eq!(answer["service"]["id"], "tessera-sanitaria");
    assert!(
        answer["offices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["open_now"] == true)
    );
    let jsonld: serde_json::Value = http
        .get(format!("{base}/charter/{}/jsonld", ABRUZZO.id))
        .send()
        .await
        .expect("GET jsonld")
        .json()
        .await
        .expect("json");
    assert!(
        jsonld["@graph"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["@type"] == "GovernmentService" && g["identifier"] == "tessera-sanitaria")
    );
    let sign = http
        .get(format!(
            "{base}/charter/{}/offices/urp-avezzano/sign.svg",
            ABRUZZO.id
        ))
        .send()
        .await
        .expect("GET sign");
    assert_eq!(sign.headers()["content-type"], "image/svg+xml");
    assert!(
        sign.text()
            .await
            .unwrap()
            .contains("URP della Regione Abruzzo - Avezzano")
    );
    let missing = http
        .get(format!("{base}/charter/{}/services/nope", ABRUZZO.id))
        .send()
        .await
        .expect("GET");
    assert_eq!(missing.status(), 404);
    let bad = http
        .get(format!("{base}/charter/{}?as_of=ieri", ABRUZZO.id))
        .send()
        .await
        .expect("GET");
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("as_of"));

    // The Region changes the charter: version 2, with its history; the
    // charter as it was before is still answered.
    let mut v2 = v1.clone();
    let removed = v2.services.pop().expect("a service").id;
    v2.services[0].summary = "Rinnovo automatico per posta; duplicato allo sportello URP.".into();
    let published2 = region
        .import_charter(ImportCharterRequest {
            charter: Some(v2.clone()),
        })
        .await
        .expect("import v2")
        .into_inner();
    assert_eq!(published2.version, 2);
    wait_version(&celano, ABRUZZO.id, 2).await;
    let history = celano
        .charter_history(urpnet_proto::v1::CharterHistoryRequest {
            body: ABRUZZO.id.into(),
        })
        .await
        .expect("history")
        .into_inner();
    assert_eq!(history.versions.len(), 2);
    assert_eq!(history.versions[0].removed, [format!("service:{removed}")]);
    assert_eq!(
        history.versions[0].changed,
        [format!("service:{}", v2.services[0].id)]
    );
    let before = jiff::Timestamp::from_millisecond(published2.published_at_ms as i64 - 1)
        .unwrap()
        .to_string();
    let then = celano
        .get_charter(GetCharterRequest {
            body: ABRUZZO.id.into(),
            as_of: before,
        })
        .await
        .expect("as of")
        .into_inner();
    assert_eq!(then.summary.unwrap().version, 1);
    assert_eq!(then.charter.unwrap(), v1);
    let now = celano
        .get_charter(GetCharterRequest {
            body: ABRUZZO.id.into(),
            as_of: String::new(),
        })
        .await
        .expect("current")
        .into_inner();
    assert_eq!(now.charter.unwrap(), v2);
    // Dates far away get a clear answer, not a panic.
    let ancient = celano
        .get_charter(GetCharterRequest {
            body: ABRUZZO.id.into(),
            as_of: "2001-03-01".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(ancient.code(), Code::NotFound, "{ancient:?}");
    assert!(ancient.message().contains("first version"), "{ancient:?}");
    for far in ["1815-06-18", "2999-01-01", "domani"] {
        let e = celano
            .get_charter(GetCharterRequest {
                body: ABRUZZO.id.into(),
                as_of: far.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{far}: {e:?}");
        assert!(e.message().contains("as_of"), "{e:?}");
    }
    let e = celano
        .explain(ExplainRequest {
            body: ABRUZZO.id.into(),
            service: "tessera-sanitaria".into(),
            at_ms: ms("2999-01-01T00:00:00Z"),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // Withdrawn: answered as withdrawn, no longer found.
    region
        .withdraw_charter(WithdrawCharterRequest {
            reason: "riorganizzazione".into(),
        })
        .await
        .expect("withdraw");
    wait_version(&celano, ABRUZZO.id, 3).await;
    let gone = celano
        .explain(ExplainRequest {
            body: ABRUZZO.id.into(),
            service: "tessera-sanitaria".into(),
            at_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");
    assert!(gone.message().contains("withdrawn"), "{gone:?}");
    let hits = celano
        .search_charter(SearchCharterRequest {
            query: "tessera sanitaria".into(),
            body: ABRUZZO.id.into(),
            ..Default::default()
        })
        .await
        .expect("search")
        .into_inner();
    assert!(hits.hits.is_empty(), "{hits:?}");
    drop(fed);
}

#[tokio::test]
async fn the_desk_refuses_bad_charters_naming_the_field_and_stores_nothing() {
    let mut fed = TestFederation::start(Backend::Sqlite, "charter_bad_input", &[CELANO], fast)
        .await
        .expect("sqlite");
    let node = fed.node(CELANO.id);
    let mut desk = node.charter().await;
    let reader = node.add_operator("sportello", Role::Operator).await;
    let mut operator = node.charter_as(&reader).await;
    let good = sample_charter("celano");

    let denied = operator
        .import_charter(ImportCharterRequest {
            charter: Some(good.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let mut other = good.clone();
    other.body = ABRUZZO.id.into();
    let e = desk
        .import_charter(ImportCharterRequest {
            charter: Some(other),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");

    // Each rule, alone, is refused with its field named.
    type Break = fn(&mut urpnet_proto::v1::Charter);
    let cases: [(&str, Break); 9] = [
        ("offices[0].hours", |c| {
            c.offices[0].hours[0].end = "07:00".into();
        }),
        ("offices[0].hours", |c| {
            let mut h = c.offices[0].hours[0].clone();
            h.start = "09:00".into();
            c.offices[0].hours.push(h);
        }),
        ("offices[0].hours[0].weekday", |c| {
            c.offices[0].hours[0].weekday = 8
        }),
        ("services[0].delivered[0].office_id", |c| {
            c.services[0].delivered[0].office_id = "cantina".into();
        }),
        ("services[0].cost.amount_cents", |c| {
            c.services[0].cost.as_mut().unwrap().amount_cents = -100;
        }),
        ("services[0].legal_days", |c| {
            c.services[0].legal_days = Some(0)
        }),
        ("services[0].categories[0]", |c| {
            c.services[0].categories[0] = "astrologia".into();
        }),
        ("services[0].title", |c| {
            c.services[0].title = "x".repeat(201)
        }),
        ("offices[1].id", |c| {
            c.offices[1].id = c.offices[0].id.clone()
        }),
    ];
    for (field, breaks) in cases {
        let mut bad = good.clone();
        breaks(&mut bad);
        let e = desk
            .import_charter(ImportCharterRequest { charter: Some(bad) })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{field}: {e:?}");
        assert!(e.message().contains(field), "{field}: {}", e.message());
    }
    let e = desk
        .import_charter(ImportCharterRequest { charter: None })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // Nothing was stored.
    let list = desk
        .list_charters(ListChartersRequest {})
        .await
        .expect("list")
        .into_inner();
    assert!(list.charters.is_empty(), "{list:?}");
    let e = desk
        .get_charter(GetCharterRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    // The good one goes in; an operator reads it but cannot withdraw it.
    desk.import_charter(ImportCharterRequest {
        charter: Some(good.clone()),
    })
    .await
    .expect("import");
    let e = operator
        .withdraw_charter(WithdrawCharterRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let read = operator
        .explain(ExplainRequest {
            body: String::new(),
            service: "carta-identita".into(),
            at_ms: 0,
        })
        .await
        .expect("explain")
        .into_inner();
    assert_eq!(
        read.cost,
        "€ 22,21, con avviso pagoPA — 16,79 € di corrispettivo statale più 5,42 € di diritti comunali; 27,63 € per il duplicato"
    );
    let e = operator
        .explain(ExplainRequest {
            body: "NOT AN ID".into(),
            service: "carta-identita".into(),
            at_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("body"));

    // After a restart the charter is answered from the store; with its
    // search index deleted, the index is rebuilt.
    for delete_index in [false, true] {
        fed.restart(CELANO.id, |config| {
            if delete_index {
                std::fs::remove_dir_all(urpnet_node::charter::index_dir(&config.node.data_dir))
                    .expect("delete the index");
            }
        })
        .await;
        let mut desk = fed.node(CELANO.id).charter().await;
        let hits = desk
            .search_charter(SearchCharterRequest {
                query: "carta d'identita elettronica".into(),
                ..Default::default()
            })
            .await
            .expect("search")
            .into_inner();
        assert_eq!(
            hits.hits.first().map(|h| h.service.as_str()),
            Some("carta-identita"),
            "index deleted: {delete_index}"
        );
        let list = desk
            .list_charters(ListChartersRequest {})
            .await
            .expect("list")
            .into_inner();
        assert_eq!(list.charters.len(), 1);
        assert_eq!(list.charters[0].version, 1);
    }
    drop(fed);
}

const ROGUE: &str = "c_i804";
/// A comune of Lombardy (Milano), outside Abruzzo.
const MILANO: Office = Office {
    id: "c_f205",
    level: Level::Comune,
    territory: &["015146"],
};
/// A national body.
const NATIONAL: &str = "m_inps";

fn charter_version(
    signer: &NodeSigner,
    owner: &str,
    n: u64,
    charter: urpnet_proto::v1::Charter,
) -> Signed {
    let v = CharterVersion {
        entry_id: "charter".into(),
        owner: owner.into(),
        version: n,
        seq: n,
        published_at: Some(Hlc {
            wall_ms: system_time_ms(),
            logical: 0,
        }),
        retired: false,
        charter: Some(charter),
    };
    signer.sign(PayloadKind::CharterVersion, v.encode_to_vec())
}

#[tokio::test]
async fn hostile_versions_are_refused_and_charters_stay_in_their_region() {
    let fed = TestFederation::start(
        Backend::Sqlite,
        "charter_attacks",
        &[CELANO, ABRUZZO, MILANO],
        fast,
    )
    .await
    .expect("sqlite");
    let (rogue_tls, rogue) = fed.registry.enrol(ROGUE, Level::Comune, &["066098"]).await;
    let (national_tls, national) = fed.registry.enrol(NATIONAL, Level::Nazionale, &[]).await;
    // Every node must know the two new members before they call.
    for office in [CELANO, ABRUZZO, MILANO] {
        let dir = fed.node(office.id).config.node.data_dir.clone();
        wait_for("the new members in every member list", DEADLINE, || {
            let dir = dir.clone();
            async move {
                let m = urpnet_node::registry_link::load_cache(&dir).0?;
                (m.is_active(ROGUE) && m.is_active(NATIONAL)).then_some(())
            }
        })
        .await;
    }
    let celano = fed.node(CELANO.id);
    let mut region = fed.node(ABRUZZO.id).charter().await;
    let celano_desk = celano.charter().await;
    let milano = fed.node(MILANO.id);
    let milano_desk = milano.charter().await;

    // Celano and the Region publish; Celano gets the Region's, Milano
    // (another region) gets neither.
    fed.node(CELANO.id)
        .charter()
        .await
        .import_charter(ImportCharterRequest {
            charter: Some(sample_charter("celano")),
        })
        .await
        .expect("import celano");
    region
        .import_charter(ImportCharterRequest {
            charter: Some(sample_charter("regione-abruzzo")),
        })
        .await
        .expect("import region");
    wait_version(&celano_desk, ABRUZZO.id, 1).await;
    wait_version(&fed.node(ABRUZZO.id).charter().await, CELANO.id, 1).await;

    // The rogue, a member of Abruzzo, pulls the Region's version 1, then
    // the Region publishes version 2.
    let region_endpoint = fed.node(ABRUZZO.id).config.registry.advertise.clone();
    let pulled = exchange(&rogue_tls, &region_endpoint, ABRUZZO.id)
        .sync(FaqSyncRequest {
            kind: SharedKind::Charter as i32,
            ..Default::default()
        })
        .await
        .expect("a member may sync")
        .into_inner();
    let old_v1 = pulled
        .versions
        .iter()
        .find(|v| v.author == ABRUZZO.id)
        .expect("the Region's version")
        .clone();
    let mut changed = sample_charter("regione-abruzzo");
    changed.services[0].summary = "Nuova versione.".into();
    region
        .import_charter(ImportCharterRequest {
            charter: Some(changed),
        })
        .await
        .expect("import v2");
    wait_version(&celano_desk, ABRUZZO.id, 2).await;

    // One batch, every kind of bad version, and two good ones.
    let mut own = sample_charter("celano");
    own.body = ROGUE.into();
    for o in &mut own.offices {
        o.istat_code = "066098".into();
    }
    let good = charter_version(&rogue, ROGUE, 1, own.clone());
    let mut forged_charter = sample_charter("regione-abruzzo");
    forged_charter.services.clear();
    let not_owner = charter_version(&rogue, ABRUZZO.id, 9, forged_charter.clone());
    let mut forged = charter_version(&rogue, ABRUZZO.id, 9, forged_charter);
    forged.author = ABRUZZO.id.into();
    let garbage = rogue.sign(PayloadKind::CharterVersion, b"\xff\xff".to_vec());
    let mut broken = own.clone();
    broken.offices[0].hours[0].end = "00:01".into();
    let invalid = charter_version(&rogue, ROGUE, 2, broken);
    let huge = rogue.sign(PayloadKind::CharterVersion, vec![7; 3 * 1024 * 1024]);
    let wrong_kind = rogue.sign(
        PayloadKind::FaqVersion,
        CharterVersion::default().encode_to_vec(),
    );
    let mut national_charter = sample_charter("regione-abruzzo");
    national_charter.body = NATIONAL.into();
    let relayed_national = charter_version(&national, NATIONAL, 1, national_charter);
    let endpoint = celano.config.registry.advertise.clone();
    let mut client = exchange(&rogue_tls, &endpoint, CELANO.id);
    let before = celano.metrics().await;
    let r = client
        .push(FaqPushRequest {
            versions: vec![
                good.clone(),
                not_owner,
                forged,
                old_v1.clone(),
                garbage,
                invalid,
                huge,
                wrong_kind,
                relayed_national.clone(),
            ],
            want: Vec::new(),
            kind: SharedKind::Charter as i32,
        })
        .await
        .expect("push")
        .into_inner();
    assert_eq!(r.applied, 2, "{r:?}");
    let refused_at: Vec<u32> = r.refused.iter().map(|v| v.index).collect();
    assert_eq!(refused_at, [1, 2, 3, 4, 5, 6, 7], "{r:?}");
    for (v, word) in r.refused.iter().zip([
        "only the owner",
        "signature",
        "older",
        "decode",
        "hours",
        "bytes",
        "kind",
    ]) {
        assert!(v.reason.contains(word), "{word}: {}", v.reason);
    }
    let after = celano.metrics().await;
    for reason in ["not_owner", "stale", "malformed"] {
        let name = format!("urpnet_charter_refused_total{{reason=\"{reason}\"}}");
        assert!(counter(&after, &name) > counter(&before, &name), "{reason}");
    }
    // The Region's charter at Celano is still version 2.
    let held = celano_desk
        .clone()
        .get_charter(GetCharterRequest {
            body: ABRUZZO.id.into(),
            as_of: String::new(),
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(held.summary.unwrap().version, 2);
    // An oversized batch is refused whole.
    let e = client
        .push(FaqPushRequest {
            versions: vec![rogue.sign(PayloadKind::CharterVersion, vec![1; 10]); 501],
            want: Vec::new(),
            kind: SharedKind::Charter as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // Milano holds the national body's charter (spread by the exchange)
    // but never Celano's nor the Region's.
    wait_version(&milano_desk, NATIONAL, 1).await;
    let mut m = exchange(&national_tls, &milano.config.registry.advertise, MILANO.id);
    let r = m
        .push(FaqPushRequest {
            versions: vec![old_v1],
            want: Vec::new(),
            kind: SharedKind::Charter as i32,
        })
        .await
        .expect("push")
        .into_inner();
    assert_eq!(r.applied, 0, "{r:?}");
    assert!(r.refused[0].reason.contains("does not hold"), "{r:?}");
    let list = milano_desk
        .clone()
        .list_charters(ListChartersRequest {})
        .await
        .expect("list")
        .into_inner();
    let bodies: Vec<&str> = list.charters.iter().map(|c| c.body.as_str()).collect();
    assert_eq!(bodies, [NATIONAL], "{list:?}");

    // Revoked: the national body's next version is refused, even relayed.
    fed.registry
        .admin()
        .set_status(urpnet_proto::v1::SetStatusRequest {
            id: NATIONAL.into(),
            status: urpnet_proto::v1::MemberStatus::Revoked as i32,
            reason: "key compromised".into(),
        })
        .await
        .expect("revoke");
    let celano_dir = celano.config.node.data_dir.clone();
    wait_for("Celano to see the revocation", DEADLINE, || {
        let dir = celano_dir.clone();
        async move {
            let m = urpnet_node::registry_link::load_cache(&dir).0?;
            (!m.is_active(NATIONAL)).then_some(())
        }
    })
    .await;
    let mut stolen = sample_charter("regione-abruzzo");
    stolen.body = NATIONAL.into();
    stolen.services.truncate(1);
    let r = client
        .push(FaqPushRequest {
            versions: vec![charter_version(&national, NATIONAL, 2, stolen)],
            want: Vec::new(),
            kind: SharedKind::Charter as i32,
        })
        .await
        .expect("push")
        .into_inner();
    assert_eq!(r.applied, 0, "{r:?}");
    assert!(r.refused[0].reason.contains("revoked"), "{r:?}");
    drop(fed);
}
