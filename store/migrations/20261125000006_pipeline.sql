-- The durable pipeline (issue 5): per-tenant and per-project generation settings, the templates
-- attached to each project at initialization, and the project's artifacts with their provenance.

-- One row per tenant that changed a default (no row: every default below).
create table tenant_settings (
  tenant_id               uuid primary key references tenants(id),
  default_templates       jsonb not null default '[]'::jsonb,  -- [{"name": str, "version": str | null}]
  generation_concurrency  int not null default 2 check (generation_concurrency between 1 and 16),
  debug_rounds            int not null default 2 check (debug_rounds between 0 and 10),
  model                   text not null default 'local_llama',
  techniques              jsonb not null default '[]'::jsonb,
  max_new_tokens          int not null default 384 check (max_new_tokens between 16 and 4096),
  updated_at              timestamp not null default (now() at time zone 'utc'),
  check (jsonb_typeof(default_templates) = 'array'),
  check (jsonb_typeof(techniques) = 'array')
);

-- A project's own choices; null: the tenant's default.
create table project_settings (
  project_id      uuid primary key references projects(id),
  tenant_id       uuid not null references tenants(id),
  model           text,
  techniques      jsonb check (techniques is null or jsonb_typeof(techniques) = 'array'),
  max_new_tokens  int check (max_new_tokens between 16 and 4096),
  debug_rounds    int check (debug_rounds between 0 and 10),
  updated_at      timestamp not null default (now() at time zone 'utc')
);

-- The templates a project was given at initialization (a deleted template detaches itself).
create table project_templates (
  project_id   uuid not null references projects(id),
  tenant_id    uuid not null references tenants(id),
  template_id  uuid not null references spec_templates(id) on delete cascade,
  attached_at  timestamp not null default (now() at time zone 'utc'),
  primary key (project_id, template_id)
);
create index project_templates_tenant on project_templates (tenant_id, project_id);
create index project_templates_template on project_templates (template_id);

-- Generated files. One row per distinct content of an instance's file (content_hash = sha256 hex of
-- content), so storing the same code again reuses the row; `current` marks the one in the project's
-- artifact tree. An instance's artifacts go with it when it is deleted.
create table artifacts (
  id                  uuid primary key,
  tenant_id           uuid not null references tenants(id),
  project_id          uuid not null references projects(id),
  instance_id         uuid not null references spec_instances(id) on delete cascade,
  path                text not null check (length(path) between 1 and 500),
  content             text not null,
  content_hash        text not null check (content_hash ~ '^[0-9a-f]{64}$'),
  values_hash         text not null,
  template_id         uuid,
  template_name       text not null,
  template_version    text not null,
  model               text not null,
  techniques          jsonb not null default '[]'::jsonb,
  retrieved_snippets  jsonb not null default '[]'::jsonb,
  generation_id       uuid,
  round               int not null default 1 check (round >= 0),
  checks              jsonb not null default '{}'::jsonb,
  test_status         text check (test_status in ('passed', 'failed', 'error', 'timeout', 'no_tests')),
  tests               jsonb,
  current             boolean not null default true,
  created_at          timestamp not null default (now() at time zone 'utc'),
  updated_at          timestamp not null default (now() at time zone 'utc'),
  unique (project_id, instance_id, content_hash)
);
-- One current artifact per instance, and one current file per path of a project's tree.
create unique index artifacts_one_current on artifacts (project_id, instance_id) where current;
create unique index artifacts_current_path on artifacts (project_id, path) where current;
create index artifacts_tenant_project on artifacts (tenant_id, project_id, path);
create index artifacts_instance on artifacts (instance_id);

-- row level security ------------------------------------------------------------------

do $$
declare t text;
begin
  foreach t in array array['tenant_settings', 'project_settings', 'project_templates', 'artifacts']
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
