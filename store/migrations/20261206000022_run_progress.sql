-- A run's progress, as its workflow last recorded it (models/progress.py: RunProgress), shown by
-- GET /api/projects/{id} and GET .../runs/{run_id} while it runs and kept once it has ended.
alter table project_runs add column progress jsonb;

-- The run whose specs and settings are fixed (check_specs stored its snapshot below). Null from the
-- moment a run is claimed or a project is made until then: a spec or setting written meanwhile applies
-- to the run that is going; once set, to the next run (store/fixed.py: applies_to).
alter table projects add column fixed_run_id uuid;

-- What a run's check_specs read, stored once per check (`key`: the run and the activity): a retried
-- check returns it unchanged, so a spec written after the run fixed its specs never reaches that run.
create table run_snapshots (
  key         text primary key,
  run_id      uuid not null,
  tenant_id   uuid not null references tenants(id) on delete cascade,
  project_id  uuid not null references projects(id) on delete cascade,
  result      jsonb not null,
  created_at  timestamp not null default (now() at time zone 'utc')
);
create index run_snapshots_project on run_snapshots (tenant_id, project_id);

alter table run_snapshots enable row level security;
alter table run_snapshots force row level security;
create policy tenant_isolation on run_snapshots to specmill_app
  using (tenant_id = specmill_current_tenant())
  with check (tenant_id = specmill_current_tenant());
grant select, insert, delete on run_snapshots to specmill_app;
