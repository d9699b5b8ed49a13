-- Tenants' own provider API keys (issue 4): used for that tenant's generation requests ahead of
-- the platform's keys. Encrypted by the application (Fernet, keyed from PROVIDER_KEYS_SECRET)
-- before they reach the database; only the ciphertext and the last 4 characters are stored.

create table tenant_provider_keys (
  tenant_id   uuid not null references tenants(id),
  provider    text not null check (provider in ('openai', 'anthropic', 'vllm')),
  ciphertext  text not null,
  key_hint    text not null check (length(key_hint) <= 4),
  created_at  timestamp not null default (now() at time zone 'utc'),
  updated_at  timestamp not null default (now() at time zone 'utc'),
  primary key (tenant_id, provider)
);

alter table tenant_provider_keys enable row level security;
alter table tenant_provider_keys force row level security;
create policy tenant_isolation on tenant_provider_keys to specmill_app
  using (tenant_id = specmill_current_tenant())
  with check (tenant_id = specmill_current_tenant());
grant select, insert, update, delete on tenant_provider_keys to specmill_app;
