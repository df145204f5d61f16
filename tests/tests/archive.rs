//! The anonymised archive end to end: real nodes close tickets full of
//! personal data, their records reach a real registry over mutual TLS with
//! nothing personal in them; coordinators see protected counts and surges;
//! bad batches are refused and counted while good records are kept; a
//! regional registry replicates upward without duplicates.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use prost::Message as _;
use sqlx::Row as _;
use tonic::Code;
use urpnet_proto::archive::{add_weeks, week_of_ms};
use urpnet_proto::hlc::system_time_ms;
use urpnet_proto::signing::NodeSigner;
use urpnet_proto::v1::archive_client::ArchiveClient;
use urpnet_proto::v1::archive_desk_client::ArchiveDeskClient;
use urpnet_proto::v1::{
    ArchiveFilter, ArchiveQueryRequest, ArchiveRecord, ArchiveStatusRequest, ArchiveTrendsRequest,
    Dimension, EnrolRequest, Level, PayloadKind, PushArchiveRequest, TerritoryLevel,
};
use urpnet_tests::archive::{
    PII, admin, close_tickets, push, query, record, signed_batch, stats, wait_records,
};
use urpnet_tests::federation::{AVEZZANO, CELANO, TestFederation, TestRegistry, counter};
use urpnet_tests::{Backend, wait_for};

urpnet_tests::on_both_backends!(
    closed_tickets_reach_the_registry_without_personal_data,
    a_coordinator_sees_a_planted_surge,
    bad_batches_are_refused_and_counted_and_good_records_kept,
    a_regional_registry_replicates_upward_without_duplicates,
    acknowledged_records_leave_the_outbox_and_stay_counted,
);

/// Every text, number and blob of the archive tables, as one string.
async fn dump(url: &str, tables: &[&str]) -> String {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.expect("open database");
    let mut out = String::new();
    for table in tables {
        for row in sqlx::query(&format!("SELECT * FROM {table}"))
            .fetch_all(&pool)
            .await
            .expect("read table")
        {
            for i in 0..row.len() {
                if let Ok(s) = row.try_get::<String, _>(i) {
                    out.push_str(&s);
                } else if let Ok(b) = row.try_get::<Vec<u8>, _>(i) {
                    out.push_str(&String::from_utf8_lossy(&b));
                } else if let Ok(n) = row.try_get::<i64, _>(i) {
                    out.push_str(&n.to_string());
                } else if let Ok(n) = row.try_get::<i32, _>(i) {
                    out.push_str(&n.to_string());
                } else if let Ok(n) = row.try_get::<i16, _>(i) {
                    out.push_str(&n.to_string());
                }
                out.push('|');
            }
            out.push('\n');
        }
    }
    pool.close().await;
    out
}

async fn outbox_records(url: &str) -> Vec<Vec<u8>> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(url).await.expect("open node db");
    let rows = sqlx::query("SELECT record FROM archive_outbox ORDER BY seq")
        .fetch_all(&pool)
        .await
        .expect("outbox");
    pool.close().await;
    rows.iter().map(|r| r.get::<Vec<u8>, _>(0)).collect()
}

/// Twelve Abruzzo comuni and six categories: the tables of the
/// differencing tests.
const COMUNI: [&str; 12] = [
    "066032", "066006", "066049", "066098", "067041", "068028", "069022", "069058", "067025",
    "068024", "066068", "069099",
];
const CATEGORIES: [&str; 6] = [
    "anagrafe.residenza",
    "rifiuti.ingombranti",
    "tributi.tari",
    "informazioni",
    "reclami",
    "tributi.imu",
];

/// A published count carries its cell's noise: within 3 of the truth, and
/// never under k.
#[track_caller]
fn near(published: u64, truth: u64, k: u64) {
    let lo = truth.saturating_sub(3).max(k);
    assert!(
        (lo..=truth + 3).contains(&published),
        "published {published} is not the true {truth} with its noise"
    );
}

fn by(dims: &[Dimension]) -> ArchiveQueryRequest {
    ArchiveQueryRequest {
        group_by: dims.iter().map(|d| *d as i32).collect(),
        ..Default::default()
    }
}

async fn closed_tickets_reach_the_registry_without_personal_data(backend: Backend, test: &str) {
    let Some(mut fed) = TestFederation::start(backend, test, &[CELANO, AVEZZANO], |c| {
        c.archive.interval = Duration::from_millis(100);
    })
    .await
    else {
        return;
    };
    let admin = admin(&fed.registry);
    let celano = close_tickets(
        &mut fed.node(CELANO.id).desk().await,
        12,
        "anagrafe.residenza",
    )
    .await;
    let avezzano = close_tickets(
        &mut fed.node(AVEZZANO.id).desk().await,
        7,
        "rifiuti.ingombranti",
    )
    .await;
    let s = wait_records(&admin, 19, Duration::from_secs(30)).await;
    let by_member: BTreeMap<_, _> = s
        .sources
        .iter()
        .map(|s| (s.member.as_str(), s.records))
        .collect();
    assert_eq!(by_member.get(CELANO.id), Some(&12));
    assert_eq!(by_member.get(AVEZZANO.id), Some(&7));

    // Nothing personal anywhere in the registry's archive tables.
    let registry_text = dump(
        &fed.registry.config.database_url(),
        &[
            "archive_records",
            "archive_weekly",
            "archive_weekly_province",
            "archive_sources",
        ],
    )
    .await;
    for pii in PII {
        assert!(!registry_text.contains(pii), "`{pii}` reached the registry");
    }
    // Nor in what left the nodes: each record is the eleven fields, with
    // the comune as territory, and no ticket id.
    for (node, ids) in [(CELANO.id, &celano), (AVEZZANO.id, &avezzano)] {
        let url = fed.node(node).config.database_url();
        let records = outbox_records(&url).await;
        assert_eq!(
            records.len(),
            ids.len(),
            "{node}: one record per closed ticket"
        );
        for bytes in &records {
            let r = ArchiveRecord::decode(bytes.as_slice()).expect("record");
            assert_eq!(r.encoded_len(), bytes.len(), "no field beyond the schema");
            assert_eq!(r.territory, "066032");
            assert_eq!(r.id.len(), 16);
            let text = String::from_utf8_lossy(bytes);
            for pii in PII.iter().copied().chain(ids.iter().map(String::as_str)) {
                assert!(!text.contains(pii), "{node}: `{pii}` is in a record");
            }
        }
    }

    // Outcomes as closed: every third ticket was rejected.
    let r = query(&admin, by(&[Dimension::Outcome]))
        .await
        .expect("query");
    let cells: BTreeMap<_, _> = r
        .cells
        .iter()
        .map(|c| (c.keys[0].as_str(), c.count))
        .collect();
    let k = u64::from(r.k);
    near(cells["answered"], 12, k);
    near(cells["rejected"], 7, k);
    near(r.total, 19, k);

    // The node's view.
    let node = fed.node(CELANO.id);
    let mut desk = archive_desk(&node.desk_addr.to_string(), &node.token).await;
    let status = desk
        .archive_status(ArchiveStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!((status.made, status.sent, status.pending), (12, 12, 0));

    // As after an upgrade from a version without the archive: the outbox and
    // its cursors are gone. The first run archives the closed tickets again,
    // with the same ids, and the registry counts each once.
    let url = fed.node(CELANO.id).config.database_url();
    fed.restart(CELANO.id, |_| {
        tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(async {
                sqlx::any::install_default_drivers();
                let pool = sqlx::AnyPool::connect(&url).await.expect("open");
                sqlx::query("DELETE FROM archive_outbox")
                    .execute(&pool)
                    .await
                    .expect("delete");
                sqlx::query("DELETE FROM archive_state")
                    .execute(&pool)
                    .await
                    .expect("delete");
                pool.close().await;
            })
        })
    })
    .await;
    wait_for(
        "the outbox rebuilt and pushed",
        Duration::from_secs(30),
        || async {
            let url = fed.node(CELANO.id).config.database_url();
            (outbox_records(&url).await.len() == 12).then_some(())
        },
    )
    .await;
    // The node's own view: the 12 re-made records are all acknowledged
    // (its send cursor was reset with the outbox, so they were pushed again).
    let node = fed.node(CELANO.id);
    let desk = archive_desk(&node.desk_addr.to_string(), &node.token).await;
    wait_for(
        "the re-made records acknowledged by the registry",
        Duration::from_secs(30),
        || {
            let mut desk = desk.clone();
            async move {
                let s = desk
                    .archive_status(ArchiveStatusRequest {})
                    .await
                    .ok()?
                    .into_inner();
                (s.made == 12 && s.sent == 12 && s.pending == 0).then_some(())
            }
        },
    )
    .await;
    let celano_records = stats(&admin)
        .await
        .expect("stats")
        .sources
        .iter()
        .find(|s| s.member == CELANO.id)
        .map(|s| s.records);
    assert_eq!(celano_records, Some(12), "re-sent records counted once");
    assert_eq!(
        stats(&admin).await.expect("stats").records,
        19,
        "no record twice"
    );
}

async fn a_coordinator_sees_a_planted_surge(backend: Backend, test: &str) {
    let Some(registry) = TestRegistry::start(backend, test).await else {
        return;
    };
    let (material, signer) = registry.enrol(CELANO.id, Level::Comune, &["066032"]).await;
    let now = week_of_ms(system_time_ms());
    let mut records = Vec::new();
    let mut seed = 0u64;
    let mut add = |category: &str, week: u32, n: usize, records: &mut Vec<ArchiveRecord>| {
        for _ in 0..n {
            seed += 1;
            records.push(record(seed, category, "066032", week));
        }
    };
    for back in 1..=20 {
        let w = add_weeks(now, -back).expect("week");
        // Twenty flat weeks, so every week the chart draws has a baseline.
        add("rifiuti.ingombranti", w, 10, &mut records);
        if back <= 8 {
            add("anagrafe.residenza", w, 12, &mut records);
            add("tributi.tari", w, 2, &mut records);
        }
    }
    add("rifiuti.ingombranti", now, 40, &mut records);
    add("anagrafe.residenza", now, 13, &mut records);
    add("tributi.tari", now, 3, &mut records);
    let total = records.len() as u64;
    for chunk in records.chunks(100) {
        let r = push(&registry, &material, &signer, chunk)
            .await
            .expect("push");
        assert!(r.refused.is_empty(), "{:?}", r.refused);
    }
    let admin = admin(&registry);
    wait_records(&admin, total, Duration::from_secs(10)).await;

    let trends = admin
        .clone()
        .archive_trends(ArchiveTrendsRequest {
            all: true,
            ..Default::default()
        })
        .await
        .expect("trends")
        .into_inner();
    assert_eq!(trends.week, now);
    let surges: Vec<_> = trends.rows.iter().filter(|r| r.surge).collect();
    assert_eq!(surges.len(), 1, "{:#?}", trends.rows);
    let surge = surges[0];
    assert_eq!(surge.category, "rifiuti.ingombranti");
    let k = u64::from(trends.k);
    near(surge.count, 40, k);
    assert!(
        (surge.baseline_mean * 8.0 - 80.0).abs() <= 3.0,
        "the baseline's 80 records with their noise: {surge:?}"
    );
    let said = format!(
        "rifiuti.ingombranti in Celano (066032): {} this week, {:.1}x the 8-week mean of {:.1}",
        surge.count, surge.ratio, surge.baseline_mean
    );
    assert!(
        surge.explanation.starts_with(&said),
        "the published figures: {}",
        surge.explanation
    );
    // The same surge by province (the province rollup): L'Aquila.
    let by_province = admin
        .clone()
        .archive_trends(ArchiveTrendsRequest {
            level: TerritoryLevel::Provincia as i32,
            ..Default::default()
        })
        .await
        .expect("trends by province")
        .into_inner();
    assert_eq!(by_province.rows.len(), 1, "{:#?}", by_province.rows);
    // The same records through the other rollup: the same noise.
    assert_eq!(
        (
            by_province.rows[0].territory.as_str(),
            by_province.rows[0].count
        ),
        ("066", surge.count)
    );
    assert!(by_province.rows[0].explanation.contains("L'Aquila"));
    let flat = trends
        .rows
        .iter()
        .find(|r| r.category == "anagrafe.residenza")
        .expect("flat series");
    assert!(!flat.surge);
    near(flat.count, 13, k);
    let small = trends
        .rows
        .iter()
        .find(|r| r.category == "tributi.tari")
        .expect("small series");
    assert!(small.suppressed && small.count == 0, "3 < k is hidden");
    assert!(
        small.weekly.iter().all(|n| *n == 0),
        "every week of 2 is hidden: {small:?}"
    );

    // The coordinators' CLI, as a process: trends table, CSV, SVG.
    let dir = tempfile::tempdir().expect("dir");
    let identity = registry.config.registry.data_dir.join("coordinator");
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(urpnet_tests::binary("urpnet-registry"))
            .arg("--registry")
            .arg(registry.endpoint())
            .arg("--identity")
            .arg(&identity)
            .args(args)
            .output()
            .expect("run urpnet-registry");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let table = cli(&["archive", "trends"]);
    assert!(
        table.contains("SURGE") && table.contains(&format!("{:.1}x the 8-week mean", surge.ratio)),
        "{table}"
    );
    let csv = cli(&["archive", "query", "--by", "category,outcome", "--csv"]);
    assert!(
        csv.starts_with("category,outcome,count,suppressed\n"),
        "{csv}"
    );
    assert_eq!(
        csv.trim_end().lines().count(),
        7,
        "a header and six cells\n{csv}"
    );
    let tari: u64 = csv
        .lines()
        .find_map(|l| l.strip_prefix("tributi.tari,rejected,"))
        .and_then(|rest| rest.strip_suffix(','))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a shown tributi.tari,rejected cell\n{csv}"));
    near(tari, 9, k);
    let svg = dir.path().join("chart.svg");
    let said = cli(&[
        "archive",
        "plot",
        "--category",
        "rifiuti",
        "--weeks",
        "12",
        "--out",
        svg.to_str().expect("path"),
    ]);
    assert!(said.contains("1 surge(s) marked"), "{said}");
    let drawn = std::fs::read_to_string(&svg).expect("svg");
    assert!(
        drawn.starts_with("<svg") && drawn.contains("<circle"),
        "a chart with a marked surge"
    );
    registry.stop().await;
}

async fn bad_batches_are_refused_and_counted_and_good_records_kept(backend: Backend, test: &str) {
    let Some(registry) = TestRegistry::start(backend, test).await else {
        return;
    };
    let (material, signer) = registry.enrol(CELANO.id, Level::Comune, &["066032"]).await;
    let (other_material, other_signer) = registry
        .enrol(AVEZZANO.id, Level::Comune, &["066006"])
        .await;
    let admin = admin(&registry);
    let week = week_of_ms(system_time_ms());
    let good = [
        record(1, "informazioni", "066032", week),
        record(2, "informazioni", "066006", week),
    ];
    let mut forbidden = record(3, "informazioni", "066032", week).encode_to_vec();
    let name = b"Mario Rossi";
    forbidden.push((12 << 3) | 2);
    forbidden.push(name.len() as u8);
    forbidden.extend_from_slice(name);
    let outside = record(4, "informazioni", "072006", week); // Bari, Puglia
    let mut future = record(5, "informazioni", "066032", week);
    future.week = add_weeks(week, 2).expect("week");
    let batch = vec![
        good[0].encode_to_vec(),
        forbidden,
        outside.encode_to_vec(),
        b"\xff\xff garbage".to_vec(),
        future.encode_to_vec(),
        good[1].encode_to_vec(),
    ];
    let mut client = ArchiveClient::new(registry.channel(&material));
    let r = client
        .push_archive(PushArchiveRequest {
            batch: Some(signed_batch(&signer, batch.clone())),
        })
        .await
        .expect("a batch with bad records is answered")
        .into_inner();
    assert_eq!((r.accepted, r.duplicates), (2, 0));
    let reasons: Vec<(u32, &str)> = r
        .refused
        .iter()
        .map(|x| (x.index, x.reason.as_str()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            (1, "forbidden_field"),
            (2, "territory_outside"),
            (3, "undecodable"),
            (4, "invalid")
        ]
    );
    assert!(
        r.refused[3].detail.starts_with("week:"),
        "{:?}",
        r.refused[3]
    );
    // The same batch again: the good ones are duplicates.
    let again = client
        .push_archive(PushArchiveRequest {
            batch: Some(signed_batch(&signer, batch)),
        })
        .await
        .expect("again")
        .into_inner();
    assert_eq!((again.accepted, again.duplicates), (0, 2));

    // A bad signature: signed by another key under Celano's name.
    let forger = NodeSigner::generate(urpnet_proto::ids::NodeId::new(CELANO.id).expect("id"));
    let more = vec![record(10, "informazioni", "066032", week).encode_to_vec()];
    let err = client
        .push_archive(PushArchiveRequest {
            batch: Some(signed_batch(&forger, more.clone())),
        })
        .await
        .expect_err("forged");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("batch.signature"),
        "{}",
        err.message()
    );
    // Another member's batch sent over Celano's connection.
    let err = client
        .push_archive(PushArchiveRequest {
            batch: Some(signed_batch(&other_signer, more.clone())),
        })
        .await
        .expect_err("not the caller's");
    assert_eq!(err.code(), Code::PermissionDenied);
    // The wrong kind.
    let mut wrong = signed_batch(&signer, more.clone());
    wrong = signer.sign(PayloadKind::FaqVersion, wrong.payload);
    let err = client
        .push_archive(PushArchiveRequest { batch: Some(wrong) })
        .await
        .expect_err("kind");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("batch.kind"), "{}", err.message());
    // A non-member with a certificate of the federation CA.
    let (issued, key_pem) = registry
        .ca()
        .issue(&urpnet_proto::tls::CertRequest {
            identity: urpnet_proto::tls::Identity::Node(
                urpnet_proto::ids::NodeId::new("c_a662").expect("id"),
            ),
            hosts: Vec::new(),
            validity: Duration::from_secs(3600),
            not_before: None,
        })
        .expect("issue");
    let stranger = urpnet_proto::tls::TlsMaterial {
        cert_pem: issued.certificate_pem,
        key_pem,
        ca_pem: registry.ca().cert_pem().to_owned(),
    };
    let stranger_signer =
        NodeSigner::generate(urpnet_proto::ids::NodeId::new("c_a662").expect("id"));
    let err = push(
        &registry,
        &stranger,
        &stranger_signer,
        &[record(11, "informazioni", "072006", week)],
    )
    .await
    .expect_err("non-member");
    assert_eq!(err.code(), Code::PermissionDenied);
    // Avezzano's own good batch goes through.
    let r = push(
        &registry,
        &other_material,
        &other_signer,
        &[record(12, "informazioni", "066006", week)],
    )
    .await
    .expect("avezzano");
    assert_eq!(r.accepted, 1);

    let s = stats(&admin).await.expect("stats");
    assert_eq!(s.records, 3, "only the good records are stored");
    let celano = s
        .sources
        .iter()
        .find(|x| x.member == CELANO.id)
        .expect("celano");
    assert_eq!(celano.records, 2);
    assert_eq!(
        celano.refused,
        4 + 4 + 3,
        "two batches of 4 bad records, 3 bad batches"
    );
    let m = registry.metrics().await;
    for (reason, at_least) in [
        ("forbidden_field", 2.0),
        ("territory_outside", 2.0),
        ("undecodable", 2.0),
        ("bad_signature", 1.0),
        ("wrong_author", 1.0),
        ("wrong_kind", 1.0),
    ] {
        let n = counter(
            &m,
            &format!("urpnet_archive_refused_total{{reason=\"{reason}\"}}"),
        );
        assert!(n >= at_least, "{reason}: {n}");
    }
    assert!(counter(&m, "urpnet_registry_refused_total{reason=\"not_a_member\"}") >= 1.0);

    // Queries: every rule names its field.
    for (req, field) in [
        (ArchiveQueryRequest::default(), "group_by"),
        (by(&[Dimension::Week, Dimension::Week]), "group_by"),
        (
            ArchiveQueryRequest {
                k: 2,
                ..by(&[Dimension::Category])
            },
            "k",
        ),
        (
            ArchiveQueryRequest {
                filter: Some(ArchiveFilter {
                    territory: "99".into(),
                    ..Default::default()
                }),
                ..by(&[Dimension::Category])
            },
            "filter.territory",
        ),
        (
            ArchiveQueryRequest {
                filter: Some(ArchiveFilter {
                    week_from: 202660,
                    ..Default::default()
                }),
                ..by(&[Dimension::Category])
            },
            "filter.week_from",
        ),
    ] {
        let err = query(&admin, req).await.expect_err(field);
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains(field), "{field}: {}", err.message());
    }
    registry.stop().await;
}

/// Differencing across overlapping filters (issue 19): a coordinator asks
/// for two weeks, then for the first alone, and subtracts. Every cell is
/// shown in both answers, so suppression has nothing to hide; without
/// noise the difference would be each cell's exact count of the second
/// week, all of them small. With cell-key noise the same question gives the
/// same answer every time, yet the difference is the true count for only a
/// minority of cells, and the attacker cannot tell which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_queries_do_not_give_away_the_records_between_them() {
    let Some(registry) = TestRegistry::start(Backend::Sqlite, "overlapping").await else {
        return;
    };
    let (material, signer) = registry.enrol("r_abruzz", Level::Regione, &["13"]).await;
    let second = week_of_ms(system_time_ms());
    let first = add_weeks(second, -1).expect("week");
    let mut small: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut records = Vec::new();
    let mut seed = 500_000;
    for (i, c) in CATEGORIES.iter().enumerate() {
        for (j, t) in COMUNI.iter().enumerate() {
            let (many, few) = (6 + ((i * 7 + j * 3) % 15) as u64, 1 + ((i + j) % 4) as u64);
            for n in 0..many + few {
                seed += 1;
                records.push(record(seed, c, t, if n < many { first } else { second }));
            }
            small.insert((c.to_string(), t.to_string()), few);
        }
    }
    for chunk in records.chunks(500) {
        push(&registry, &material, &signer, chunk)
            .await
            .expect("push");
    }
    let admin = admin(&registry);
    let weeks = |from, to| ArchiveQueryRequest {
        filter: Some(ArchiveFilter {
            week_from: from,
            week_to: to,
            ..Default::default()
        }),
        ..by(&[Dimension::Category, Dimension::Territory])
    };
    let both = query(&admin, weeks(first, second)).await.expect("both");
    let again = query(&admin, weeks(first, second)).await.expect("again");
    assert_eq!(
        both.cells, again.cells,
        "asking again averages nothing away"
    );
    let one = query(&admin, weeks(first, first)).await.expect("first");
    let shown = |r: &urpnet_proto::v1::ArchiveQueryResponse| -> BTreeMap<(String, String), u64> {
        r.cells
            .iter()
            .filter(|c| c.suppressed.is_empty())
            .map(|c| ((c.keys[0].clone(), c.keys[1].clone()), c.count))
            .collect()
    };
    let (both, one) = (shown(&both), shown(&one));
    let mut compared = 0;
    let mut exact = 0;
    for (cell, few) in &small {
        if let (Some(a), Some(b)) = (both.get(cell), one.get(cell)) {
            compared += 1;
            if a.checked_sub(*b) == Some(*few) {
                exact += 1;
            }
        }
    }
    assert_eq!(compared, small.len(), "every cell is shown in both answers");
    assert!(
        exact * 2 < compared,
        "the difference gives the exact count for {exact} of {compared} cells"
    );
    eprintln!("differencing across overlapping weeks: exact for {exact} of {compared} cells");
    registry.stop().await;
}

/// The differencing attack: knowing every published cell and every total a
/// coordinator can obtain (the table, its row and column totals from the
/// one-dimension queries, the grand total), bound each suppressed cell by
/// propagating line sums until nothing changes. No suppressed cell may end
/// with its value pinned. The attacker is given the true values of what is
/// published, as if there were no noise: suppression must hold alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_cells_resist_differencing() {
    let Some(registry) = TestRegistry::start(Backend::Sqlite, "published_cells").await else {
        return;
    };
    let (material, signer) = registry.enrol("r_abruzz", Level::Regione, &["13"]).await;
    let week = week_of_ms(system_time_ms());
    // Twelve Abruzzo comuni x six categories with counts from 0 to 20,
    // many of them small (seeded, so a failure repeats).
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut truth: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut records = Vec::new();
    let mut seed = 0;
    for c in CATEGORIES {
        for t in COMUNI {
            let n = match next() % 4 {
                0 => 0,
                1 => 1 + next() % 4,
                _ => next() % 21,
            };
            for _ in 0..n {
                seed += 1;
                records.push(record(seed, c, t, week));
            }
            if n > 0 {
                truth.insert((c.to_string(), t.to_string()), n);
            }
        }
    }
    for chunk in records.chunks(500) {
        push(&registry, &material, &signer, chunk)
            .await
            .expect("push");
    }
    let admin = admin(&registry);
    let table = query(&admin, by(&[Dimension::Category, Dimension::Territory]))
        .await
        .expect("table");
    let k = u64::from(table.k);
    assert_eq!(k, 5);
    let rows = query(&admin, by(&[Dimension::Category]))
        .await
        .expect("rows");
    let cols = query(&admin, by(&[Dimension::Territory]))
        .await
        .expect("cols");
    // Published cells are never under k, and match the truth.
    let mut hidden: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    let mut known: BTreeMap<(String, String), u64> = BTreeMap::new();
    for c in &table.cells {
        let key = (c.keys[0].clone(), c.keys[1].clone());
        if c.suppressed.is_empty() {
            near(c.count, truth[&key], k);
            known.insert(key.clone(), truth[&key]);
        } else {
            assert_eq!(c.count, 0, "a suppressed cell shows no count");
            hidden.insert(key, (1, u64::MAX));
        }
    }
    assert!(
        table.suppressed_small > 5,
        "the data has small cells: {table:?}"
    );
    assert!(
        table.suppressed_complementary > 0,
        "and needs complementary suppression"
    );
    // Line totals the attacker holds (only those published: >= k).
    let mut lines: Vec<(Vec<(String, String)>, u64)> = Vec::new();
    for (result, dim) in [(&rows, 0usize), (&cols, 1usize)] {
        for cell in result.cells.iter().filter(|c| c.suppressed.is_empty()) {
            let members: Vec<_> = truth
                .keys()
                .filter(|key| {
                    if dim == 0 {
                        key.0 == cell.keys[0]
                    } else {
                        key.1 == cell.keys[0]
                    }
                })
                .cloned()
                .collect();
            let sum = members.iter().map(|m| truth[m]).sum();
            near(cell.count, sum, k);
            lines.push((members, sum));
        }
    }
    let grand: u64 = truth.values().sum();
    near(table.total, grand, k);
    lines.push((truth.keys().cloned().collect(), grand));
    // Bounds propagation to a fixed point.
    loop {
        let mut changed = false;
        for (members, total) in &lines {
            let published: u64 = members.iter().filter_map(|m| known.get(m)).sum();
            let unknown: Vec<_> = members.iter().filter(|m| hidden.contains_key(*m)).collect();
            let rest = total - published;
            for m in &unknown {
                let others_lo: u64 = unknown
                    .iter()
                    .filter(|o| *o != m)
                    .map(|o| hidden[*o].0)
                    .sum();
                let others_hi: u64 = unknown
                    .iter()
                    .filter(|o| *o != m)
                    .map(|o| hidden[*o].1)
                    .fold(0u64, u64::saturating_add);
                let (lo, hi) = hidden[*m];
                let new_hi = hi.min(rest.saturating_sub(others_lo));
                let new_lo = lo.max(rest.saturating_sub(others_hi));
                if (new_lo, new_hi) != (lo, hi) {
                    hidden.insert((*m).clone(), (new_lo, new_hi));
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    for (cell, (lo, hi)) in &hidden {
        assert!(lo < hi, "{cell:?} is pinned to {lo}..={hi} by differencing");
        assert!((*lo..=*hi).contains(&truth[cell]), "bounds hold the truth");
    }

    // l-diversity: a comune whose records all share one outcome shows `*`.
    let mut all_rejected = Vec::new();
    for i in 0..6u64 {
        let mut r = record(100_000 + i, "informazioni", "066001", week);
        r.outcome = urpnet_proto::v1::Outcome::Rejected as i32;
        all_rejected.push(r);
    }
    push(&registry, &material, &signer, &all_rejected)
        .await
        .expect("push");
    let r = query(
        &admin,
        ArchiveQueryRequest {
            level: TerritoryLevel::Comune as i32,
            ..by(&[Dimension::Territory, Dimension::Outcome])
        },
    )
    .await
    .expect("query");
    let acciano: Vec<_> = r.cells.iter().filter(|c| c.keys[0] == "066001").collect();
    assert_eq!(acciano.len(), 1, "{acciano:?}");
    assert_eq!(acciano[0].keys[1].as_str(), "*");
    near(acciano[0].count, 6, u64::from(r.k));
    assert!(r.generalised_l_diversity >= 1);
    let territories: BTreeSet<_> = r.cells.iter().map(|c| c.keys[0].clone()).collect();
    assert!(territories.len() >= 12);
    registry.stop().await;
}

async fn a_regional_registry_replicates_upward_without_duplicates(backend: Backend, test: &str) {
    let Some(national) = TestRegistry::start(backend, &format!("{test}_national")).await else {
        return;
    };
    let Some((dir, mut regional_config)) =
        TestRegistry::config(Backend::Sqlite, &format!("{test}_regional")).await
    else {
        return;
    };
    // The regional registry's identity at the national one.
    let data_dir = regional_config.registry.data_dir.clone();
    std::fs::create_dir_all(&data_dir).expect("data dir");
    let made = urpnet_registry::archive::upstream::init(&data_dir, "r_abruzz").expect("init");
    let csr_pem = std::fs::read_to_string(&made.csr).expect("csr");
    let key_hex = std::fs::read_to_string(&made.signing_public).expect("pub");
    let enrolled = national
        .admin()
        .enrol(EnrolRequest {
            id: "r_abruzz".into(),
            display_name: "Regione Abruzzo".into(),
            level: Level::Regione as i32,
            territory: vec!["13".into()],
            endpoint: "https://127.0.0.1:7500".into(),
            signing_key: hex_decode(key_hex.trim()),
            csr_pem,
        })
        .await
        .expect("enrol the region")
        .into_inner();
    let up = urpnet_registry::archive::upstream::dir(&data_dir);
    std::fs::write(up.join("cert.pem"), enrolled.certificate_pem).expect("cert");
    std::fs::write(up.join("ca.pem"), enrolled.ca_pem).expect("ca");
    regional_config.upstream.endpoint = national.endpoint();
    regional_config.upstream.member_id = "r_abruzz".into();
    regional_config.upstream.interval = Duration::from_millis(100);
    regional_config.upstream.batch = 50;
    let regional = TestRegistry::start_with(regional_config.clone(), Some(dir)).await;
    let (material, signer) = regional.enrol(CELANO.id, Level::Comune, &["066032"]).await;
    let week = week_of_ms(system_time_ms());
    let first: Vec<_> = (0..120)
        .map(|i| record(i, "informazioni", "066032", week))
        .collect();
    push(&regional, &material, &signer, &first)
        .await
        .expect("push");
    let national_admin = admin(&national);
    wait_records(&national_admin, 120, Duration::from_secs(30)).await;
    // Restart the regional registry; the cursor is durable. New records and
    // a re-sent old batch arrive; the national archive is the union.
    let dir = regional.stop_keep_dir().await;
    let regional = TestRegistry::start_with(regional_config, dir).await;
    let second: Vec<_> = (100..180)
        .map(|i| record(i, "informazioni", "066032", week))
        .collect();
    let r = push(&regional, &material, &signer, &second)
        .await
        .expect("push");
    assert_eq!((r.accepted, r.duplicates), (60, 20));
    let s = wait_records(&national_admin, 180, Duration::from_secs(30)).await;
    let sources: Vec<_> = s
        .sources
        .iter()
        .map(|x| (x.member.as_str(), x.records))
        .collect();
    assert_eq!(sources, vec![("r_abruzz", 180)]);
    let regional_stats = wait_for("upstream caught up", Duration::from_secs(10), || async {
        stats(&admin(&regional))
            .await
            .filter(|s| s.upstream_pending == 0 && s.upstream_sent >= 180)
    })
    .await;
    assert!(
        regional_stats.upstream_error.is_empty(),
        "{regional_stats:?}"
    );
    regional.stop().await;
    national.stop().await;
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Kill -9 of a node while it pushes, then of the registry while it
/// ingests: after restarts the archive holds every record exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_replication_loses_and_doubles_nothing() {
    use urpnet_tests::ProcessNode;
    use urpnet_tests::archive::ProcessRegistry;
    let Some((rdir, rconfig)) = TestRegistry::config(Backend::Sqlite, "kill9_registry").await
    else {
        return;
    };
    let registry = ProcessRegistry::start(&rconfig).await;
    let admin = registry.admin();
    let mut admin_rpc = urpnet_proto::v1::registry_admin_client::RegistryAdminClient::new(
        registry.coordinator_channel(),
    );
    admin_rpc
        .import_taxonomy(urpnet_proto::v1::ImportTaxonomyRequest {
            toml: urpnet_tests::federation::SAMPLE_TAXONOMY.into(),
        })
        .await
        .expect("taxonomy");
    // The node as a child process, pushing two records per batch.
    let (ndir, mut config) = urpnet_tests::node_config(CELANO.id, Backend::Sqlite, "kill9_node")
        .await
        .expect("config");
    config.archive.batch = 2;
    config.archive.interval = Duration::from_secs(3600);
    urpnet_examples::federation::enrol_node(
        &mut admin_rpc,
        &registry.endpoint(),
        &mut config,
        Level::Comune,
        &["066032"],
    )
    .await
    .expect("enrol");
    let node = ProcessNode::start(&config).await;
    let total = 240u64;
    close_tickets(&mut node.desk().await, total as usize, "informazioni").await;
    // Push everything now, and kill the node part-way.
    let sync = {
        let mut desk = archive_desk(&node.desk_addr.to_string(), &node.token).await;
        tokio::spawn(async move {
            let _ = desk.sync_archive(ArchiveStatusRequest {}).await;
        })
    };
    let seen = wait_for(
        "some records at the registry",
        Duration::from_secs(30),
        || async { stats(&admin).await.map(|s| s.records).filter(|n| *n >= 20) },
    )
    .await;
    node.kill9().await;
    sync.abort();
    let at_kill = stats(&admin).await.expect("stats").records;
    assert!(
        seen < total && at_kill < total,
        "killed mid-way ({at_kill} of {total})"
    );

    // Restart it with a short interval: it resumes from its cursor.
    config.archive.interval = Duration::from_millis(50);
    let node = ProcessNode::start(&config).await;
    // Kill the registry while the node pushes the rest.
    wait_for(
        "more records after the restart",
        Duration::from_secs(30),
        || async {
            stats(&admin)
                .await
                .filter(|s| s.records > at_kill || s.records == total)
        },
    )
    .await;
    let rconfig = registry.kill9().await;
    let registry = ProcessRegistry::start(&rconfig).await;
    let admin = registry.admin();
    let s = wait_records(&admin, total, Duration::from_secs(60)).await;
    assert_eq!(s.sources[0].records, total);
    // The rollup and the records agree: nothing counted twice.
    // (records by outcome, rollup by category: the same records, so the
    // same total with the same noise.)
    let by_outcome = query(&admin, by(&[Dimension::Outcome]))
        .await
        .expect("query");
    let by_category = query(&admin, by(&[Dimension::Category]))
        .await
        .expect("query");
    near(by_outcome.total, total, u64::from(by_outcome.k));
    assert_eq!(by_outcome.total, by_category.total);
    let rows: i64 = {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(&rconfig.database_url())
            .await
            .expect("db");
        let n = sqlx::query("SELECT COUNT(*) FROM archive_records")
            .fetch_one(&pool)
            .await
            .expect("count")
            .get(0);
        pool.close().await;
        n
    };
    assert_eq!(rows as u64, total);
    drop(node);
    drop(ndir);
    drop(rdir);
}

async fn archive_desk(addr: &str, token: &str) -> urpnet_node::cli::archive::ArchiveDesk {
    let (channel, interceptor) = urpnet_node::cli::channel_with_token(addr, token)
        .await
        .expect("connect");
    ArchiveDeskClient::with_interceptor(channel, interceptor)
}

async fn acknowledged_records_leave_the_outbox_and_stay_counted(backend: Backend, test: &str) {
    let Some(fed) = TestFederation::start(backend, test, &[CELANO], |c| {
        c.archive.interval = Duration::from_millis(100);
        // Acknowledged records leave at once.
        c.archive.keep_sent = Duration::ZERO;
    })
    .await
    else {
        return;
    };
    let admin = admin(&fed.registry);
    close_tickets(
        &mut fed.node(CELANO.id).desk().await,
        6,
        "anagrafe.residenza",
    )
    .await;
    wait_records(&admin, 6, Duration::from_secs(30)).await;
    let node = fed.node(CELANO.id);
    let desk = archive_desk(&node.desk_addr.to_string(), &node.token).await;
    wait_for("the outbox pruned", Duration::from_secs(30), || {
        let mut desk = desk.clone();
        let url = node.config.database_url();
        async move {
            let s = desk
                .archive_status(ArchiveStatusRequest {})
                .await
                .ok()?
                .into_inner();
            let held = outbox_records(&url).await.len();
            // Made and sent stay truthful after the rows are gone.
            (held == 0 && (s.made, s.sent, s.pending) == (6, 6, 0)).then_some(())
        }
    })
    .await;
    assert_eq!(stats(&admin).await.expect("stats").records, 6);
}
