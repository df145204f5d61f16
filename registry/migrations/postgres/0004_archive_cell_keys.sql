-- Cell-key perturbation of published counts (docs/decisions.md 136): each
-- record's key (0..=255, the first byte of its id) and, on the rollups, the
-- sum of the keys of the records counted, so a cell's noise is the same
-- whichever table answers. Records stored before this migration get their
-- key from their id here.
ALTER TABLE archive_records ADD COLUMN rkey SMALLINT NOT NULL DEFAULT 0;
UPDATE archive_records SET rkey = get_byte(id, 0);

ALTER TABLE archive_weekly ADD COLUMN key_sum BIGINT NOT NULL DEFAULT 0;
UPDATE archive_weekly w SET key_sum = COALESCE((
    SELECT SUM(r.rkey) FROM archive_records r
    WHERE r.week = w.week AND r.category = w.category AND r.territory = w.territory), 0);

ALTER TABLE archive_weekly_province ADD COLUMN key_sum BIGINT NOT NULL DEFAULT 0;
UPDATE archive_weekly_province p SET key_sum = COALESCE((
    SELECT SUM(r.rkey) FROM archive_records r
    WHERE r.week = p.week AND r.category = p.category
      AND r.region = p.region AND r.province = p.province), 0);
