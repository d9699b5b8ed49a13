-- The knowledge worker rebuilds every tenant's vectors from PostgreSQL when it finds the embedded store
-- changed (issue 14: qdrant-client's local mode to Qdrant Edge). It needs to know which tenants have
-- knowledge to rebuild, across tenants, as specmill_app (which RLS confines to one tenant): this
-- function answers only that, the ids of tenants with at least one snippet or knowledge entry.
create or replace function specmill_tenants_with_knowledge()
  returns setof uuid
  language sql stable security definer set search_path = public
as $$
  select t.id from tenants t
  where exists (select 1 from code_snippets s where s.tenant_id = t.id)
     or exists (select 1 from project_knowledge k where k.tenant_id = t.id)
  order by t.created_at, t.id
$$;
revoke all on function specmill_tenants_with_knowledge() from public;
grant execute on function specmill_tenants_with_knowledge() to specmill_app;
