-- Sign-up and sign-in through Supabase Auth (api/routes/signin.py), and invitations to a tenant.
--
-- A self-service Supabase user's token carries no app_metadata.tenant_id (only Supabase's service role
-- can set it), so the gateway finds the tenants of a token's `sub` itself: before any tenant is known,
-- as specmill_app, which RLS confines to one tenant. This definer function answers only that: the
-- tenants, users and roles linked to one exact subject.
create or replace function specmill_supabase_memberships(p_sub text)
  returns table (tenant_id uuid, user_id uuid, role text)
  language sql stable security definer set search_path = public
as $$
  select u.tenant_id, u.id, u.role from users u
  where u.supabase_sub = p_sub
  order by u.created_at, u.tenant_id
$$;
revoke all on function specmill_supabase_memberships(text) from public;
grant execute on function specmill_supabase_memberships(text) to specmill_app;

-- users_supabase_sub is (tenant_id, supabase_sub): the function above looks a subject up across tenants.
create index users_by_supabase_sub on users (supabase_sub) where supabase_sub is not null;

-- An invitation to join a tenant with a role: its token is shown once, and only a SHA-256 of it is
-- stored (as for API keys). It is used at most once (used_at), and never after expires_at or revoked_at.
-- With `email`, only a Supabase user of that address may use it.
create table invitations (
  id          uuid primary key,
  tenant_id   uuid not null references tenants(id),
  role        text not null check (role in ('viewer', 'editor', 'admin', 'owner')),
  email       text check (length(email) between 3 and 320),
  prefix      text not null,
  token_hash  text not null unique,
  created_by  uuid not null,
  created_at  timestamp not null default (now() at time zone 'utc'),
  expires_at  timestamp not null,
  used_at     timestamp,
  used_by     uuid,  -- the user the invitation made
  revoked_at  timestamp,
  foreign key (tenant_id, created_by) references users(tenant_id, id),
  foreign key (tenant_id, used_by) references users(tenant_id, id)
);
create index invitations_tenant on invitations (tenant_id, created_at, id);

alter table invitations enable row level security;
alter table invitations force row level security;
create policy tenant_isolation on invitations to specmill_app
  using (tenant_id = specmill_current_tenant())
  with check (tenant_id = specmill_current_tenant());
grant select, insert, update on invitations to specmill_app;

-- Using an invitation happens before its tenant is known: like specmill_lookup_api_key, this definer
-- function answers only for an exact hash. Consuming it then runs under the tenant's RLS context.
create or replace function specmill_lookup_invitation(p_hash text)
  returns table (id uuid, tenant_id uuid, role text, email text, expires_at timestamp, used_at timestamp,
                 revoked_at timestamp)
  language sql stable security definer set search_path = public
as $$
  select i.id, i.tenant_id, i.role, i.email, i.expires_at, i.used_at, i.revoked_at
  from invitations i where i.token_hash = p_hash
$$;
revoke all on function specmill_lookup_invitation(text) from public;
grant execute on function specmill_lookup_invitation(text) to specmill_app;
