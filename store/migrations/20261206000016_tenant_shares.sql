-- A tenant's sandboxed test activities running now (a project's test round, a generation's candidate
-- tests): one lease each, at most the tenant's share of the integration workers' slots, so one tenant's
-- slow tests never hold every slot. A lease whose workflow died expires.
create table sandbox_leases (
  holder      text primary key,  -- <workflow id>/<what it tests>
  tenant_id   uuid not null references tenants(id),
  expires_at  timestamptz not null
);
create index sandbox_leases_tenant on sandbox_leases (tenant_id, expires_at);

alter table sandbox_leases enable row level security;
alter table sandbox_leases force row level security;
create policy tenant_isolation on sandbox_leases to specmill_app
  using (tenant_id = specmill_current_tenant()) with check (tenant_id = specmill_current_tenant());
grant select, insert, update, delete on sandbox_leases to specmill_app;

-- A run being admitted (POST .../specs/complete until the workflow has recorded code_generation): it
-- counts against MAX_RUNNING_PROJECTS_PER_TENANT with the projects already running, so two requests
-- at once cannot both take the last place. Short-lived; one whose gateway died expires.
create table run_admissions (
  holder      text primary key,
  tenant_id   uuid not null references tenants(id),
  project_id  uuid not null,
  expires_at  timestamptz not null
);
create index run_admissions_tenant on run_admissions (tenant_id, expires_at);

alter table run_admissions enable row level security;
alter table run_admissions force row level security;
create policy tenant_isolation on run_admissions to specmill_app
  using (tenant_id = specmill_current_tenant()) with check (tenant_id = specmill_current_tenant());
grant select, insert, update, delete on run_admissions to specmill_app;
