//! The ticket lifecycle (DESIGN.md §3):
//! `new -> assigned -> in_progress -> (waiting_citizen) -> resolved -> closed`,
//! plus `rejected` and `merged`.

use urpnet_proto::v1::Status;

/// Whether a status is terminal: nothing moves a ticket out of it.
pub fn is_terminal(status: Status) -> bool {
    matches!(status, Status::Closed | Status::Rejected | Status::Merged)
}

/// Statuses a ticket may move to from `from` by a status change. `Merged` is
/// reached only through a `Merged` event, never by a plain status change.
pub fn allowed_targets(from: Status) -> &'static [Status] {
    use Status::*;
    match from {
        New => &[Assigned, InProgress, WaitingCitizen, Resolved, Rejected],
        Assigned => &[InProgress, WaitingCitizen, Resolved, Rejected],
        InProgress => &[Assigned, WaitingCitizen, Resolved, Rejected],
        WaitingCitizen => &[InProgress, Resolved, Closed, Rejected],
        Resolved => &[InProgress, Closed],
        Closed | Rejected | Merged | Unspecified => &[],
    }
}

/// Whether a status change `from -> to` is allowed.
pub fn allowed(from: Status, to: Status) -> bool {
    allowed_targets(from).contains(&to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_statuses_have_no_way_out_and_merged_needs_its_own_event() {
        for s in [Status::Closed, Status::Rejected, Status::Merged] {
            assert!(is_terminal(s));
            assert!(allowed_targets(s).is_empty());
        }
        for s in [
            Status::New,
            Status::Assigned,
            Status::InProgress,
            Status::WaitingCitizen,
            Status::Resolved,
        ] {
            assert!(!allowed(s, Status::Merged));
            assert!(!allowed(s, s), "{s:?} -> itself");
        }
        assert!(allowed(Status::Resolved, Status::InProgress), "reopen");
        assert!(!allowed(Status::New, Status::Closed));
    }
}
