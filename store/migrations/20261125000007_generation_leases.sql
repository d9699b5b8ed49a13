-- A tenant's pipeline generations running now: one lease per model-calling activity (its retries
-- take over the same lease), at most the tenant's generation_concurrency at once; a lease whose
-- worker died expires.
create table generation_leases (
  holder      text primary key,  -- <workflow id>/<activity id>
  tenant_id   uuid not null references tenants(id),
  expires_at  timestamptz not null
);
create index generation_leases_tenant on generation_leases (tenant_id, expires_at);

alter table generation_leases enable row level security;
alter table generation_leases force row level security;
create policy tenant_isolation on generation_leases to specmill_app
  using (tenant_id = specmill_current_tenant()) with check (tenant_id = specmill_current_tenant());
grant select, insert, update, delete on generation_leases to specmill_app;
