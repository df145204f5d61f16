//! Open311 GeoReport v2 documents in both of the spec's formats.
//!
//! An answer is built once as a [`Doc`] tree and written as XML (the spec's
//! required format, and the one FixMyStreet speaks) or JSON (the spec's
//! mapping: a list is an array of its items, an object's fields are keys).
//! Text goes through quick-xml's escaping; nothing is ever parsed as XML.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};

/// The two formats, chosen by the path's extension (`.xml` by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/xml`.
    Xml,
    /// `application/json`.
    Json,
}

impl Format {
    /// Splits `name.ext` into the name and its format; no extension is XML,
    /// an unknown one is `None`.
    pub fn split(path: &str) -> Option<(&str, Format)> {
        if let Some(name) = path.strip_suffix(".xml") {
            Some((name, Format::Xml))
        } else if let Some(name) = path.strip_suffix(".json") {
            Some((name, Format::Json))
        } else if path
            .rsplit_once('.')
            .is_some_and(|(_, ext)| matches!(ext, "html" | "csv" | "txt" | "yaml" | "php"))
        {
            None
        } else {
            Some((path, Format::Xml))
        }
    }
}

/// A value of an Open311 document.
#[derive(Debug, Clone)]
pub enum Doc {
    /// Text (may be empty).
    Text(String),
    /// A number, written as is.
    Number(String),
    /// `true` / `false`.
    Bool(bool),
    /// Absent (`null` in JSON, an empty element in XML).
    Null,
    /// Fields in order.
    Object(Vec<(&'static str, Doc)>),
    /// Items, each written in XML as an element named by the tag.
    List(&'static str, Vec<Doc>),
}

impl Doc {
    /// Text, or `Null` when empty.
    pub fn text_or_null(s: impl Into<String>) -> Doc {
        let s = s.into();
        if s.is_empty() {
            Doc::Null
        } else {
            Doc::Text(s)
        }
    }

    fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match self {
            Doc::Text(s) => Value::String(s.clone()),
            Doc::Number(n) => n
                .parse::<serde_json::Number>()
                .map(Value::Number)
                .unwrap_or(Value::Null),
            Doc::Bool(b) => Value::Bool(*b),
            Doc::Null => Value::Null,
            Doc::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| ((*k).to_string(), v.to_json()))
                    .collect(),
            ),
            Doc::List(_, items) => Value::Array(items.iter().map(Doc::to_json).collect()),
        }
    }

    fn write_xml(&self, w: &mut quick_xml::Writer<Vec<u8>>, tag: &str) {
        let start = BytesStart::new(tag);
        match self {
            Doc::Null => {
                let _ = w.write_event(Event::Empty(start));
            }
            Doc::Text(s) | Doc::Number(s) => {
                let _ = w.write_event(Event::Start(start));
                let _ = w.write_event(Event::Text(BytesText::new(s)));
                let _ = w.write_event(Event::End(BytesEnd::new(tag)));
            }
            Doc::Bool(b) => {
                let _ = w.write_event(Event::Start(start));
                let _ = w.write_event(Event::Text(BytesText::new(if *b {
                    "true"
                } else {
                    "false"
                })));
                let _ = w.write_event(Event::End(BytesEnd::new(tag)));
            }
            Doc::Object(fields) => {
                let _ = w.write_event(Event::Start(start));
                for (k, v) in fields {
                    v.write_xml(w, k);
                }
                let _ = w.write_event(Event::End(BytesEnd::new(tag)));
            }
            Doc::List(item, items) => {
                let _ = w.write_event(Event::Start(start));
                for v in items {
                    v.write_xml(w, item);
                }
                let _ = w.write_event(Event::End(BytesEnd::new(tag)));
            }
        }
    }

    /// The document as the answer's body, `root` naming the XML root.
    pub fn render(&self, root: &str, format: Format) -> (&'static str, Vec<u8>) {
        match format {
            Format::Json => (
                "application/json; charset=utf-8",
                serde_json::to_vec(&self.to_json()).unwrap_or_default(),
            ),
            Format::Xml => {
                let mut w = quick_xml::Writer::new(Vec::with_capacity(1024));
                let _ = w.write_event(Event::Decl(BytesDecl::new("1.0", Some("utf-8"), None)));
                self.write_xml(&mut w, root);
                ("text/xml; charset=utf-8", w.into_inner())
            }
        }
    }

    /// An HTTP answer holding the document.
    pub fn respond(&self, status: StatusCode, root: &str, format: Format) -> Response {
        let (content_type, body) = self.render(root, format);
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    }
}

/// An Open311 error answer: `[{"code":..,"description":..}]`, or
/// `<errors><error><code/><description/></error></errors>`.
pub fn error(status: StatusCode, description: &str, format: Format) -> Response {
    Doc::List(
        "error",
        vec![Doc::Object(vec![
            ("code", Doc::Number(status.as_u16().to_string())),
            ("description", Doc::Text(description.to_string())),
        ])],
    )
    .respond(status, "errors", format)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_arrays_in_json_and_repeated_elements_in_xml_with_text_escaped() {
        let doc = Doc::List(
            "request",
            vec![Doc::Object(vec![
                ("service_request_id", Doc::Text("c_c426-2026-000001".into())),
                (
                    "description",
                    Doc::Text("<b>buca</b> & \"pericolo\"".into()),
                ),
                ("lat", Doc::Number("42.0847".into())),
                ("media_url", Doc::Null),
            ])],
        );
        let (_, json) = doc.render("service_requests", Format::Json);
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value[0]["service_request_id"], "c_c426-2026-000001");
        assert_eq!(value[0]["lat"], 42.0847);
        assert!(value[0]["media_url"].is_null());
        let (_, xml) = doc.render("service_requests", Format::Xml);
        let xml = String::from_utf8(xml).unwrap();
        assert!(xml.contains("<service_requests><request><service_request_id>c_c426-2026-000001</service_request_id>"), "{xml}");
        assert!(
            xml.contains("&lt;b&gt;buca&lt;/b&gt; &amp; &quot;pericolo&quot;"),
            "{xml}"
        );
        assert!(xml.contains("<media_url/>"), "{xml}");
        let (_, empty) = Doc::List("request", vec![]).render("service_requests", Format::Xml);
        assert!(
            String::from_utf8(empty)
                .unwrap()
                .ends_with("<service_requests></service_requests>")
        );
        let (_, empty) = Doc::List("request", vec![]).render("service_requests", Format::Json);
        assert_eq!(empty, b"[]");
    }

    #[test]
    fn the_extension_picks_the_format() {
        assert_eq!(
            Format::split("services.json"),
            Some(("services", Format::Json))
        );
        assert_eq!(
            Format::split("strade.buche.xml"),
            Some(("strade.buche", Format::Xml))
        );
        assert_eq!(
            Format::split("strade.buche"),
            Some(("strade.buche", Format::Xml))
        );
        assert_eq!(Format::split("services.html"), None);
    }
}
