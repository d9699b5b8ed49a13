-- A Supabase Auth user signs in as one of our users: users.supabase_sub holds the `sub` of their
-- Supabase tokens. A token whose subject is linked to no user of the tenant it names is refused, and
-- the tenant and role come from the linked row, never from the token's app_metadata.
alter table users add column supabase_sub text check (length(supabase_sub) between 1 and 200);
create unique index users_supabase_sub on users (tenant_id, supabase_sub) where supabase_sub is not null;
