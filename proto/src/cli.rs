//! What every urpnet CLI shares (feature `cli`): readable tables by default,
//! canonical proto3 JSON with `--json`, and times shown the same way.

use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use comfy_table::{ContentArrangement, Table, presets};
use prost_reflect::{DescriptorPool, DynamicMessage};

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        DescriptorPool::decode(crate::FILE_DESCRIPTOR_SET).expect("embedded descriptors decode")
    })
}

/// A message as canonical proto3 JSON (the mapping every gRPC tool
/// understands), given its full name (`urpnet.v1.Ticket`).
pub fn to_json(full_name: &str, message: &impl prost::Message) -> serde_json::Value {
    let descriptor = pool()
        .get_message_by_name(full_name)
        .expect("known message name");
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .expect("message re-decodes");
    serde_json::to_value(&dynamic).expect("dynamic messages serialise")
}

/// An empty table in the house style.
pub fn table() -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    t
}

/// Milliseconds since the Unix epoch as `2026-11-23 16:40:12Z`; `-` for 0.
pub fn time_ms(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms))
        .to_string()
        .replace('T', " ")
}
