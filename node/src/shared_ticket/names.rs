//! Lowercase names of the wire enums, as the CLI, the logs and the docs
//! spell them (`in_progress`, `pec`, `urgent`).

use urpnet_proto::v1::{Channel, Priority, Status};

macro_rules! names {
    ($ty:ident, $prefix:literal, $name:ident, $parse:ident, $all:ident) => {
        /// The lowercase name.
        pub fn $name(value: $ty) -> String {
            value
                .as_str_name()
                .trim_start_matches($prefix)
                .to_lowercase()
        }

        /// Parses a lowercase name; `unspecified` is refused.
        pub fn $parse(name: &str) -> Option<$ty> {
            let value = $ty::from_str_name(&format!("{}{}", $prefix, name.to_uppercase()))?;
            (value as i32 != 0).then_some(value)
        }

        /// Every name but `unspecified`, for help texts and errors.
        pub fn $all() -> Vec<String> {
            (1..)
                .map_while(|i| $ty::try_from(i).ok())
                .map($name)
                .collect()
        }
    };
}

names!(Status, "STATUS_", status_name, parse_status, status_names);
names!(
    Channel,
    "CHANNEL_",
    channel_name,
    parse_channel,
    channel_names
);
names!(
    Priority,
    "PRIORITY_",
    priority_name,
    parse_priority,
    priority_names
);

/// A status as citizens read it, in Italian (tracking page, e-mails).
pub fn status_label_it(status: Status) -> &'static str {
    match status {
        Status::New | Status::Unspecified => "Ricevuta",
        Status::Assigned => "Assegnata a un ufficio",
        Status::InProgress => "In lavorazione",
        Status::WaitingCitizen => "In attesa di sue informazioni",
        Status::Resolved => "Risolta",
        Status::Closed => "Chiusa",
        Status::Rejected => "Non accolta",
        Status::Merged => "Unita a un'altra segnalazione",
    }
}

/// A ticket's status in FixMyStreet's extended set (Open311 updates, the
/// webhook): a pending handoff is an internal referral.
pub fn fixmystreet_status(t: &urpnet_proto::v1::Ticket) -> &'static str {
    if t.pending_handoff.is_some() {
        return "INTERNAL_REFERRAL";
    }
    fixmystreet_of(t.status())
}

/// A status in FixMyStreet's extended set.
pub fn fixmystreet_of(status: Status) -> &'static str {
    match status {
        Status::New | Status::Unspecified => "OPEN",
        Status::Assigned => "ACTION_SCHEDULED",
        Status::InProgress => "IN_PROGRESS",
        Status::WaitingCitizen => "INVESTIGATING",
        Status::Resolved => "FIXED",
        Status::Closed => "CLOSED",
        Status::Rejected => "NO_FURTHER_ACTION",
        Status::Merged => "DUPLICATE",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(status_name(Status::InProgress), "in_progress");
        assert_eq!(
            parse_status("waiting_citizen"),
            Some(Status::WaitingCitizen)
        );
        assert_eq!(parse_status("unspecified"), None);
        assert_eq!(parse_channel("pec"), Some(Channel::Pec));
        assert_eq!(channel_names().len(), 10);
        assert_eq!(priority_names(), ["low", "normal", "high", "urgent"]);
    }
}
