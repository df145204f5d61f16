//! The operators' web console over real HTTP: sign-in with a Desk token
//! (HttpOnly, SameSite=Strict cookie; the token in no URL or page), the
//! queue and a ticket's page, forms with and without their CSRF token, a
//! read-only token that cannot post, text with script in it shown as text,
//! a stale session, a login flood, a ticket this node takes no part in.
//! The same pages in a real headless Chromium: `console_browser.rs`.

use reqwest::redirect::Policy;
use urpnet_node::auth::Role;
use urpnet_tests::console::{client, page, sign_in, url};
use urpnet_tests::shared::request;
use urpnet_tests::{Backend, TestNode};

/// The CSRF token in a page's forms.
fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with its token");
    html[at + 19..at + 19 + 64].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_signs_in_escapes_text_and_refuses_forged_and_forbidden_forms() {
    let node = TestNode::start("c_c426", Backend::Sqlite, "console_http")
        .await
        .unwrap();
    let mut desk = node.desk().await;
    let mut evil = request("illuminazione", false);
    evil.subject = "<script>alert('x')</script> lampione".into();
    let ticket = desk
        .create_ticket(evil)
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();

    // Without a session every page leads to the sign-in.
    let http = client();
    let r = http.get(url(&node, "/queue")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/login");
    let (status, _) = sign_in(&http, &node, "not-a-token").await;
    assert_eq!(status, 401);

    // Signed in: the cookie is HttpOnly and SameSite=Strict, the token is
    // nowhere in the pages.
    let (status, cookie) = sign_in(&http, &node, &node.token).await;
    assert_eq!(status, 303, "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let (status, queue) = page(&http, &node, "/queue").await;
    assert_eq!(status, 200);
    assert!(queue.contains(&ticket.reference), "the queue lists it");
    assert!(!queue.contains(&node.token), "the token is never in a page");
    assert!(
        !queue.contains("<script>alert"),
        "script in a subject is text"
    );
    assert!(queue.contains("&lt;script&gt;alert"), "{queue}");
    assert!(queue.contains("<html lang=\"it\""));
    let (status, detail) = page(&http, &node, &format!("/tickets/{}", ticket.id)).await;
    assert_eq!(status, 200);
    let token = csrf_of(&detail);

    // A note with script in it is stored and shown as text.
    let r = http
        .post(url(&node, &format!("/tickets/{}/notes", ticket.id)))
        .form(&[
            ("csrf", token.as_str()),
            ("text", "<img src=x onerror=alert(1)> ok"),
            ("public", "1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let (_, detail) = page(&http, &node, &format!("/tickets/{}", ticket.id)).await;
    assert!(!detail.contains("<img src=x"), "no stored XSS");
    assert!(detail.contains("&lt;img src=x onerror=alert(1)&gt; ok"));

    // A form without, or with another, CSRF token is refused and changes
    // nothing.
    for forged in [
        "",
        "0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        let r = http
            .post(url(&node, &format!("/tickets/{}/notes", ticket.id)))
            .form(&[("csrf", forged), ("text", "forged"), ("public", "1")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403, "csrf {forged:?}");
    }
    let history = urpnet_tests::shared::history(&desk, &ticket.id).await;
    assert_eq!(history.len(), 2, "created + one note: {history:?}");

    // A ticket this node holds nothing of: not found, not another body's.
    let (status, _) = page(&http, &node, "/tickets/01KBMZ00000000000000000000").await;
    assert_eq!(status, 404);

    // A read-only token sees the queue but cannot post.
    let reader = node.add_operator("lettore", Role::ReadOnly).await;
    let ro = client();
    assert_eq!(sign_in(&ro, &node, &reader).await.0, 303);
    let (status, detail) = page(&ro, &node, &format!("/tickets/{}", ticket.id)).await;
    assert_eq!(status, 200);
    let r = ro
        .post(url(&node, &format!("/tickets/{}/notes", ticket.id)))
        .form(&[
            ("csrf", csrf_of(&detail).as_str()),
            ("text", "letto"),
            ("public", ""),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(
        urpnet_tests::shared::history(&desk, &ticket.id).await.len(),
        2
    );

    // Signed out: the session is gone, its cookie no longer opens a page.
    let (_, queue) = page(&http, &node, "/queue").await;
    let r = http
        .post(url(&node, "/logout"))
        .form(&[("csrf", csrf_of(&queue).as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let stale = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let session = cookie.split(';').next().unwrap().to_string();
    let r = stale
        .get(url(&node, "/queue"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303, "a stale session signs in again");

    // A sign-in flood from one address is slowed down.
    let flood = client();
    let mut limited = 0;
    for _ in 0..20 {
        if sign_in(&flood, &node, "guess").await.0 == 429 {
            limited += 1;
        }
    }
    assert!(limited >= 10, "{limited} of 20 limited");
    // An over-large form is refused before it is read.
    let r = http
        .post(url(&node, "/login"))
        .form(&[("token", "x".repeat(400_000))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn citizens_find_faqs_with_markup_shown_as_text_and_rate_the_page() {
    let node = TestNode::start("c_c426", Backend::Sqlite, "faq_pages")
        .await
        .unwrap();
    let mut faq = node.faq().await;
    let mut content = urpnet_tests::shared::sample_faqs("comune")[0].clone();
    content.answer = format!(
        "{}\n\n**Importante**\n\n<script>alert('x')</script>",
        content.answer
    );
    let question = content.question.clone();
    let key = urpnet_tests::shared::publish(&mut faq, content).await;
    let http = reqwest::Client::new();
    let public = format!("http://{}", node.public_addr);
    let words: String = question
        .split_whitespace()
        .filter(|w| w.len() > 4)
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let found = http
        .get(format!("{public}/faq?q={}", url_escape(&words)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(found.contains(&question), "{words}: {found}");
    assert!(
        found.contains("data-element=\"faq\""),
        "the model's footer link"
    );
    let entry = http
        .get(format!("{public}/faq/{}", url_escape(&key)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        entry.contains("<strong>Importante</strong>"),
        "Markdown rendered: {entry}"
    );
    assert!(!entry.contains("<script>alert"), "raw HTML shown as text");
    // English on request: the choice is remembered, the pages follow.
    let no_redirect = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let chosen = no_redirect
        .get(format!("{public}/lingua/en"))
        .header("referer", format!("{public}/faq?q=carta"))
        .send()
        .await
        .unwrap();
    assert_eq!(chosen.status().as_u16(), 303);
    assert_eq!(chosen.headers()["location"], "/faq?q=carta");
    let cookie = chosen.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("lingua=en"), "{cookie}");
    let english = http
        .get(format!("{public}/segnala"))
        .header("cookie", "lingua=en")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(english.contains("<html lang=\"en\"") && english.contains("Report a problem"));
    assert!(english.contains("Frequently asked questions") && english.contains("Italiano"));

    // The page's 1-5 feedback: counted, a bad rating refused.
    let ok = http
        .post(format!("{public}/feedback"))
        .form(&[("page", "/faq"), ("rating", "4")])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let bad = http
        .post(format!("{public}/feedback"))
        .form(&[("page", "/faq"), ("rating", "9")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let metrics = node.metrics().await;
    assert!(
        metrics.contains("urpnet_page_feedback_total{page=\"faq\",rating=\"4\"} 1"),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("feedback"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    node.stop().await;
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_reach_operators_of_their_ticket_only_and_uploads_are_bounded() {
    let node = TestNode::start("c_c426", Backend::Sqlite, "console_files")
        .await
        .unwrap();
    let photo = urpnet_examples::samples::photo_with_gps(64, 48);
    let mut with_photo = request("strade.buche", false);
    with_photo.attachments = vec![urpnet_proto::v1::AttachmentUpload {
        file_name: "buca.jpg".into(),
        media_type: "image/jpeg".into(),
        content: photo.clone(),
    }];
    let mut desk = node.desk().await;
    let ticket = desk
        .create_ticket(with_photo)
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let other = desk
        .create_ticket(request("illuminazione", false))
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    let sha = ticket.attachments[0].sha256.clone();
    let http = client();
    assert_eq!(sign_in(&http, &node, &node.token).await.0, 303);
    let (_, page_html) = page(&http, &node, &format!("/tickets/{}", ticket.id)).await;
    assert!(page_html.contains(&format!(
        "<img src=\"/tickets/{}/attachments/{sha}\"",
        ticket.id
    )));
    let r = http
        .get(url(
            &node,
            &format!("/tickets/{}/attachments/{sha}", ticket.id),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    assert!(!r.bytes().await.unwrap().is_empty());
    // Another ticket's file by hash, a path in the hash: refused.
    let (status, _) = page(
        &http,
        &node,
        &format!("/tickets/{}/attachments/{sha}", other.id),
    )
    .await;
    assert_eq!(status, 404);
    for bad in ["..%2F..%2Fdata%2Fnode.key", "..", &"g".repeat(64)] {
        let (status, _) = page(
            &http,
            &node,
            &format!("/tickets/{}/attachments/{bad}", ticket.id),
        )
        .await;
        assert!(status == 400 || status == 404, "{bad}: {status}");
    }
    // Without a session: the sign-in, not the file.
    let anonymous = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let r = anonymous
        .get(url(
            &node,
            &format!("/tickets/{}/attachments/{sha}", ticket.id),
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);

    // An over-large upload on the citizens' report form: 413, nothing made.
    let big = reqwest::multipart::Form::new()
        .text("service_code", "strade.buche")
        .text("description", "Buca")
        .text("address_string", "Via Roma 1, Celano")
        .part(
            "media",
            reqwest::multipart::Part::bytes(vec![0u8; 13 * 1024 * 1024]).file_name("big.jpg"),
        );
    // The node answers 413 before reading the body whole; the client may
    // see the answer or, still writing, the connection closed.
    match reqwest::Client::new()
        .post(format!("http://{}/segnala", node.public_addr))
        .multipart(big)
        .send()
        .await
    {
        Ok(r) => assert_eq!(r.status().as_u16(), 413),
        Err(e) => assert!(e.is_request(), "{e}"),
    }
    let list = desk
        .list_tickets(urpnet_proto::v1::ListTicketsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.tickets.len(), 2);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_taken_twice_on_the_phone_is_merged_from_the_console() {
    let node = TestNode::start("c_c426", Backend::Sqlite, "console_merge")
        .await
        .unwrap();
    let http = client();
    assert_eq!(sign_in(&http, &node, &node.token).await.0, 303);
    let take = |key: &'static str| {
        let http = http.clone();
        let node = &node;
        async move {
            let (_, form) = page(&http, node, "/new").await;
            let r = http
                .post(url(node, "/new"))
                .form(&[
                    ("csrf", csrf_of(&form).as_str()),
                    ("request_id", key),
                    ("channel", "phone"),
                    ("category", "illuminazione"),
                    (
                        "subject",
                        "Lampione spento in via Roma davanti al civico 12",
                    ),
                    ("description", "Il lampione è spento da tre sere."),
                    ("istat_code", "066032"),
                    ("address", "Via Roma 12, Celano"),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 303);
            r.headers()["location"].to_str().unwrap().to_string()
        }
    };
    let first = take("console_first_call_0001").await;
    let first_id = first.trim_start_matches("/tickets/").to_string();
    let second = take("console_second_call_001").await;
    assert!(
        second.contains("?doppioni="),
        "the first named as a duplicate: {second}"
    );
    let (_, page_html) = page(&http, &node, &second).await;
    assert!(page_html.contains("Possibili doppioni"), "{page_html}");
    let second_id = second
        .trim_start_matches("/tickets/")
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let r = http
        .post(url(&node, &format!("/tickets/{second_id}/merge")))
        .form(&[
            ("csrf", csrf_of(&page_html).as_str()),
            ("into", first_id.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let merged = node
        .desk()
        .await
        .get_ticket(urpnet_proto::v1::GetTicketRequest {
            ticket_id: second_id,
            reference: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .ticket
        .unwrap();
    assert_eq!(merged.status(), urpnet_proto::v1::Status::Merged);
    assert_eq!(merged.merged_into, first_id);
    node.stop().await;
}
