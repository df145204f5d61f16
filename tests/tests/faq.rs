//! The shared FAQ set between real nodes and a real registry, in-process on
//! loopback with mutual TLS: an entry published at the Region is found by a
//! search at both comuni; revisions and retirements follow; only the owner
//! publishes; a local override stays local; a proposal becomes a ticket
//! offered to the owner; `suggest` answers a ticket; the search index is
//! rebuilt when missing or damaged.

use std::time::Duration;

use tonic::Code;
use urpnet_proto::v1::{
    FaqContent, GetFaqRequest, ListOffersRequest, ProposeFaqChangeRequest, PublishFaqRequest,
    RetireFaqRequest, ReviseFaqRequest, SearchFaqRequest, SetFaqOverrideRequest, SuggestFaqRequest,
};
use urpnet_tests::federation::{ABRUZZO, AVEZZANO, CELANO, TestFederation};
use urpnet_tests::shared::{
    DEADLINE, create, faq_status, publish, request, sample_faqs, search, wait_found,
};
use urpnet_tests::{Backend, wait_for};

urpnet_tests::on_both_backends!(
    an_faq_published_at_the_region_is_found_revised_and_retired_at_every_comune,
);

fn fast(config: &mut urpnet_node::NodeConfig) {
    config.faq.interval = Duration::from_millis(200);
}

async fn an_faq_published_at_the_region_is_found_revised_and_retired_at_every_comune(
    backend: Backend,
    test: &str,
) {
    let Some(mut fed) =
        TestFederation::start(backend, test, &[CELANO, ABRUZZO, AVEZZANO], fast).await
    else {
        eprintln!("{test}: skipped (no PostgreSQL URL)");
        return;
    };
    let mut region = fed.node(ABRUZZO.id).faq().await;
    let celano = fed.node(CELANO.id).faq().await;
    let avezzano = fed.node(AVEZZANO.id).faq().await;

    // The Region publishes its sample FAQs.
    let regional = sample_faqs("regione");
    let mut keys = Vec::new();
    for content in regional.clone() {
        keys.push(publish(&mut region, content).await);
    }
    let booking = keys[0].clone();
    assert!(booking.starts_with("r_abruzz/"), "{booking}");
    assert_eq!(
        regional[0].categories,
        ["sanita.prenotazioni"],
        "the sample's first regional entry is about bookings"
    );

    // Both comuni find it by searching in their own words: stemming
    // ("prenotare" / "prenoto"), a typo ("specilistica"), no accents.
    for comune in [&celano, &avezzano] {
        let hit = wait_found(comune, "prenotare visita specilistica", &booking, 1).await;
        assert!(hit.snippet.contains("**"), "highlighted: {}", hit.snippet);
        assert_eq!(hit.owner, ABRUZZO.id);
    }
    // Every regional entry arrives everywhere, with equal sets.
    let root = faq_status(&region).await.expect("status").root;
    for comune in [&celano, &avezzano] {
        wait_for("equal FAQ sets", DEADLINE, || {
            let comune = comune.clone();
            let root = root.clone();
            async move { (faq_status(&comune).await?.root == root).then_some(()) }
        })
        .await;
    }
    let status = faq_status(&celano).await.expect("status");
    assert_eq!(status.origins.len(), 1);
    assert_eq!(status.origins[0].entries as usize, regional.len());
    assert_eq!(status.indexed as usize, regional.len());

    // Only the owner publishes versions.
    let denied = celano
        .clone()
        .revise_faq(ReviseFaqRequest {
            key: booking.clone(),
            base_version: 1,
            content: Some(regional[0].clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");

    // The Region revises it: version 2 replaces version 1 everywhere.
    let mut revised = regional[0].clone();
    revised
        .answer
        .push_str("\n\nDal 2027 si prenota anche con l'app regionale *Salute Abruzzo*.");
    let v2 = region
        .revise_faq(ReviseFaqRequest {
            key: booking.clone(),
            base_version: 1,
            content: Some(revised.clone()),
        })
        .await
        .expect("revise")
        .into_inner();
    assert_eq!(v2.entry.unwrap().current.unwrap().version, 2);
    // A revision against a stale version is refused.
    let stale = region
        .revise_faq(ReviseFaqRequest {
            key: booking.clone(),
            base_version: 1,
            content: Some(revised.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition, "{stale:?}");
    for comune in [&celano, &avezzano] {
        wait_found(comune, "app Salute Abruzzo", &booking, 2).await;
    }

    // Celano pins a local wording; Avezzano and the Region keep the shared one.
    let mut local = revised.clone();
    local.answer =
        "A Celano il CUP è anche allo sportello del Distretto sanitario, il martedì mattina."
            .into();
    let mut celano_w = celano.clone();
    celano_w
        .set_faq_override(SetFaqOverrideRequest {
            key: booking.clone(),
            content: Some(local),
            reason: "sportello CUP locale".into(),
            clear: false,
        })
        .await
        .expect("override");
    let hit = search(&celano, "distretto martedì")
        .await
        .expect("search")
        .hits
        .into_iter()
        .find(|h| h.key == booking)
        .expect("the override is searchable at Celano");
    assert!(hit.overridden);
    let at_avezzano = search(&avezzano, "distretto martedì")
        .await
        .expect("search");
    assert!(at_avezzano.hits.iter().all(|h| h.key != booking));
    let shared = region
        .get_faq(GetFaqRequest {
            key: booking.clone(),
        })
        .await
        .expect("get")
        .into_inner();
    assert!(shared.entry.unwrap().local_override.is_none());

    // Celano proposes a change: a ticket offered to the Region.
    let proposal = celano_w
        .propose_faq_change(ProposeFaqChangeRequest {
            key: booking.clone(),
            proposal: "Aggiungere il numero verde del CUP regionale.".into(),
            istat_code: String::new(),
        })
        .await
        .expect("propose")
        .into_inner();
    let region_desk = fed.node(ABRUZZO.id).desk().await;
    wait_for("the proposal in the Region's inbox", DEADLINE, || {
        let mut desk = region_desk.clone();
        let id = proposal.ticket_id.clone();
        async move {
            let offers = desk
                .list_offers(ListOffersRequest::default())
                .await
                .ok()?
                .into_inner();
            offers
                .incoming
                .iter()
                .any(|o| o.ticket.as_ref().is_some_and(|t| t.id == id))
                .then_some(())
        }
    })
    .await;
    // Proposing a change to one's own entry is refused.
    let own = region
        .propose_faq_change(ProposeFaqChangeRequest {
            key: booking.clone(),
            proposal: "x".into(),
            istat_code: "066032".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(own.code(), Code::FailedPrecondition, "{own:?}");

    // `suggest` answers a citizen's ticket at Avezzano from the shared set.
    let mut avezzano_desk = fed.node(AVEZZANO.id).desk().await;
    let mut req = request("sanita.prenotazioni", false);
    req.subject = "Prenotazione esame".into();
    req.description = "Il medico mi ha dato la ricetta per un esame: dove lo prenoto?".into();
    req.location.as_mut().unwrap().istat_code = "066006".into();
    let ticket = create(&mut avezzano_desk, req).await;
    let suggested = avezzano
        .clone()
        .suggest_faq(SuggestFaqRequest {
            ticket: ticket.reference.clone(),
            limit: 3,
            ..Default::default()
        })
        .await
        .expect("suggest")
        .into_inner();
    assert_eq!(
        suggested.hits.first().map(|h| h.key.as_str()),
        Some(booking.as_str())
    );

    // The Region retires it: gone from searches everywhere, shown when asked.
    region
        .retire_faq(RetireFaqRequest {
            key: booking.clone(),
        })
        .await
        .expect("retire");
    for comune in [&celano, &avezzano] {
        wait_for("the retirement everywhere", DEADLINE, || {
            let comune = comune.clone();
            let booking = booking.clone();
            async move {
                let all = comune
                    .clone()
                    .search_faq(SearchFaqRequest {
                        // A tombstone has no text: list, do not search.
                        query: String::new(),
                        include_retired: true,
                        limit: 100,
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner();
                all.hits
                    .iter()
                    .any(|h| h.key == booking && h.retired && h.version == 3)
                    .then_some(())
            }
        })
        .await;
        let live = search(comune, "prenotare visita").await.expect("search");
        assert!(live.hits.iter().all(|h| h.key != booking));
    }
    // The owner holds every version; a retired entry cannot be revised.
    let history = region
        .get_faq(GetFaqRequest {
            key: booking.clone(),
        })
        .await
        .expect("get")
        .into_inner()
        .history;
    assert_eq!(
        history.iter().map(|v| v.version).collect::<Vec<_>>(),
        [3, 2, 1]
    );
    assert!(history[0].retired);
    let err = region
        .revise_faq(ReviseFaqRequest {
            key: booking.clone(),
            base_version: 0,
            content: Some(revised),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);

    // The search index is a cache: deleted (or damaged) while Celano is
    // down, it is rebuilt from the store at start, override included.
    let root = faq_status(&celano).await.expect("status").root;
    fed.restart(CELANO.id, |config| {
        let dir = urpnet_node::faq::index_dir(&config.node.data_dir);
        std::fs::remove_dir_all(&dir).expect("remove the index");
    })
    .await;
    let celano = fed.node(CELANO.id).faq().await;
    let status = faq_status(&celano).await.expect("status");
    assert_eq!(status.root, root);
    assert_eq!(status.indexed as usize, regional.len());
    assert_eq!(status.overrides, 1);
    let second = keys[1].clone();
    let hit = search(&celano, "cambiare medico famiglia")
        .await
        .expect("search");
    assert_eq!(
        hit.hits.first().map(|h| h.key.as_str()),
        Some(second.as_str())
    );
    fed.restart(CELANO.id, |config| {
        let dir = urpnet_node::faq::index_dir(&config.node.data_dir);
        std::fs::write(dir.join("meta.json"), b"{ not json").expect("damage the index");
    })
    .await;
    let celano = fed.node(CELANO.id).faq().await;
    let hit = search(&celano, "cambiare medico famiglia")
        .await
        .expect("search");
    assert_eq!(
        hit.hits.first().map(|h| h.key.as_str()),
        Some(second.as_str())
    );

    // A stale index (an old copy put back, as a restored backup would) is
    // rebuilt too: its marker is not the store's.
    let saved = tempfile::tempdir().expect("temp dir");
    let saved_path = saved.path().to_path_buf();
    let copy_dir = |from: &std::path::Path, to: &std::path::Path| {
        std::fs::create_dir_all(to).expect("mkdir");
        for f in std::fs::read_dir(from).expect("read index dir") {
            let f = f.expect("entry");
            std::fs::copy(f.path(), to.join(f.file_name())).expect("copy");
        }
    };
    fed.restart(CELANO.id, |config| {
        copy_dir(
            &urpnet_node::faq::index_dir(&config.node.data_dir),
            &saved_path,
        )
    })
    .await;
    let mut late = regional[1].clone();
    late.question = "Come si rinnova l'esenzione per i disoccupati?".into();
    let late_key = publish(&mut region, late).await;
    let celano = fed.node(CELANO.id).faq().await;
    wait_found(&celano, "rinnova esenzione disoccupati", &late_key, 1).await;
    fed.restart(CELANO.id, |config| {
        let dir = urpnet_node::faq::index_dir(&config.node.data_dir);
        std::fs::remove_dir_all(&dir).expect("remove the index");
        copy_dir(&saved_path, &dir);
    })
    .await;
    let celano = fed.node(CELANO.id).faq().await;
    let found = search(&celano, "rinnova esenzione disoccupati")
        .await
        .expect("search");
    assert_eq!(
        found.hits.first().map(|h| h.key.as_str()),
        Some(late_key.as_str()),
        "found at once after start: the stale index was rebuilt"
    );
}

#[tokio::test]
async fn bad_entries_and_odd_queries_get_clear_answers() {
    let Some(fed) = TestFederation::start(Backend::Sqlite, "faq_bad_input", &[CELANO], fast).await
    else {
        return;
    };
    let mut celano = fed.node(CELANO.id).faq().await;
    let good = sample_faqs("comune")[0].clone();
    let key = publish(&mut celano, good.clone()).await;

    let refused = |content: FaqContent| {
        let mut celano = celano.clone();
        async move {
            let err = celano
                .publish_faq(PublishFaqRequest {
                    content: Some(content),
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
            err.message().to_string()
        }
    };
    let mut c = good.clone();
    c.question = "?".into();
    assert!(refused(c).await.contains("content.question"));
    let mut c = good.clone();
    c.categories = vec!["astrologia".into()];
    assert!(refused(c).await.contains("content.categories[0]"));
    let mut c = good.clone();
    c.territory = vec!["999".into()];
    assert!(refused(c).await.contains("content.territory[0]"));
    let mut c = good.clone();
    c.answer = "x".repeat(20_001);
    assert!(refused(c).await.contains("content.answer"));
    let mut c = good.clone();
    c.valid_from = "2027-01-01".into();
    c.valid_until = "2026-01-01".into();
    assert!(refused(c).await.contains("content.valid_until"));
    let none = celano
        .publish_faq(PublishFaqRequest::default())
        .await
        .unwrap_err();
    assert!(none.message().contains("content"), "{none:?}");
    // An oversized request never reaches the handler.
    let mut c = good.clone();
    c.answer = "x".repeat(20 * 1024 * 1024);
    let err = celano
        .publish_faq(PublishFaqRequest {
            content: Some(c),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            err.code(),
            Code::OutOfRange | Code::ResourceExhausted | Code::InvalidArgument
        ),
        "{err:?}"
    );
    // Nothing bad was stored; the good entry is still there.
    let status = faq_status(&celano).await.expect("status");
    assert_eq!(status.origins[0].entries, 1);

    // Queries: operators, quotes, empty, odd characters: results, not errors.
    for q in [
        "",
        "\"",
        "\"carta d'identità\"",
        "carta -passaporto",
        "AND OR NOT ( ) [ ] { } ^ ~ * ? : \\ /",
        "title:cie^3",
        "\u{0}\u{7f}",
        "ççç ñ 🙂",
    ] {
        let r = search(&celano, q).await;
        assert!(r.is_ok(), "{q:?}: {r:?}");
    }
    let found = search(&celano, "\"carta d'identità\"")
        .await
        .expect("search");
    assert_eq!(
        found.hits.first().map(|h| h.key.as_str()),
        Some(key.as_str())
    );
    let listed = search(&celano, "").await.expect("search");
    assert_eq!(listed.total, 1, "an empty query lists every entry");
    // Too long, bad filters, bad limits: INVALID_ARGUMENT naming the field.
    let err = search(&celano, &"parola ".repeat(100)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("query"), "{err:?}");
    for (req, field) in [
        (
            SearchFaqRequest {
                territory: "12345".into(),
                ..Default::default()
            },
            "territory",
        ),
        (
            SearchFaqRequest {
                category: "A B".into(),
                ..Default::default()
            },
            "category",
        ),
        (
            SearchFaqRequest {
                language: "ita".into(),
                ..Default::default()
            },
            "language",
        ),
        (
            SearchFaqRequest {
                valid_on: "domani".into(),
                ..Default::default()
            },
            "valid_on",
        ),
        (
            SearchFaqRequest {
                limit: 1000,
                ..Default::default()
            },
            "limit",
        ),
    ] {
        let err = celano.clone().search_faq(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().contains(field), "{field}: {err:?}");
    }
    let err = celano
        .suggest_faq(SuggestFaqRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = celano
        .get_faq(GetFaqRequest {
            key: "nonsense".into(),
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("key"), "{err:?}");
    let err = celano
        .get_faq(GetFaqRequest {
            key: "c_c426/01JD3Q5Z8W2N4V6X7Y9A0B1C2D".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    // A publish with a request id is idempotent: a retry returns the entry
    // the first call made; the same id with other content is refused.
    let again = |request_id: &str, content: FaqContent| {
        let mut celano = celano.clone();
        let request_id = request_id.to_string();
        async move {
            celano
                .publish_faq(PublishFaqRequest {
                    content: Some(content),
                    request_id,
                })
                .await
                .map(|r| r.into_inner().entry.expect("entry").key)
        }
    };
    let other = sample_faqs("comune")[1].clone();
    let first = again("retry-publish-1", other.clone())
        .await
        .expect("publish");
    let second = again("retry-publish-1", other.clone())
        .await
        .expect("retry");
    assert_eq!(first, second);
    let mut changed = other.clone();
    changed.answer.push_str(" Altro.");
    let err = again("retry-publish-1", changed).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    let err = again("x", other).await.unwrap_err();
    assert!(err.message().contains("request_id"), "{err:?}");
    let status = faq_status(&celano).await.expect("status");
    assert_eq!(
        status.origins[0].entries, 2,
        "one entry for the retried publish"
    );

    // A read-only operator may search but not publish.
    let node = fed.node(CELANO.id);
    let (store, writer) = urpnet_node::server::open_store(&node.config).await.unwrap();
    let (_, reader) = urpnet_node::auth::add_operator(
        &store,
        "cruscotto",
        urpnet_node::auth::Role::ReadOnly,
        urpnet_proto::hlc::system_time_ms() as i64,
    )
    .await
    .unwrap();
    store.close().await;
    drop(store);
    writer.await.unwrap();
    let mut reading = node.faq_as(&reader).await;
    assert!(search(&reading, "carta").await.is_ok());
    let err = reading
        .publish_faq(PublishFaqRequest {
            content: Some(good),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_bodys_faqs_are_no_longer_offered() {
    let Some(fed) = TestFederation::start(
        Backend::Sqlite,
        "faq_revoked_owner",
        &[CELANO, ABRUZZO],
        fast,
    )
    .await
    else {
        return;
    };
    let mut region = fed.node(ABRUZZO.id).faq().await;
    let mut celano = fed.node(CELANO.id).faq().await;
    let theirs = publish(&mut region, sample_faqs("regione")[0].clone()).await;
    let ours = publish(&mut celano, sample_faqs("comune")[0].clone()).await;
    wait_found(&celano, "prenotare visita specialistica", &theirs, 1).await;

    fed.registry
        .admin()
        .set_status(urpnet_proto::v1::SetStatusRequest {
            id: ABRUZZO.id.into(),
            status: urpnet_proto::v1::MemberStatus::Revoked as i32,
            reason: "left the federation".into(),
        })
        .await
        .expect("revoke");
    // Once Celano knows, the Region's entries are not offered any more;
    // Celano's own still are.
    wait_for(
        "the revoked body's entry gone from results",
        DEADLINE,
        || {
            let celano = celano.clone();
            let theirs = theirs.clone();
            async move {
                let r = search(&celano, "prenotare visita specialistica")
                    .await
                    .ok()?;
                (!r.hits.iter().any(|h| h.key == theirs)).then_some(())
            }
        },
    )
    .await;
    let own = sample_faqs("comune")[0].question.clone();
    let r = search(&celano, &own).await.expect("search");
    assert!(r.hits.iter().any(|h| h.key == ours), "{r:?}");
}
