-- Cell-key perturbation of published counts (docs/decisions.md 136): each
-- record's key (0..=255, the first byte of its id) and, on the rollups, the
-- sum of the keys of the records counted, so a cell's noise is the same
-- whichever table answers. Records stored before this migration get their
-- key from their id here.
ALTER TABLE archive_records ADD COLUMN rkey INTEGER NOT NULL DEFAULT 0;
UPDATE archive_records SET rkey =
    (instr('0123456789ABCDEF', substr(hex(id), 1, 1)) - 1) * 16
    + instr('0123456789ABCDEF', substr(hex(id), 2, 1)) - 1;

ALTER TABLE archive_weekly ADD COLUMN key_sum INTEGER NOT NULL DEFAULT 0;
UPDATE archive_weekly SET key_sum = COALESCE((
    SELECT SUM(r.rkey) FROM archive_records r
    WHERE r.week = archive_weekly.week
      AND r.category = archive_weekly.category
      AND r.territory = archive_weekly.territory), 0);

ALTER TABLE archive_weekly_province ADD COLUMN key_sum INTEGER NOT NULL DEFAULT 0;
UPDATE archive_weekly_province SET key_sum = COALESCE((
    SELECT SUM(r.rkey) FROM archive_records r
    WHERE r.week = archive_weekly_province.week
      AND r.category = archive_weekly_province.category
      AND r.region = archive_weekly_province.region
      AND r.province = archive_weekly_province.province), 0);
