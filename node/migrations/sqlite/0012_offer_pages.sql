-- ListOffers pages each list in its keyset order (updated_ms, id) (decision
-- 126); these indexes hold only tickets with an offer pending, so a page
-- reads its rows in order instead of sorting every pending ticket (offers
-- made used the owner's index and read all of the owner's tickets).
DROP INDEX tickets_pending_to;
CREATE INDEX tickets_offers_in ON tickets (pending_to, updated_ms, id) WHERE pending_to <> '';
CREATE INDEX tickets_offers_out ON tickets (owner_node, updated_ms, id) WHERE pending_to <> '';
