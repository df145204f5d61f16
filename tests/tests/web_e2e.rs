//! End to end in real browsers, between two real nodes and a registry over
//! mutual TLS: a citizen files a report with a photo on Celano's web form;
//! Celano's operator, with the queue open, sees it appear without
//! reloading; asks the registry where it goes (the Region, and why) and
//! hands it over; the Region's operator finds it in the inbox of the
//! Region's console, accepts it and answers publicly; the citizen's
//! tracking page at Celano shows the Region's answer.

use std::time::Duration;

use fantoccini::{Client, Locator};
use urpnet_tests::browser::{Browser, click, page_has, type_into};
use urpnet_tests::federation::{ABRUZZO, CELANO, TestFederation};
use urpnet_tests::{Backend, wait_for};

const DEADLINE: Duration = Duration::from_secs(30);

async fn sign_in(c: &Client, base: &str, token: &str) {
    c.goto(&format!("{base}/login")).await.unwrap();
    type_into(c, "#token", token).await;
    click(c, "form button[type=submit]").await;
    wait_for("the queue", DEADLINE, || async {
        (c.current_url().await.ok()?.path() == "/queue").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_report_is_handed_to_the_region_and_its_answer_reaches_the_citizen() {
    let fed = TestFederation::start(Backend::Sqlite, "web_e2e", &[CELANO, ABRUZZO], |_| {})
        .await
        .expect("sqlite");
    let Some(operator) = Browser::start(1280).await else {
        eprintln!("web_e2e: skipped (no chromium-driver)");
        return;
    };
    let Some(citizen) = Browser::start(1280).await else {
        return;
    };
    let (celano, region) = (fed.node(CELANO.id), fed.node(ABRUZZO.id));
    let celano_console = format!("http://{}", celano.console_addr);
    let region_console = format!("http://{}", region.console_addr);
    let celano_public = format!("http://{}", celano.public_addr);

    // Celano's operator has the queue open.
    let o = &operator.client;
    sign_in(o, &celano_console, &celano.token).await;

    // The citizen fills in the web form, with a phone photo.
    let dir = tempfile::tempdir().unwrap();
    let photo = dir.path().join("IMG_2041.jpg");
    std::fs::write(&photo, urpnet_examples::samples::photo_with_gps(320, 240)).unwrap();
    let c = &citizen.client;
    c.goto(&format!("{celano_public}/segnala")).await.unwrap();
    let violations = citizen.axe().await;
    assert!(violations.is_empty(), "report form: {violations:#?}");
    c.find(Locator::Css(
        "#service_code option[value='trasporti_regionali']",
    ))
    .await
    .expect("the regional service on the form")
    .click()
    .await
    .unwrap();
    for (field, value) in [
        (
            "#description",
            "Il treno regionale delle 7:12 per Avezzano è soppresso da una settimana.",
        ),
        ("#address_string", "Stazione di Celano, Celano"),
        ("#first_name", "Anna"),
        ("#last_name", "Di Censo"),
        ("#email", "anna.dicenso@example.it"),
    ] {
        type_into(c, field, value).await;
    }
    type_into(c, "#media", photo.to_str().unwrap()).await;
    click(c, "#share_contact").await;
    citizen.screenshot("citizen-report").await;
    click(c, "form button[type=submit]").await;
    wait_for("the tracking page", DEADLINE, || async {
        c.current_url()
            .await
            .ok()?
            .path()
            .starts_with("/track/")
            .then_some(())
    })
    .await;
    let tracking = c.current_url().await.unwrap().to_string();
    let reference = tracking
        .split("/track/")
        .nth(1)
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();

    // It appears in Celano's open queue without reloading.
    wait_for("the report in Celano's queue, live", DEADLINE, || async {
        o.find(Locator::LinkText(&reference)).await.ok()
    })
    .await;
    // The photo was kept without its metadata.
    let mut desk = celano.desk().await;
    let ticket = desk
        .get_ticket(urpnet_proto::v1::GetTicketRequest {
            ticket_id: String::new(),
            reference: reference.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(ticket.channel(), urpnet_proto::v1::Channel::Web);
    assert_eq!(ticket.attachments.len(), 1, "the photo");

    // The operator asks the registry, reads why, and hands it over.
    click(o, &format!("a[href='/tickets/{}']", ticket.id)).await;
    click(o, "form[action$='/handoff'] button").await;
    page_has(o, "the registry's answer", "Il registro indica").await;
    page_has(o, "the Region named", "(r_abruzz)").await;
    operator.screenshot("console-handoff").await;
    click(o, "form[action$='/handoff'] button").await;
    wait_for("the offer made", DEADLINE, || async {
        let t = celano
            .desk()
            .await
            .get_ticket(urpnet_proto::v1::GetTicketRequest {
                ticket_id: ticket.id.clone(),
                reference: String::new(),
            })
            .await
            .ok()?
            .into_inner()
            .ticket?;
        t.pending_handoff.is_some().then_some(())
    })
    .await;

    // The Region's operator accepts it from the inbox and answers.
    sign_in(o, &region_console, &region.token).await;
    wait_for("the offer in the Region's inbox", DEADLINE, || async {
        o.goto(&format!("{region_console}/inbox")).await.ok()?;
        o.find(Locator::LinkText(&reference)).await.ok()
    })
    .await;
    let violations = operator.axe().await;
    assert!(violations.is_empty(), "inbox: {violations:#?}");
    click(o, &format!("a[href='/tickets/{}']", ticket.id)).await;
    click(o, "form[action$='/answer'] button[value='accept']").await;
    // Back on the ticket, now the Region's: no offer to answer any more.
    wait_for("the accepted ticket", DEADLINE, || async {
        let source = o.source().await.ok()?;
        (source.contains("Aggiungi una nota") && !source.contains("Offerta in arrivo"))
            .then_some(())
    })
    .await;
    type_into(
        o,
        "#n-text",
        "La Regione ha chiesto a Trenitalia il ripristino della corsa dal 15 dicembre.",
    )
    .await;
    click(o, "#n-public").await;
    click(o, "form[action$='/notes'] button").await;
    page_has(o, "the Region's note", "ripristino della corsa").await;

    // The citizen's tracking page at Celano shows the Region's answer.
    wait_for(
        "the Region's answer on the tracking page",
        DEADLINE,
        || async {
            c.goto(&tracking).await.ok()?;
            let source = c.source().await.ok()?;
            (source.contains("ripristino della corsa") && source.contains("Regione")).then_some(())
        },
    )
    .await;
    citizen.screenshot("citizen-tracking").await;
    operator.close().await;
    citizen.close().await;
}
