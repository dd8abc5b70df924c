-- The sample legacy shop: a normalized OLTP schema of the kind cdc-projector is
-- retrofitted onto. Everything lives in schema `public` and keeps the default
-- REPLICA IDENTITY (primary key only: updates carry no before-image).
--
-- Features a projector must cope with, on purpose:
--   * text, char(2), bigint and composite primary keys (order_items)
--   * ON UPDATE CASCADE foreign keys, so a primary-key change of a customer or a
--     product SKU rewrites the referencing rows in the same transaction
--   * nullable and NOT NULL columns, soft deletes (customers.deleted_at)
--   * numeric(12,2) money, numeric(14,4) payment amounts, timestamptz
--   * text[] and jsonb columns
--   * large text columns (customers.notes, products.description) that get
--     TOASTed out of line, so an update that does not touch them is decoded as
--     an "unchanged TOAST" placeholder

CREATE TABLE countries (
    code        char(2)     PRIMARY KEY,
    name        text        NOT NULL,
    region      text        NULL
);

CREATE TABLE customers (
    id            bigserial    PRIMARY KEY,
    name          text         NOT NULL,
    email         text         NOT NULL,
    country_code  char(2)      NULL REFERENCES countries (code) ON UPDATE CASCADE,
    tier          text         NOT NULL DEFAULT 'standard'
                               CHECK (tier IN ('standard', 'silver', 'gold')),
    notes         text         NULL,                  -- may be several kB: TOASTed
    created_at    timestamptz  NOT NULL DEFAULT now(),
    updated_at    timestamptz  NULL,
    deleted_at    timestamptz  NULL                   -- soft delete
);
CREATE INDEX customers_country_idx ON customers (country_code);

CREATE TABLE addresses (
    id            bigserial    PRIMARY KEY,
    customer_id   bigint       NOT NULL REFERENCES customers (id) ON UPDATE CASCADE,
    kind          text         NOT NULL CHECK (kind IN ('billing', 'shipping')),
    line1         text         NOT NULL,
    city          text         NOT NULL,
    postal_code   text         NULL,
    country_code  char(2)      NOT NULL REFERENCES countries (code) ON UPDATE CASCADE
);
CREATE INDEX addresses_customer_idx ON addresses (customer_id);

CREATE TABLE products (
    sku           varchar(32)    PRIMARY KEY,
    name          text           NOT NULL,
    price         numeric(12,2)  NOT NULL CHECK (price >= 0),
    tags          text[]         NOT NULL DEFAULT '{}',
    attributes    jsonb          NULL,
    description   text           NULL,                -- may be several kB: TOASTed
    active        boolean        NOT NULL DEFAULT true,
    updated_at    timestamptz    NULL
);

CREATE TABLE orders (
    id            bigserial      PRIMARY KEY,
    customer_id   bigint         NOT NULL REFERENCES customers (id) ON UPDATE CASCADE,
    status        text           NOT NULL DEFAULT 'pending'
                                 CHECK (status IN ('pending', 'paid', 'shipped', 'delivered', 'cancelled')),
    total         numeric(12,2)  NOT NULL DEFAULT 0,
    currency      char(3)        NOT NULL DEFAULT 'EUR',
    placed_at     timestamptz    NOT NULL DEFAULT now(),
    shipped_at    timestamptz    NULL,
    note          text           NULL
);
CREATE INDEX orders_customer_idx ON orders (customer_id);
CREATE INDEX orders_placed_idx ON orders (placed_at);

CREATE TABLE order_items (
    order_id      bigint         NOT NULL REFERENCES orders (id) ON UPDATE CASCADE,
    line_no       integer        NOT NULL CHECK (line_no > 0),
    sku           varchar(32)    NOT NULL REFERENCES products (sku) ON UPDATE CASCADE,
    quantity      integer        NOT NULL CHECK (quantity > 0),
    unit_price    numeric(12,2)  NOT NULL,
    discount_pct  numeric(5,2)   NULL,
    PRIMARY KEY (order_id, line_no)
);
CREATE INDEX order_items_sku_idx ON order_items (sku);

CREATE TABLE payments (
    id            bigserial      PRIMARY KEY,
    order_id      bigint         NOT NULL REFERENCES orders (id) ON UPDATE CASCADE,
    amount        numeric(14,4)  NOT NULL,
    method        text           NOT NULL CHECK (method IN ('card', 'paypal', 'transfer', 'voucher')),
    paid_at       timestamptz    NULL,                -- NULL while the payment is pending
    reference     uuid           NULL
);
CREATE INDEX payments_order_idx ON payments (order_id);
