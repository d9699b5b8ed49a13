-- One row per POST /api/generate: its request, status and result (GET /api/generations/{id}).
create table generations (
  id          uuid primary key,
  tenant_id   uuid not null references tenants(id),
  user_id     uuid not null,
  model       text not null,
  techniques  jsonb not null,
  request     jsonb not null,
  status      text not null check (status in ('running', 'completed', 'failed')),
  result      jsonb,
  error       text,
  created_at  timestamp not null default (now() at time zone 'utc'),
  updated_at  timestamp not null default (now() at time zone 'utc')
);
create index generations_tenant on generations (tenant_id, created_at);

alter table generations enable row level security;
alter table generations force row level security;
create policy tenant_isolation on generations to specmill_app
  using (tenant_id = specmill_current_tenant()) with check (tenant_id = specmill_current_tenant());
grant select, insert, update on generations to specmill_app;
