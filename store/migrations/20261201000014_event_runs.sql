-- Following a run (issue 13): /api/events and its stream filter on a project and on one run of its
-- workflow; GET /api/generations lists a tenant's generations, filtered by project.
--
-- events.project_id: the project an event concerns (set from the payload's project_id, so a project's
--   instance, task, knowledge and generation events are found with its own); events.run_id: the
--   Temporal run id of the project workflow run that emitted it (project.state_changed, spec.complete).
-- generations.project_id / instance_id: what a generation was made for (a project's pipeline, or
--   POST /api/generate with an instance_id); until now only inside `request`.
-- Both tables keep their tenant_isolation policies (the new columns are covered by them).

alter table events add column project_id uuid, add column run_id uuid;
alter table generations add column project_id uuid, add column instance_id uuid;

-- the backfill sees every tenant's rows: forced RLS is lifted for the owner for these statements only
alter table events no force row level security;
alter table generations no force row level security;
update events set project_id = (payload->>'project_id')::uuid
  where payload->>'project_id' ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';
-- a state event's dedup key names its run: project-<project id>:<run id>:state:<n>
update events set run_id = substring(dedup_key from 46 for 36)::uuid
  where type in ('project.state_changed', 'spec.complete')
    and dedup_key ~* '^project-[0-9a-f-]{36}:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}:';
update generations set project_id = (request->>'project_id')::uuid
  where request->>'project_id' ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';
update generations set instance_id = (request->>'instance_id')::uuid
  where request->>'instance_id' ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$';
alter table events force row level security;
alter table generations force row level security;

create index events_tenant_project on events (tenant_id, project_id, tenant_seq) where project_id is not null;
create index events_tenant_run on events (tenant_id, run_id, tenant_seq) where run_id is not null;
create index generations_tenant_newest on generations (tenant_id, created_at desc, id desc);
create index generations_tenant_project on generations (tenant_id, project_id, created_at desc, id desc)
  where project_id is not null;
