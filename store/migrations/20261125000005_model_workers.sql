-- What each running generation worker says of each model (GET /api/models): every
-- REPORT_INTERVAL_S (store/model_workers.py) a generation worker upserts one row per model, and it
-- deletes its rows when it stops cleanly; the gateway counts only rows seen recently, so a worker
-- that died stops counting by itself (its rows are deleted a day later). worker_id is hostname:pid.
--
-- Platform data, not a tenant's: no tenant_id. RLS is still enabled and forced, as on every
-- table, with one policy that lets the application role read and write every row.
create table model_workers (
  worker_id  text not null,
  model      text not null,
  state      text not null check (state in ('loaded', 'available', 'unavailable')),
  reason     text,
  details    jsonb not null default '{}'::jsonb,
  seen_at    timestamptz not null default now(),
  primary key (worker_id, model)
);
create index model_workers_model_seen on model_workers (model, seen_at);

alter table model_workers enable row level security;
alter table model_workers force row level security;
create policy platform_data on model_workers to specmill_app using (true) with check (true);
grant select, insert, update, delete on model_workers to specmill_app;
