//! Possible duplicates: the open tickets of the last days, kept in memory by
//! category, grid cell and address, so that a create can suggest the
//! tickets it may duplicate without a database round trip.
//!
//! The index is derived data: it is rebuilt from the store at start-up and
//! updated after every committed change. A suggestion is advice to an
//! operator, so a ticket committed a moment ago by a concurrent request may be
//! missed; nothing else depends on it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use urpnet_proto::text;
use urpnet_proto::v1::{DuplicateCandidate, Status, Ticket};

use crate::shared_ticket::fold::millis;
use crate::shared_ticket::lifecycle;

/// Degrees per side of a grid cell: about 1.1 km north-south and 0.8 km
/// east-west in Italy.
const CELL_DEGREES: f64 = 0.01;

/// Most suggestions returned.
const MAX_SUGGESTIONS: usize = 5;

/// Most recent tickets read from each cell or address list.
const CANDIDATES_PER_LIST: usize = 20;

/// The grid cell holding a point.
fn cell(latitude: f64, longitude: f64) -> (i32, i32) {
    (
        (latitude / CELL_DEGREES).floor() as i32,
        (longitude / CELL_DEGREES).floor() as i32,
    )
}

/// What the index keeps of a ticket.
#[derive(Debug, Clone)]
struct Entry {
    id: String,
    reference: String,
    subject: String,
    status: i32,
    point: Option<(f64, f64)>,
    created_ms: u64,
    cell_key: Option<CellKey>,
    address_key: Option<AddressKey>,
}

/// (category, cell).
type CellKey = (String, (i32, i32));
/// (category, istat code, folded address).
type AddressKey = (String, String, String);

#[derive(Debug, Default)]
struct Inner {
    /// (category, cell) -> tickets with coordinates there.
    by_cell: HashMap<CellKey, VecDeque<String>>,
    /// (category, istat code, folded address) -> tickets at that address.
    by_address: HashMap<AddressKey, VecDeque<String>>,
    /// id -> entry.
    entries: HashMap<String, Entry>,
}

/// The in-memory index of recent open tickets.
#[derive(Debug)]
pub struct RecentTickets {
    inner: Mutex<Inner>,
    window_ms: u64,
    radius_m: f64,
}

fn keys(ticket: &Ticket) -> (Option<CellKey>, Option<AddressKey>) {
    let location = ticket.location.clone().unwrap_or_default();
    let by_cell = location
        .coordinates
        .map(|c| (ticket.category.clone(), cell(c.latitude, c.longitude)));
    let address = text::fold(&location.address);
    let by_address =
        (!address.is_empty()).then(|| (ticket.category.clone(), location.istat_code, address));
    (by_cell, by_address)
}

fn is_open(ticket: &Ticket) -> bool {
    !lifecycle::is_terminal(ticket.status()) && ticket.status() != Status::Resolved
}

/// Great-circle distance in metres.
fn haversine_m((lat1, lon1): (f64, f64), (lat2, lon2): (f64, f64)) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6_371_000.0 * a.sqrt().asin()
}

impl RecentTickets {
    /// An empty index suggesting tickets created within `window_ms` and
    /// closer than `radius_m` (or at the same address).
    pub fn new(window_ms: u64, radius_m: f64) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            window_ms,
            radius_m,
        }
    }

    /// Records a ticket's current state: indexed while open and recent,
    /// dropped otherwise.
    pub fn record(&self, ticket: &Ticket) {
        let mut inner = self.inner.lock().expect("duplicates lock");
        let created_ms = ticket.created_at.as_ref().map(millis).unwrap_or_default();
        if let Some(entry) = inner.entries.get_mut(&ticket.id) {
            if is_open(ticket) {
                entry.status = ticket.status;
            } else {
                inner.remove(&ticket.id);
            }
            return;
        }
        if !is_open(ticket) {
            return;
        }
        let (cell_key, address_key) = keys(ticket);
        if let Some(key) = &cell_key {
            inner
                .by_cell
                .entry(key.clone())
                .or_default()
                .push_back(ticket.id.clone());
        }
        if let Some(key) = &address_key {
            inner
                .by_address
                .entry(key.clone())
                .or_default()
                .push_back(ticket.id.clone());
        }
        let location = ticket.location.clone().unwrap_or_default();
        inner.entries.insert(
            ticket.id.clone(),
            Entry {
                id: ticket.id.clone(),
                reference: ticket.reference.clone(),
                subject: ticket.subject.clone(),
                status: ticket.status,
                point: location.coordinates.map(|c| (c.latitude, c.longitude)),
                created_ms,
                cell_key: cell_key.clone(),
                address_key: address_key.clone(),
            },
        );
        // Forget what has left the window, oldest first, in the lists this
        // ticket joined: every list is pruned whenever it grows.
        let horizon = created_ms.saturating_sub(self.window_ms);
        if let Some(key) = cell_key {
            inner.prune(|inner| inner.by_cell.get_mut(&key), horizon);
        }
        if let Some(key) = address_key {
            inner.prune(|inner| inner.by_address.get_mut(&key), horizon);
        }
    }

    /// Open tickets of the same category created within the window before
    /// `ticket`, within the radius (both located) or at the same address of
    /// the same comune; nearest first, at most five.
    pub fn suggest(&self, ticket: &Ticket) -> Vec<DuplicateCandidate> {
        let location = ticket.location.clone().unwrap_or_default();
        let point = location.coordinates.map(|c| (c.latitude, c.longitude));
        let created_ms = ticket.created_at.as_ref().map(millis).unwrap_or_default();
        let since = created_ms.saturating_sub(self.window_ms);
        let (_, address_key) = keys(ticket);
        let inner = self.inner.lock().expect("duplicates lock");
        // (list, found by address) to read. Only the most recent candidates of
        // each list are read: lists are in creation order, and reading them
        // whole would cost as much as an area has tickets.
        let mut lists: Vec<(&VecDeque<String>, bool)> = Vec::new();
        if let Some((lat, lon)) = point {
            let dlat = self.radius_m / 111_320.0;
            let dlon = self.radius_m / (111_320.0 * lat.to_radians().cos().max(0.01));
            let (south, west) = cell(lat - dlat, lon - dlon);
            let (north, east) = cell(lat + dlat, lon + dlon);
            for row in south..=north {
                for column in west..=east {
                    if let Some(list) = inner.by_cell.get(&(ticket.category.clone(), (row, column)))
                    {
                        lists.push((list, false));
                    }
                }
            }
        }
        if let Some(list) = address_key.and_then(|key| inner.by_address.get(&key)) {
            lists.push((list, true));
        }
        let mut seen: HashSet<&str> = HashSet::new();
        let mut found: Vec<DuplicateCandidate> = Vec::new();
        for (list, by_address) in lists {
            for id in list.iter().rev().take(CANDIDATES_PER_LIST) {
                let Some(entry) = inner.entries.get(id) else {
                    continue;
                };
                if entry.id == ticket.id || entry.created_ms < since || !seen.insert(id) {
                    continue;
                }
                let distance_m = point.zip(entry.point).map(|(a, b)| haversine_m(a, b));
                if by_address || distance_m.is_some_and(|d| d <= self.radius_m) {
                    found.push(DuplicateCandidate {
                        ticket_id: entry.id.clone(),
                        reference: entry.reference.clone(),
                        subject: entry.subject.clone(),
                        status: entry.status,
                        distance_m,
                    });
                }
            }
        }
        found.sort_by(|a, b| {
            a.distance_m
                .unwrap_or(f64::MAX)
                .total_cmp(&b.distance_m.unwrap_or(f64::MAX))
                .then_with(|| b.ticket_id.cmp(&a.ticket_id))
        });
        found.truncate(MAX_SUGGESTIONS);
        found
    }

    /// How many tickets the index holds.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("duplicates lock").entries.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    /// Removes the tickets created before `horizon` from the front of a list
    /// (and from the index).
    fn prune(&mut self, list: impl Fn(&mut Inner) -> Option<&mut VecDeque<String>>, horizon: u64) {
        loop {
            let Some(front) = list(self).and_then(|l| l.front().cloned()) else {
                return;
            };
            let old = self
                .entries
                .get(&front)
                .is_none_or(|e| e.created_ms < horizon);
            if !old {
                return;
            }
            if self.entries.contains_key(&front) {
                self.remove(&front);
            } else if let Some(l) = list(self) {
                l.pop_front();
            }
        }
    }

    fn remove(&mut self, id: &str) {
        let Some(entry) = self.entries.remove(id) else {
            return;
        };
        if let Some(list) = entry.cell_key.and_then(|key| self.by_cell.get_mut(&key)) {
            list.retain(|other| other != id);
        }
        if let Some(list) = entry
            .address_key
            .and_then(|key| self.by_address.get_mut(&key))
        {
            list.retain(|other| other != id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use urpnet_proto::v1::{Coordinates, Location};

    fn ticket(
        id: &str,
        category: &str,
        point: Option<(f64, f64)>,
        address: &str,
        created_ms: u64,
    ) -> Ticket {
        Ticket {
            id: id.into(),
            reference: format!("c_a662-2026-{id}"),
            category: category.into(),
            subject: "Buca".into(),
            status: Status::New as i32,
            location: Some(Location {
                istat_code: "072006".into(),
                address: address.into(),
                coordinates: point.map(|(latitude, longitude)| Coordinates {
                    latitude,
                    longitude,
                }),
            }),
            created_at: Some(crate::shared_ticket::fold::timestamp(created_ms)),
            ..Default::default()
        }
    }

    const DAY: u64 = 24 * 3600 * 1000;

    #[test]
    fn suggests_nearby_same_category_recent_open_tickets_nearest_first() {
        let index = RecentTickets::new(14 * DAY, 300.0);
        let t0 = 100 * DAY;
        // Across a cell border, 200 m apart.
        index.record(&ticket(
            "a",
            "strade.buche",
            Some((41.119_999, 16.87)),
            "",
            t0,
        ));
        index.record(&ticket("b", "strade.buche", Some((41.1201, 16.87)), "", t0));
        index.record(&ticket("far", "strade.buche", Some((41.15, 16.87)), "", t0));
        index.record(&ticket(
            "other",
            "illuminazione",
            Some((41.1201, 16.87)),
            "",
            t0,
        ));
        index.record(&ticket(
            "old",
            "strade.buche",
            Some((41.1201, 16.87)),
            "",
            t0 - 20 * DAY,
        ));
        let new = ticket("new", "strade.buche", Some((41.1218, 16.87)), "", t0 + 1000);
        let ids: Vec<String> = index
            .suggest(&new)
            .into_iter()
            .map(|c| c.ticket_id)
            .collect();
        assert_eq!(ids, ["b", "a"]);

        // Closing a ticket takes it out.
        let mut closed = ticket("b", "strade.buche", Some((41.1201, 16.87)), "", t0);
        closed.status = Status::Closed as i32;
        index.record(&closed);
        let ids: Vec<String> = index
            .suggest(&new)
            .into_iter()
            .map(|c| c.ticket_id)
            .collect();
        assert_eq!(ids, ["a"]);
    }

    #[test]
    fn tickets_leave_the_index_when_they_leave_the_window() {
        let index = RecentTickets::new(14 * DAY, 300.0);
        index.record(&ticket(
            "old",
            "rifiuti",
            Some((41.12, 16.87)),
            "Via Roma 1",
            DAY,
        ));
        index.record(&ticket(
            "kept",
            "rifiuti",
            Some((41.12, 16.87)),
            "",
            10 * DAY,
        ));
        assert_eq!(index.len(), 2);
        index.record(&ticket(
            "new",
            "rifiuti",
            Some((41.12, 16.87)),
            "",
            16 * DAY,
        ));
        assert_eq!(
            index.len(),
            2,
            "the ticket from day 1 is forgotten on day 16"
        );
        let probe = ticket("probe", "rifiuti", None, "Via Roma 1", 16 * DAY);
        assert!(index.suggest(&probe).is_empty(), "and its address list too");
    }

    #[test]
    fn distances_are_great_circle_metres() {
        let d = haversine_m((41.1171, 16.8719), (41.1180, 16.8719));
        assert!((d - 100.0).abs() < 1.0, "{d}");
    }

    #[test]
    fn same_address_without_coordinates_is_suggested() {
        let index = RecentTickets::new(14 * DAY, 300.0);
        index.record(&ticket("a", "illuminazione", None, "Via Sparano, 1", DAY));
        index.record(&ticket("b", "illuminazione", None, "Via Sparano 2", DAY));
        let new = ticket("c", "illuminazione", None, "via sparano 1", DAY + 1);
        let found = index.suggest(&new);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].ticket_id, "a");
        assert_eq!(found[0].distance_m, None);
    }
}
