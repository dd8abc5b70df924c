-- Backing store of the local stack's FerretDB (postgresql handler): role and database
-- ferretdb in the stack's PostgreSQL cluster. Run by psql as a superuser on each
-- `up ferretdb`; every statement is idempotent.
--
-- FerretDB v1 pushes a filter `{field: scalar}` down to PostgreSQL as
-- `_jsonb->'field' @> value` (top-level fields only), and indexes collections with
-- btree expression indexes that this operator cannot use: every `_id` lookup would
-- scan the whole table. The event trigger below gives each table FerretDB creates
-- GIN indexes on the fields cdc-projector looks documents up by (`_id`; `t` and `x`
-- of its mirror collections), which serve exactly that operator.
\set ON_ERROR_STOP on

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ferretdb') THEN
    CREATE ROLE ferretdb LOGIN PASSWORD 'ferretdb';
  END IF;
END
$$;

SELECT 'CREATE DATABASE ferretdb OWNER ferretdb'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'ferretdb')\gexec

\connect ferretdb

CREATE OR REPLACE FUNCTION cdcp_ferretdb_lookup_indexes() RETURNS event_trigger
LANGUAGE plpgsql AS $$
DECLARE
  obj record;
  field text;
BEGIN
  FOR obj IN SELECT * FROM pg_event_trigger_ddl_commands()
             WHERE command_tag = 'CREATE TABLE' AND object_type = 'table' LOOP
    IF EXISTS (SELECT FROM pg_attribute WHERE attrelid = obj.objid AND attname = '_jsonb') THEN
      FOREACH field IN ARRAY ARRAY['_id', 't', 'x'] LOOP
        EXECUTE format('CREATE INDEX ON %s USING gin ((_jsonb -> %L) jsonb_path_ops)',
                       obj.object_identity, field);
      END LOOP;
    END IF;
  END LOOP;
END
$$;

DROP EVENT TRIGGER IF EXISTS cdcp_ferretdb_lookup_indexes;
CREATE EVENT TRIGGER cdcp_ferretdb_lookup_indexes ON ddl_command_end
  WHEN TAG IN ('CREATE TABLE') EXECUTE FUNCTION cdcp_ferretdb_lookup_indexes();
