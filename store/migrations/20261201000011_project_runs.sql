-- Runs of a project (issue 13). Each run is one Temporal run of the project's workflow: its id is the
-- Temporal run id. The gateway inserts the row when it starts a run; the workflow's record_project_state
-- activity upserts it too (so a gateway that died after starting the run loses nothing) and keeps its
-- state, the settings it runs with, and on a terminal state its reason and structured outcome.
create table project_runs (
  id          uuid primary key,
  tenant_id   uuid not null references tenants(id) on delete cascade,
  project_id  uuid not null references projects(id) on delete cascade,
  scope       text not null check (scope in ('initial', 'changed', 'failed', 'all')),
  instance_ids uuid[],
  state       text not null,
  settings    jsonb,
  outcome     jsonb,
  reason      text,
  created_at  timestamp not null default (now() at time zone 'utc'),
  updated_at  timestamp not null default (now() at time zone 'utc'),
  ended_at    timestamp
);
create index project_runs_project on project_runs (tenant_id, project_id, created_at, id);

-- GET /api/projects/{id} shows the latest run and its outcome without a join over every run
alter table projects
  add column run_id uuid,
  add column outcome jsonb,
  add column reason text;

alter table project_runs enable row level security;
alter table project_runs force row level security;
create policy tenant_isolation on project_runs to specmill_app
  using (tenant_id = specmill_current_tenant())
  with check (tenant_id = specmill_current_tenant());
grant select, insert, update, delete on project_runs to specmill_app;
