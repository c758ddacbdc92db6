-- Change data capture: every change to a flash item that a cache cares
-- about lands in product_changes in the same transaction as the change,
-- whether it came through the API or from plain SQL. A relay moves the rows
-- to a Redis Stream and marks them relayed.
--
-- Captured: inserts, deletes, and updates of name, prices, stock_total and
-- the sale window. Not captured: stock_available and updated_at_ms, which
-- every order batch and cancellation changes (they are the system's own
-- bookkeeping, not edits).

ALTER TABLE products ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;

CREATE TABLE product_changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    product_id INTEGER NOT NULL,
    op TEXT NOT NULL CHECK (op IN ('insert', 'update', 'delete')),
    old_stock_total INTEGER,
    new_stock_total INTEGER,
    changed_at_ms INTEGER NOT NULL,
    relayed_at_ms INTEGER,
    -- Units the stock change actually moved in Redis (removals stop at what
    -- is unreserved), recorded when the database's stock_available was
    -- adjusted by the same amount: the database side's once-only guard.
    stock_applied INTEGER
);

CREATE INDEX product_changes_unrelayed ON product_changes (id) WHERE relayed_at_ms IS NULL;

CREATE TRIGGER products_capture_insert AFTER INSERT ON products
BEGIN
    INSERT INTO product_changes (product_id, op, old_stock_total, new_stock_total, changed_at_ms)
    VALUES (NEW.id, 'insert', NULL, NEW.stock_total,
            CAST(ROUND((julianday('now') - 2440587.5) * 86400000) AS INTEGER));
END;

CREATE TRIGGER products_capture_update AFTER UPDATE ON products
WHEN OLD.name IS NOT NEW.name
  OR OLD.price_cents IS NOT NEW.price_cents
  OR OLD.flash_price_cents IS NOT NEW.flash_price_cents
  OR OLD.stock_total IS NOT NEW.stock_total
  OR OLD.starts_at IS NOT NEW.starts_at
  OR OLD.ends_at IS NOT NEW.ends_at
BEGIN
    -- Recursive triggers are off in SQLite by default, and revision is not
    -- a captured column, so this does not capture itself.
    UPDATE products SET revision = revision + 1 WHERE id = NEW.id;
    INSERT INTO product_changes (product_id, op, old_stock_total, new_stock_total, changed_at_ms)
    VALUES (NEW.id, 'update', OLD.stock_total, NEW.stock_total,
            CAST(ROUND((julianday('now') - 2440587.5) * 86400000) AS INTEGER));
END;

CREATE TRIGGER products_capture_delete AFTER DELETE ON products
BEGIN
    INSERT INTO product_changes (product_id, op, old_stock_total, new_stock_total, changed_at_ms)
    VALUES (OLD.id, 'delete', OLD.stock_total, NULL,
            CAST(ROUND((julianday('now') - 2440587.5) * 86400000) AS INTEGER));
END;
