-- Usage per tenant: one row per unit of work done for it, written by the activity that did the work.
-- `source` is the unit's own key (a generation's id, an activity's workflow and activity ids and its
-- item): a retried activity writes the same key, and `on conflict do nothing` keeps the first, so each
-- unit counts exactly once. GET /api/usage sums the rows by day, project and model.
create table usage_records (
  tenant_id    uuid not null references tenants(id),
  source       text not null check (length(source) between 1 and 300),
  day          date not null default ((now() at time zone 'utc')::date),
  kind         text not null check (kind in ('generation', 'sandbox_run', 'embedding', 'snippet')),
  project_id   uuid,
  model        text,
  tokens_in    bigint not null default 0 check (tokens_in >= 0),
  tokens_out   bigint not null default 0 check (tokens_out >= 0),
  units        int not null default 1 check (units >= 0),
  seconds      double precision not null default 0 check (seconds >= 0),
  created_at   timestamp not null default (now() at time zone 'utc'),
  primary key (tenant_id, source)
);
create index usage_records_by_day on usage_records (tenant_id, day);

alter table usage_records enable row level security;
alter table usage_records force row level security;
create policy tenant_isolation on usage_records to specmill_app
  using (tenant_id = specmill_current_tenant())
  with check (tenant_id = specmill_current_tenant());
grant select, insert on usage_records to specmill_app;
