-- What recovery needs the database to know.
--
-- A reservation that can never become an order is rejected here, under the
-- same reservation number an order would hold: the writer and the rejecter
-- both lock the product row first and look for the other's record, so
-- exactly one of {order, rejection} exists for a reservation, whichever
-- consumer gets there first (a slow writer and the consumer that took its
-- entries over cannot both win).
CREATE TABLE rejected_reservations (
    product_id INTEGER NOT NULL,
    reservation_seq INTEGER NOT NULL,
    member_id INTEGER NOT NULL,
    reason TEXT NOT NULL,
    rejected_at_ms INTEGER NOT NULL,
    PRIMARY KEY (product_id, reservation_seq)
);

-- The backstop sweep finds unpaid orders past their deadline that Redis
-- does not know about (lost with its data) without scanning the table.
CREATE INDEX orders_unpaid_by_deadline ON orders (pay_deadline_ms) WHERE status = 'unpaid';
