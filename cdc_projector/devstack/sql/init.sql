-- Bootstrap of the sample source database, shared by the local stack
-- (python -m cdc_projector.devstack up postgres) and docker/compose.yaml
-- (mounted into /docker-entrypoint-initdb.d). Run by psql as a superuser;
-- every statement is idempotent, so it is re-run on each `up`.
--
--   role shop/shop           owns database shop (the "legacy application")
--   role cdc_capture/...     LOGIN REPLICATION, SELECT on shop's tables (today and future)
--   publication cdc_projector FOR ALL TABLES in database shop (needs a superuser,
--                            so Debezium runs with publication.autocreate.mode=disabled)
\set ON_ERROR_STOP on

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'shop') THEN
    CREATE ROLE shop LOGIN PASSWORD 'shop';
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'cdc_capture') THEN
    CREATE ROLE cdc_capture LOGIN REPLICATION PASSWORD 'cdc_capture';
  END IF;
END
$$;
ALTER ROLE cdc_capture LOGIN REPLICATION;

SELECT 'CREATE DATABASE shop OWNER shop'
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'shop')\gexec

\connect shop

GRANT CONNECT ON DATABASE shop TO cdc_capture;
GRANT USAGE ON SCHEMA public TO cdc_capture;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO cdc_capture;
-- tables that role shop creates later (in any schema) are readable too
ALTER DEFAULT PRIVILEGES FOR ROLE shop GRANT SELECT ON TABLES TO cdc_capture;
ALTER DEFAULT PRIVILEGES FOR ROLE shop IN SCHEMA public GRANT SELECT ON TABLES TO cdc_capture;

SELECT 'CREATE PUBLICATION cdc_projector FOR ALL TABLES'
 WHERE NOT EXISTS (SELECT FROM pg_publication WHERE pubname = 'cdc_projector')\gexec
