//! `urpnet-node appointments ...`: booking on a running node
//! (AppointmentDesk): plans, free slots, booking for a caller (here or at
//! another body), moving, cancelling, the day's agenda, attended/no-show.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Subcommand;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use urpnet_proto::v1::appointment_desk_client::AppointmentDeskClient;
use urpnet_proto::v1::{
    AgendaRequest, Appointment, AppointmentCitizen, BookRequest, CancelRequest, FreeSlotsRequest,
    ListPlansRequest, MarkRequest, MoveRequest, SetPlansRequest,
};

use super::{TokenInterceptor, status_error};

/// An AppointmentDesk client with the operator's token.
pub type AppointmentDesk = AppointmentDeskClient<InterceptedService<Channel, TokenInterceptor>>;

/// Appointment commands.
#[derive(Debug, Subcommand)]
pub enum AppointmentsCommand {
    /// Replace this body's booking plans from a TOML file (see
    /// examples/appointments/celano.toml): which services are bookable at
    /// which office, when, slot length, capacity, notice, window, buffers,
    /// moves. Every plan is checked against the charter (supervisors).
    /// Without a file, show the plans in force.
    Plan {
        /// The plans file.
        file: Option<PathBuf>,
        /// Check only.
        #[arg(long)]
        dry_run: bool,
    },
    /// Free slots of a service at an office, here or at another body.
    Slots {
        /// The office id (from the charter).
        office: String,
        /// The service id (from the charter).
        service: String,
        /// Another body's node id (asked over peering).
        #[arg(long, default_value = "")]
        body: String,
        /// From this date (YYYY-MM-DD) or instant; default now.
        #[arg(long, default_value = "")]
        from: String,
        /// Until this date or instant; default two weeks on.
        #[arg(long, default_value = "")]
        until: String,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Book a slot for a caller (phone or desk). At another body, only with
    /// the caller's consent to pass their data there (--consent-share).
    Book {
        /// The office id.
        office: String,
        /// The service id.
        service: String,
        /// The slot's start: 2026-12-15T09:30 (Italian time) or RFC 3339.
        start: String,
        /// Another body's node id.
        #[arg(long, default_value = "")]
        body: String,
        /// "desk" or "video".
        #[arg(long, default_value = "desk")]
        channel: String,
        /// The caller's given name.
        #[arg(long)]
        given_name: String,
        /// The caller's family name.
        #[arg(long)]
        family_name: String,
        /// The caller's postal address.
        #[arg(long)]
        address: String,
        /// The caller's e-mail (confirmation and reminders go there).
        #[arg(long)]
        email: String,
        /// The caller's phone.
        #[arg(long, default_value = "")]
        phone: String,
        /// What the caller needs.
        #[arg(long, default_value = "")]
        notes: String,
        /// The caller agrees their data goes to the body holding the
        /// calendar (needed with --body).
        #[arg(long)]
        consent_share: bool,
        /// Idempotency key (default: a new one; reuse it to retry safely).
        #[arg(long)]
        key: Option<String>,
    },
    /// Move a booking to another free slot.
    Move {
        /// The appointment id.
        id: String,
        /// The new start.
        start: String,
    },
    /// Cancel a booking (its seat is free at once; the citizen gets the
    /// cancellation).
    Cancel {
        /// The appointment id.
        id: String,
        /// Why (shown on the ticket).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// The day's appointments, per office.
    Agenda {
        /// Only this office.
        #[arg(long, default_value = "")]
        office: String,
        /// The day, YYYY-MM-DD (default today).
        #[arg(long, default_value = "")]
        date: String,
    },
    /// Mark an appointment attended or no-show (once it started).
    Mark {
        /// The appointment id.
        id: String,
        /// "attended" or "no_show".
        outcome: String,
    },
}

fn agenda_table(list: &[Appointment]) -> String {
    let mut t = urpnet_proto::cli::table();
    t.set_header([
        "time", "office", "service", "citizen", "channel", "status", "id",
    ]);
    for a in list {
        let who = a
            .citizen
            .as_ref()
            .map(|c| format!("{} {}\n{}", c.given_name, c.family_name, c.email))
            .unwrap_or_default();
        let docs = if a.documents.is_empty() {
            String::new()
        } else {
            format!(
                "\n{} document(s): {}",
                a.documents.len(),
                a.documents
                    .iter()
                    .map(|d| d.file_name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        t.add_row([
            format!(
                "{}–{}",
                a.start.get(11..16).unwrap_or(&a.start),
                a.end.get(11..16).unwrap_or(&a.end)
            ),
            a.office.clone(),
            format!("{}{docs}", a.service_title),
            who,
            a.channel.clone(),
            a.status.clone(),
            a.id.clone(),
        ]);
    }
    t.to_string()
}

fn one(a: &Appointment) -> String {
    format!(
        "{} at {} ({}), {} → {} [{}] {}{}",
        a.service_title,
        a.office_name,
        a.body,
        a.start,
        a.end,
        a.status,
        a.id,
        if a.room_url.is_empty() {
            String::new()
        } else {
            format!("\nroom: {}", a.room_url)
        }
    )
}

/// One appointment after a change: a line, or its JSON.
fn print_one(json: bool, verb: &str, r: &urpnet_proto::v1::AppointmentResponse) {
    if json {
        println!(
            "{}",
            urpnet_proto::cli::to_json("urpnet.v1.AppointmentResponse", r)
        );
    } else {
        println!(
            "{verb}: {}",
            one(&r.appointment.clone().unwrap_or_default())
        );
    }
}

/// Runs an appointments command.
///
/// # Errors
/// The node's refusal, in words.
pub async fn run(
    mut client: AppointmentDesk,
    command: AppointmentsCommand,
    json: bool,
) -> anyhow::Result<()> {
    match command {
        AppointmentsCommand::Plan { file, dry_run } => {
            let plans = match file {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    let plans = crate::appointments::plan::from_toml(&text)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                    client
                        .set_plans(SetPlansRequest { plans, dry_run })
                        .await
                        .map_err(status_error)?
                        .into_inner()
                }
                None => client
                    .list_plans(ListPlansRequest {})
                    .await
                    .map_err(status_error)?
                    .into_inner(),
            };
            if json {
                println!(
                    "{}",
                    urpnet_proto::cli::to_json("urpnet.v1.PlansResponse", &plans)
                );
                return Ok(());
            }
            let mut t = urpnet_proto::cli::table();
            t.set_header([
                "office", "service", "hours", "slot", "capacity", "notice", "window", "channels",
            ]);
            for p in &plans.plans {
                t.add_row([
                    p.office.clone(),
                    p.service.clone(),
                    if p.hours.is_empty() {
                        "(office hours)".into()
                    } else {
                        p.hours.join("\n")
                    },
                    format!("{} min every {}", p.length_min, p.interval_min),
                    p.capacity.to_string(),
                    format!("{} min", p.min_notice_min),
                    format!("{} days", p.max_days_ahead),
                    p.channels.join(", "),
                ]);
            }
            println!("{t}");
            if dry_run {
                println!(
                    "valid: {} plan(s) (not stored: --dry-run)",
                    plans.plans.len()
                );
            }
        }
        AppointmentsCommand::Slots {
            office,
            service,
            body,
            from,
            until,
            limit,
        } => {
            let r = client
                .free_slots(FreeSlotsRequest {
                    body,
                    office,
                    service,
                    from,
                    until,
                    limit,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                println!(
                    "{}",
                    urpnet_proto::cli::to_json("urpnet.v1.FreeSlotsResponse", &r)
                );
                return Ok(());
            }
            println!("{} — {}", r.service_title, r.office_name);
            let mut t = urpnet_proto::cli::table();
            t.set_header(["start", "end", "minutes", "free seats"]);
            for s in &r.slots {
                t.add_row([
                    s.start.clone(),
                    s.end.clone(),
                    s.length_min.to_string(),
                    s.free.to_string(),
                ]);
            }
            println!("{t}");
        }
        AppointmentsCommand::Book {
            office,
            service,
            start,
            body,
            channel,
            given_name,
            family_name,
            address,
            email,
            phone,
            notes,
            consent_share,
            key,
        } => {
            let key = key.unwrap_or_else(|| format!("cli-{}", ulid::Ulid::new()));
            let r = client
                .book(BookRequest {
                    body,
                    idempotency_key: key.clone(),
                    office,
                    service,
                    start,
                    channel,
                    citizen: Some(AppointmentCitizen {
                        given_name,
                        family_name,
                        address,
                        email,
                        phone,
                    }),
                    consent_processing: true,
                    consent_share,
                    hold_id: String::new(),
                    notes,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                println!(
                    "{}",
                    urpnet_proto::cli::to_json("urpnet.v1.BookResponse", &r)
                );
                return Ok(());
            }
            let a = r.appointment.unwrap_or_default();
            println!(
                "{}{}\n(idempotency key {key}; the citizen gets the confirmation by e-mail from {})",
                if r.replayed {
                    "already booked: "
                } else {
                    "booked: "
                },
                one(&a),
                a.body
            );
        }
        AppointmentsCommand::Move { id, start } => {
            let r = client
                .r#move(MoveRequest {
                    id,
                    start,
                    hold_id: String::new(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print_one(json, "moved", &r);
        }
        AppointmentsCommand::Cancel { id, reason } => {
            let r = client
                .cancel(CancelRequest { id, reason })
                .await
                .map_err(status_error)?
                .into_inner();
            print_one(json, "cancelled", &r);
        }
        AppointmentsCommand::Agenda { office, date } => {
            let r = client
                .agenda(AgendaRequest { office, date })
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                println!(
                    "{}",
                    urpnet_proto::cli::to_json("urpnet.v1.AgendaResponse", &r)
                );
            } else if r.appointments.is_empty() {
                println!("no appointments");
            } else {
                println!("{}", agenda_table(&r.appointments));
            }
        }
        AppointmentsCommand::Mark { id, outcome } => {
            let r = client
                .mark(MarkRequest { id, outcome })
                .await
                .map_err(status_error)?
                .into_inner();
            print_one(json, "marked", &r);
        }
    }
    Ok(())
}
