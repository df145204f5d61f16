-- Up to $4 outbox rows for peer $1 after seq $2 that are due at $3 ms, in
-- order, with what each carries: an event's envelope (kind 1, item = event
-- id) or a citizen's contact (kind 2, item = ticket id). A row whose event or
-- contact is gone comes back with NULLs.
SELECT o.seq, o.kind, o.item, e.envelope, c.full_name, c.email, c.phone, c.fiscal_code
FROM outbox o
LEFT JOIN ticket_events e ON o.kind = 1 AND e.event_id = o.item
LEFT JOIN citizen_contacts c ON o.kind = 2 AND c.ticket_id = o.item
WHERE o.peer = $1 AND o.seq > $2 AND o.not_before_ms <= $3
ORDER BY o.seq
LIMIT $4
