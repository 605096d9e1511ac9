-- A deterministic sqlite3 workload for the LD_PRELOAD tests: bulk inserts with blobs of many sizes,
-- an index, updates, deletes, joins, sorting and grouping, a vacuum. The output must equal the one
-- from a run on glibc's malloc.
PRAGMA cache_size = -20000;
PRAGMA synchronous = OFF;
PRAGMA journal_mode = MEMORY;
CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, grp INTEGER, payload BLOB);
WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 60000)
INSERT INTO items
SELECT x, printf('item-%08d-%s', (x * 2654435761) % 1000003, substr('abcdefghijklmnopqrstuvwxyz', 1 + x % 26)),
       x % 97, zeroblob((x * 7919) % 1500)
FROM n;
CREATE INDEX items_name ON items(name);
CREATE TABLE groups(grp INTEGER PRIMARY KEY, label TEXT);
WITH RECURSIVE n(x) AS (SELECT 0 UNION ALL SELECT x + 1 FROM n WHERE x < 96)
INSERT INTO groups SELECT x, 'group ' || x FROM n;
UPDATE items SET payload = zeroblob(length(payload) / 2 + 17), name = name || '!' WHERE id % 3 = 0;
DELETE FROM items WHERE id % 11 = 0;
SELECT count(*), sum(length(payload)), min(name), max(name) FROM items;
SELECT g.label, count(*), sum(length(i.payload)) FROM items i JOIN groups g USING (grp)
GROUP BY g.label ORDER BY sum(length(i.payload)) DESC, g.label LIMIT 5;
SELECT name FROM items ORDER BY name DESC LIMIT 3;
SELECT group_concat(id, ',') FROM (SELECT id FROM items WHERE name LIKE 'item-0000%' ORDER BY id);
VACUUM;
PRAGMA integrity_check;
