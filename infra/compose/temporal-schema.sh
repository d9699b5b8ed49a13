#!/bin/sh
# Temporal's two databases on the stack's PostgreSQL, created and migrated to the schema version the
# admin-tools image carries; run once before the server starts (docker-compose.yml: temporal-schema).
# Idempotent: `create` of an existing database fails harmlessly, `update-schema` applies only what is new.
set -eu
tool() { temporal-sql-tool --plugin postgres12 --ep postgres -p 5432 -u "$POSTGRES_USER" --pw "$POSTGRES_PWD" "$@"; }
for db in temporal temporal_visibility; do
  tool --db "$db" create || echo "database $db exists"
done
tool --db temporal setup-schema -v 0.0 || true
tool --db temporal update-schema -d /etc/temporal/schema/postgresql/v12/temporal/versioned
tool --db temporal_visibility setup-schema -v 0.0 || true
tool --db temporal_visibility update-schema -d /etc/temporal/schema/postgresql/v12/visibility/versioned
echo "temporal schema ready"
