-- specmill core schema. Plain SQL, applied in file-name order by store/migrate.py and
-- recorded in schema_migrations; the names follow Supabase's <timestamp>_<name>.sql so
-- `supabase db push` accepts the same files (supabase/migrations links here).
--
-- Timestamps: the specification sheets say `timestamp`; columns are `timestamp` (without
-- time zone) holding UTC, defaulted with now() at time zone 'utc'.

-- The role the application connects as. It owns nothing and never bypasses RLS.
do $$
begin
  if not exists (select 1 from pg_roles where rolname = 'specmill_app') then
    create role specmill_app nologin nosuperuser nobypassrls;
  end if;
end
$$;

-- The tenant of the current transaction, set with set_config('specmill.tenant_id', id, true).
create or replace function specmill_current_tenant() returns uuid
  language sql stable
as $$ select nullif(current_setting('specmill.tenant_id', true), '')::uuid $$;

-- platform tables ---------------------------------------------------------------------

create table tenants (
  id          uuid primary key,
  name        text not null check (length(name) between 1 and 200),
  created_at  timestamp not null default (now() at time zone 'utc')
);

create table users (
  id          uuid primary key,
  tenant_id   uuid not null references tenants(id),
  name        text not null,
  role        text not null check (role in ('viewer', 'editor', 'admin', 'owner')),
  created_at  timestamp not null default (now() at time zone 'utc'),
  unique (tenant_id, id)
);

create table api_keys (
  id            uuid primary key,
  tenant_id     uuid not null references tenants(id),
  user_id       uuid not null,
  name          text not null,
  prefix        text not null,
  key_hash      text not null unique,  -- sha256 of the whole key; the key itself is never stored
  role          text not null check (role in ('viewer', 'editor', 'admin', 'owner')),
  created_at    timestamp not null default (now() at time zone 'utc'),
  revoked_at    timestamp,
  foreign key (tenant_id, user_id) references users(tenant_id, id)
);

-- spec registry (specification sheet 1) -----------------------------------------------

create table spec_templates (
  id           uuid primary key,
  tenant_id    uuid not null references tenants(id),
  name         text not null,
  version      text not null,
  description  text,
  schema       jsonb not null,
  created_at   timestamp not null,
  updated_at   timestamp not null,
  unique (tenant_id, name, version)
);

-- orchestrator (specification sheet 4) ------------------------------------------------

create table projects (
  id           uuid primary key,
  tenant_id    uuid not null references tenants(id),
  name         text not null,
  description  text,
  state        text not null,
  user_id      uuid not null,
  created_at   timestamp not null,
  updated_at   timestamp not null
);

create table spec_instances (
  id           uuid primary key,
  template_id  uuid not null references spec_templates(id),
  project_id   uuid not null references projects(id),
  user_id      uuid not null,
  tenant_id    uuid not null references tenants(id),
  values       jsonb not null,
  created_at   timestamp not null,
  updated_at   timestamp not null
);
create index spec_instances_project on spec_instances (tenant_id, project_id);
create index spec_instances_template on spec_instances (template_id);

create table workflow_tasks (
  id           uuid primary key,
  project_id   uuid not null references projects(id),
  tenant_id    uuid not null references tenants(id),
  service      text not null,
  task_type    text not null,
  status       text not null,
  created_at   timestamp not null,
  updated_at   timestamp not null
);
create index workflow_tasks_project on workflow_tasks (tenant_id, project_id);

-- knowledge base (specification sheet 3) ----------------------------------------------

create table code_snippets (
  id           uuid primary key,
  tenant_id    uuid not null references tenants(id),
  user_id      uuid not null,
  language     text not null,
  content      text not null,
  description  text,
  tags         jsonb,
  created_at   timestamp not null
);

create table project_knowledge (
  id           uuid primary key,
  project_id   uuid not null references projects(id),
  tenant_id    uuid not null references tenants(id),
  key          text not null,
  value        jsonb not null,
  created_at   timestamp not null,
  updated_at   timestamp not null,
  unique (tenant_id, project_id, key)
);

-- transactional outbox ----------------------------------------------------------------

create table events (
  seq          bigint generated always as identity primary key,
  id           uuid not null unique,
  tenant_id    uuid not null references tenants(id),
  type         text not null,
  schema       text not null,
  subject_id   uuid,
  payload      jsonb not null,
  dedup_key    text unique,  -- set by workflow activities so that a retry writes no second event
  created_at   timestamp not null default (now() at time zone 'utc')
);
create index events_tenant_seq on events (tenant_id, seq);

-- row level security ------------------------------------------------------------------

do $$
declare t text;
begin
  foreach t in array array['users', 'api_keys', 'spec_templates', 'spec_instances', 'projects',
                           'workflow_tasks', 'code_snippets', 'project_knowledge', 'events']
  loop
    execute format('alter table %I enable row level security', t);
    execute format('alter table %I force row level security', t);
    execute format(
      'create policy tenant_isolation on %I to specmill_app
         using (tenant_id = specmill_current_tenant())
         with check (tenant_id = specmill_current_tenant())', t);
    execute format('grant select, insert, update, delete on %I to specmill_app', t);
  end loop;
end
$$;

alter table tenants enable row level security;
alter table tenants force row level security;
create policy tenant_isolation on tenants to specmill_app
  using (id = specmill_current_tenant()) with check (id = specmill_current_tenant());
grant select, insert, update on tenants to specmill_app;

grant usage on schema public to specmill_app;
grant execute on function specmill_current_tenant() to specmill_app;

-- Authenticating an API key happens before the tenant is known: this definer function
-- answers only for an exact hash and is the one way around RLS that the app role has.
create or replace function specmill_lookup_api_key(p_hash text)
  returns table (id uuid, tenant_id uuid, user_id uuid, role text, revoked_at timestamp)
  language sql stable security definer set search_path = public
as $$
  select k.id, k.tenant_id, k.user_id, k.role, k.revoked_at from api_keys k where k.key_hash = p_hash
$$;
revoke all on function specmill_lookup_api_key(text) from public;
grant execute on function specmill_lookup_api_key(text) to specmill_app;
