-- The trace of the request that started a run (32 hex digits; null when no trace was recording), so
-- the API and the console can link a run to it in the tracing UI.
alter table project_runs add column trace_id text check (trace_id ~ '^[0-9a-f]{32}$');
