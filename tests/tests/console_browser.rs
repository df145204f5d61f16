//! The operators' console in a real headless Chromium (WebDriver): an
//! operator signs in with the keyboard, sees the queue, watches a request
//! taken elsewhere appear without reloading (Server-Sent Events), opens it
//! and adds a note through the form; a form with a tampered CSRF token is
//! refused; every page passes axe-core's WCAG 2.1 A/AA rules with no
//! serious or critical violation; at 360 px nothing scrolls sideways; the
//! pages weigh well under 200 KB. Screenshots go to `$URPNET_SCREENSHOTS`.

use std::time::Duration;

use fantoccini::Locator;
use fantoccini::key::Key;
use urpnet_tests::browser::{Browser, click, element, type_into};
use urpnet_tests::shared::request;
use urpnet_tests::{Backend, TestNode, wait_for};

const DEADLINE: Duration = Duration::from_secs(20);

async fn assert_accessible(browser: &Browser, page: &str) {
    let violations = browser.axe().await;
    assert!(
        violations.is_empty(),
        "{page}: serious or critical accessibility violations: {violations:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_works_the_queue_in_a_real_browser() {
    let node = TestNode::start("c_c426", Backend::Sqlite, "console_browser")
        .await
        .unwrap();
    let Some(browser) = Browser::start(1280).await else {
        eprintln!("console_browser: skipped (no chromium-driver)");
        return;
    };
    let base = format!("http://{}", node.console_addr);
    let mut desk = node.desk().await;
    let mut first = request("illuminazione", false);
    first.subject = "Lampione spento in via Roma".into();
    let first = desk
        .create_ticket(first)
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();

    // Sign in with the keyboard: the token field has its label.
    let c = &browser.client;
    c.goto(&format!("{base}/queue")).await.unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/login");
    assert_accessible(&browser, "login").await;
    browser.screenshot("console-login").await;
    let field = element(c, "#token").await;
    field.send_keys(&node.token).await.unwrap();
    field.send_keys(&Key::Enter.to_string()).await.unwrap();
    wait_for("the queue", DEADLINE, || async {
        (c.current_url().await.ok()?.path() == "/queue").then_some(())
    })
    .await;
    let row = element(c, &format!("tr[data-ticket='{}']", first.id)).await;
    assert!(row.text().await.unwrap().contains("Lampione spento"));
    assert_accessible(&browser, "queue").await;

    // A request taken at another desk appears without reloading.
    let marker = c
        .execute("window.__same_page = true; return true;", vec![])
        .await
        .unwrap();
    assert_eq!(marker, serde_json::json!(true));
    let mut second = request("rifiuti.ingombranti", false);
    second.subject = "Ritiro divano in via Marsica".into();
    let second = desk
        .create_ticket(second)
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    wait_for("the new request, live", DEADLINE, || async {
        c.find(Locator::Css(&format!("tr[data-ticket='{}']", second.id)))
            .await
            .ok()
    })
    .await;
    assert_eq!(
        browser.eval("return window.__same_page === true;").await,
        serde_json::json!(true),
        "the page was not reloaded"
    );
    browser.screenshot("console-queue").await;

    // Open it and add a public note through the form.
    c.find(Locator::LinkText(&second.reference))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for("the ticket page", DEADLINE, || async {
        c.current_url()
            .await
            .ok()?
            .path()
            .starts_with("/tickets/")
            .then_some(())
    })
    .await;
    assert_accessible(&browser, "ticket").await;
    type_into(c, "#n-text", "Ritiro fissato per giovedì mattina.").await;
    click(c, "#n-public").await;
    click(c, "form[action$='/notes'] button").await;
    wait_for("the note in the history", DEADLINE, || async {
        let source = c.source().await.ok()?;
        source
            .contains("Ritiro fissato per giovedì mattina.")
            .then_some(())
    })
    .await;
    browser.screenshot("console-ticket").await;
    let history = urpnet_tests::shared::history(&desk, &second.id).await;
    assert_eq!(history.len(), 2, "created + the note: {history:?}");

    // A tampered form token: refused, nothing added.
    browser
        .eval("document.querySelector(\"form[action$='/notes'] input[name=csrf]\").value = 'x'.repeat(64); return true;")
        .await;
    type_into(c, "#n-text", "forged").await;
    click(c, "form[action$='/notes'] button").await;
    wait_for("the refusal", DEADLINE, || async {
        let source = c.source().await.ok()?;
        source.contains("Il modulo è scaduto").then_some(())
    })
    .await;
    assert_eq!(
        urpnet_tests::shared::history(&desk, &second.id).await.len(),
        2
    );

    // Answers while typing a new request: the charter's service comes up.
    node.charter()
        .await
        .import_charter(urpnet_proto::v1::ImportCharterRequest {
            charter: Some(urpnet_tests::shared::sample_charter("celano")),
        })
        .await
        .unwrap();
    c.goto(&format!("{base}/new")).await.unwrap();
    type_into(c, "#c-subject", "rinnovo carta d'identità scaduta").await;
    wait_for("the ready answers", DEADLINE, || async {
        let text = c
            .find(Locator::Css("#suggest"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.contains("Carta d'identità elettronica").then_some(())
    })
    .await;
    assert_accessible(&browser, "/new").await;
    browser.screenshot("console-new").await;
    c.goto(&format!("{base}/appointments")).await.unwrap();
    assert_accessible(&browser, "/appointments").await;
    browser.screenshot("console-appointments").await;
    browser.close().await;

    // At 360 px nothing scrolls sideways.
    let Some(narrow) = Browser::start(360).await else {
        return;
    };
    let n = &narrow.client;
    n.goto(&format!("{base}/login")).await.unwrap();
    let field = element(n, "#token").await;
    field.send_keys(&node.token).await.unwrap();
    field.send_keys(&Key::Enter.to_string()).await.unwrap();
    wait_for("the queue at 360 px", DEADLINE, || async {
        (n.current_url().await.ok()?.path() == "/queue").then_some(())
    })
    .await;
    let overflow = narrow
        .eval("return document.documentElement.scrollWidth - document.documentElement.clientWidth;")
        .await;
    assert!(
        overflow.as_i64().unwrap_or(1) <= 0,
        "horizontal overflow at 360 px: {overflow}"
    );
    narrow.screenshot("console-queue-360").await;
    narrow.close().await;

    // Page weight: the queue with its stylesheet and script.
    let http = reqwest::Client::new();
    let mut weight = 0;
    for path in ["/login", "/static/console.css", "/static/console.js"] {
        weight += http
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .len();
    }
    assert!(weight < 200 * 1024, "{weight} bytes");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_citizen_books_moves_and_cancels_through_the_pages_in_a_real_browser() {
    let Some((dir, mut config)) =
        urpnet_tests::node_config("c_c426", Backend::Sqlite, "booking_browser").await
    else {
        return;
    };
    config.node.name = "Comune di Celano".into();
    config.appointments.video_base_url = "https://video.comune.celano.example.it".into();
    let node = TestNode::start_with(config, Some(dir)).await;
    node.charter()
        .await
        .import_charter(urpnet_proto::v1::ImportCharterRequest {
            charter: Some(urpnet_tests::shared::sample_charter("celano")),
        })
        .await
        .unwrap();
    node.appointments()
        .await
        .set_plans(urpnet_proto::v1::SetPlansRequest {
            plans: urpnet_tests::shared::sample_plans("celano"),
            dry_run: false,
        })
        .await
        .unwrap();
    let Some(browser) = Browser::start(1280).await else {
        eprintln!("booking_browser: skipped (no chromium-driver)");
        return;
    };
    let c = &browser.client;
    let base = format!("http://{}", node.public_addr);

    // Office and service.
    c.goto(&format!("{base}/prenota")).await.unwrap();
    assert_accessible(&browser, "/prenota").await;
    let footer = element(c, "footer [data-element='appointment-booking']").await;
    assert_eq!(
        footer.attr("href").await.unwrap().as_deref(),
        Some("/prenota")
    );
    c.find(Locator::LinkText("Autorizzazione paesaggistica"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // Day and time: the first free time of the first day is chosen.
    element(c, "input[name=start]").await;
    assert_accessible(&browser, "days and times").await;
    browser.screenshot("booking-times").await;
    click(c, "form[action$='/blocca'] button").await;
    // The citizen's data.
    element(c, "#given_name").await;
    assert_accessible(&browser, "data form").await;
    for (field, value) in [
        ("#given_name", "Giulia"),
        ("#family_name", "Marchetti"),
        ("#address", "Via Ovidio 12, Celano"),
        ("#email", "giulia.marchetti@example.it"),
        ("#notes", "<b>Tettoia</b> in legno"),
    ] {
        type_into(c, field, value).await;
    }
    click(c, "#consent").await;
    browser.screenshot("booking-data").await;
    click(c, "form button[type=submit]").await;
    wait_for("the confirmation", DEADLINE, || async {
        let source = c.source().await.ok()?;
        source.contains("Prenotazione confermata").then_some(())
    })
    .await;
    assert_accessible(&browser, "confirmation").await;
    browser.screenshot("booking-confirmed").await;
    let agenda = node
        .appointments()
        .await
        .get_appointment(urpnet_proto::v1::GetAppointmentRequest {
            id: c
                .current_url()
                .await
                .unwrap()
                .path()
                .trim_start_matches("/appuntamento/")
                .to_string(),
        })
        .await
        .expect("the booking made through the pages")
        .into_inner()
        .appointment
        .unwrap();
    assert_eq!(agenda.channel, "video");
    assert_eq!(agenda.citizen.unwrap().family_name, "Marchetti");
    assert_eq!(agenda.notes, "<b>Tettoia</b> in legno", "stored as typed");

    // Move it to another time from the manage page: a new link.
    let before = c.current_url().await.unwrap().to_string();
    c.find(Locator::LinkText("Sposta l'appuntamento a un altro orario"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    click(c, "#t1").await;
    click(c, "form[action*='/sposta'] button").await;
    wait_for("the move", DEADLINE, || async {
        let source = c.source().await.ok()?;
        source.contains("Appuntamento spostato").then_some(())
    })
    .await;
    let after = c.current_url().await.unwrap().to_string();
    assert_ne!(before, after, "a new manage link");
    let moved = node
        .appointments()
        .await
        .get_appointment(urpnet_proto::v1::GetAppointmentRequest {
            id: agenda.id.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .appointment
        .unwrap();
    assert_eq!(moved.sequence, 1);
    assert_ne!(moved.start, agenda.start);

    // Cancel from the manage page.
    click(c, "form[action*='/annulla'] button").await;
    wait_for("the cancellation", DEADLINE, || async {
        let source = c.source().await.ok()?;
        source.contains("annullato").then_some(())
    })
    .await;
    browser.close().await;
    node.stop().await;
}
