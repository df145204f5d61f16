//! The coordinators' dashboard on a real registry: sign-in bound to the
//! token the registry writes for the coordinator's account; members with
//! health; the routing explorer naming who and why; the trends page with
//! the surge plot of a planted surge (in a real headless Chromium, checked
//! with axe-core); a protected archive query downloaded as CSV with small
//! cells hidden.

use std::time::Duration;

use reqwest::redirect::Policy;
use urpnet_proto::archive::{add_weeks, week_of_ms};
use urpnet_proto::hlc::system_time_ms;
use urpnet_proto::v1::{ArchiveRecord, Level};
use urpnet_tests::archive::{admin, push, record, wait_records};
use urpnet_tests::browser::{Browser, element};
use urpnet_tests::federation::{CELANO, TestRegistry};
use urpnet_tests::{Backend, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_reads_members_routes_trends_and_the_archive_in_the_dashboard() {
    let registry = TestRegistry::start(Backend::Sqlite, "dashboard")
        .await
        .unwrap();
    registry.import_sample_taxonomy().await;
    let (material, signer) = registry.enrol(CELANO.id, Level::Comune, &["066032"]).await;
    // Twenty flat weeks and a surge this week.
    let now = week_of_ms(system_time_ms());
    let mut records: Vec<ArchiveRecord> = Vec::new();
    let mut seed = 0u64;
    for back in 0..=20 {
        let w = add_weeks(now, -back).expect("week");
        for _ in 0..(if back == 0 { 40 } else { 10 }) {
            seed += 1;
            records.push(record(seed, "rifiuti.ingombranti", "066032", w));
        }
    }
    for chunk in records.chunks(100) {
        push(&registry, &material, &signer, chunk)
            .await
            .expect("push");
    }
    wait_records(
        &admin(&registry),
        records.len() as u64,
        Duration::from_secs(10),
    )
    .await;

    let base = format!("http://{}", registry.dashboard_addr());
    let token = std::fs::read_to_string(urpnet_registry::dashboard::token_path(
        &registry.config.registry.data_dir,
    ))
    .expect("the dashboard token, written for the coordinator");
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .cookie_store(true)
        .build()
        .unwrap();
    let r = http.get(format!("{base}/members")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303, "sign in first");
    let r = http
        .post(format!("{base}/login"))
        .form(&[("token", "0".repeat(64))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = http
        .post(format!("{base}/login"))
        .form(&[("token", token.trim())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));

    let members = http
        .get(format!("{base}/members"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(members.contains(CELANO.id), "{members}");
    let route = http
        .get(format!(
            "{base}/route?category=rifiuti.ingombranti&comune=066032"
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        route.contains(&format!("({})", CELANO.id)) && route.contains("Perché"),
        "{route}"
    );
    let unknown = http
        .get(format!("{base}/route?category=astrologia&comune=066032"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        unknown.contains("role=\"alert\""),
        "a clear refusal: {unknown}"
    );
    let csv = http
        .get(format!("{base}/archive?by=category,outcome&format=csv"))
        .send()
        .await
        .unwrap();
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = csv.text().await.unwrap();
    assert!(
        csv.starts_with("category,outcome,count,suppressed"),
        "{csv}"
    );
    assert!(csv.contains("rifiuti.ingombranti,answered,"), "{csv}");

    // The trends page shows the plot with the surge, in a real browser.
    let Some(browser) = Browser::start(1280).await else {
        eprintln!("dashboard: browser part skipped (no chromium-driver)");
        return;
    };
    let c = &browser.client;
    c.goto(&format!("{base}/login")).await.unwrap();
    element(c, "#token")
        .await
        .send_keys(token.trim())
        .await
        .unwrap();
    element(c, "form button").await.click().await.unwrap();
    wait_for("the members page", Duration::from_secs(20), || async {
        (c.current_url().await.ok()?.path() == "/members").then_some(())
    })
    .await;
    c.goto(&format!("{base}/trends")).await.unwrap();
    let plot = element(c, "figure.plot svg").await;
    let size = plot.rectangle().await.unwrap();
    assert!(size.2 > 300.0 && size.3 > 100.0, "drawn: {size:?}");
    let page = c.source().await.unwrap();
    assert!(page.contains("picco"), "the surge is flagged");
    let violations = browser.axe().await;
    assert!(violations.is_empty(), "trends: {violations:#?}");
    browser.screenshot("dashboard-trends").await;
    browser.close().await;
}
