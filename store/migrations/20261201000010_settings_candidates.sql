-- Candidates per generation (n) and the techniques' parameters (options) as tenant defaults and
-- project overrides: a project's pipeline generates n candidates, or runs beam search with its width,
-- and keeps the one that passes most of the spec's tests (issue 12). Existing rows keep today's
-- behaviour: one candidate, every parameter at its default.
alter table tenant_settings
  add column n int not null default 1 check (n between 1 and 8),
  add column options jsonb not null default '{}'::jsonb check (jsonb_typeof(options) = 'object');

alter table project_settings
  add column n int check (n between 1 and 8),
  add column options jsonb check (options is null or jsonb_typeof(options) = 'object');
