-- Flash items and the orders written from the order stream.
-- Times are unix seconds (sale window) or unix milliseconds (*_ms columns).

CREATE TABLE products (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    price_cents INTEGER NOT NULL CHECK (price_cents >= 0),
    flash_price_cents INTEGER NOT NULL CHECK (flash_price_cents >= 0),
    -- Flash-sale stock as configured.
    stock_total INTEGER NOT NULL CHECK (stock_total >= 0),
    -- Unsold as the database sees it: total minus orders that are not
    -- cancelled. Never negative: the last line of defence against oversell.
    stock_available INTEGER NOT NULL CHECK (stock_available >= 0),
    starts_at INTEGER NOT NULL,
    ends_at INTEGER NOT NULL,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    CHECK (starts_at < ends_at)
);

CREATE TABLE orders (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    product_id INTEGER NOT NULL REFERENCES products (id),
    member_id INTEGER NOT NULL,
    -- The reservation number the Redis reserve script handed out: one
    -- reservation can only ever become one order, however often its stream
    -- message is delivered.
    reservation_seq INTEGER NOT NULL,
    price_cents INTEGER NOT NULL,
    status TEXT NOT NULL DEFAULT 'unpaid' CHECK (status IN ('unpaid', 'paid', 'cancelled')),
    created_at_ms INTEGER NOT NULL,
    pay_deadline_ms INTEGER NOT NULL,
    paid_at_ms INTEGER,
    cancelled_at_ms INTEGER,
    UNIQUE (product_id, reservation_seq)
);

-- At most one live order per member and flash item; a cancelled order frees
-- the member to buy again.
CREATE UNIQUE INDEX orders_one_live_per_member ON orders (product_id, member_id) WHERE status <> 'cancelled';
CREATE INDEX orders_by_member ON orders (member_id);
