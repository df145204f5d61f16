//! Generates the wire contract's Rust code from `urpnet/v1/*.proto` without a
//! system `protoc`: protox (a pure-Rust protobuf compiler) parses the files and
//! tonic-prost-build generates messages and services from the descriptor set.
//! The same descriptor set is embedded for gRPC reflection.

use std::path::PathBuf;

use protox::prost::Message as _;

const PROTOS: &[&str] = &[
    "urpnet/v1/common.proto",
    "urpnet/v1/ticket.proto",
    "urpnet/v1/desk.proto",
    "urpnet/v1/registry.proto",
    "urpnet/v1/peering.proto",
    "urpnet/v1/faq.proto",
    "urpnet/v1/archive.proto",
    "urpnet/v1/charter.proto",
    "urpnet/v1/appointment.proto",
];

/// Messages that derive `serde::Serialize`.
const SERIALIZE: &[&str] = &[
    ".urpnet.v1.Coordinates",
    ".urpnet.v1.Charter",
    ".urpnet.v1.CharterOffice",
    ".urpnet.v1.OpeningHours",
    ".urpnet.v1.HoursException",
    ".urpnet.v1.TimeRange",
    ".urpnet.v1.CharterService",
    ".urpnet.v1.RequiredDocument",
    ".urpnet.v1.ServiceCost",
    ".urpnet.v1.ServiceDelivery",
    ".urpnet.v1.ServiceResponsible",
    ".urpnet.v1.CharterSummary",
    ".urpnet.v1.CharterChange",
    ".urpnet.v1.DayHours",
    ".urpnet.v1.OfficeNow",
    ".urpnet.v1.ExplainResponse",
    ".urpnet.v1.CharterHit",
    ".urpnet.v1.AppointmentPlan",
    ".urpnet.v1.FreeSlot",
    ".urpnet.v1.FreeSlotsResponse",
    ".urpnet.v1.AppointmentCitizen",
    ".urpnet.v1.Appointment",
    ".urpnet.v1.AppointmentDocument",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=urpnet");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("urpnet_descriptor.bin");

    let file_descriptors = protox::compile(PROTOS, ["."])?;
    std::fs::write(&descriptor_path, file_descriptors.encode_to_vec())?;

    // The charter's messages are also served as JSON on the public side.
    let mut builder = tonic_prost_build::configure();
    for message in SERIALIZE {
        builder = builder.type_attribute(message, "#[derive(serde::Serialize)]");
    }
    // Booking plans are stored as JSON.
    builder = builder.type_attribute(
        ".urpnet.v1.AppointmentPlan",
        "#[derive(serde::Deserialize)] #[serde(default)]",
    );
    builder
        .skip_protoc_run()
        .file_descriptor_set_path(&descriptor_path)
        .compile_protos(PROTOS, &["."])?;
    Ok(())
}
