#!/usr/bin/env bash
# The databases of the stack, made on PostgreSQL's first start (the postgres image runs the
# scripts of /docker-entrypoint-initdb.d once, on an empty data folder): one role and one
# database each for loopline's metadata (jobs included), MLflow's tracking store and Label
# Studio. Each role owns its database and can do nothing elsewhere. Creating what exists is
# skipped, so running it again (by hand, after adding a database) changes nothing else.
# Passwords come from the environment (docker/compose.yaml passes them from docker/.env).
set -euo pipefail

create_database() {  # role password database
    psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "${POSTGRES_DB:-$POSTGRES_USER}" \
        -v role="$1" -v password="$2" -v db="$3" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'role', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'db') \gexec
SQL
}

create_database "${METADATA_DB_USER:-loopline}" "$METADATA_DB_PASSWORD" "${METADATA_DB_NAME:-loopline}"
create_database "${MLFLOW_DB_USER:-mlflow}" "$MLFLOW_DB_PASSWORD" "${MLFLOW_DB_NAME:-mlflow}"
create_database "${LABEL_STUDIO_DB_USER:-labelstudio}" "$LABEL_STUDIO_DB_PASSWORD" "${LABEL_STUDIO_DB_NAME:-labelstudio}"
