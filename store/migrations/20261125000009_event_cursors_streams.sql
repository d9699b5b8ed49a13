-- Event cursors per tenant, NOTIFY on every new event, and the leases of open event streams.

-- 1. The API's `seq` becomes `tenant_seq`, a counter of the tenant's own, so that no tenant can
--    gauge another's activity from the numbers it sees. Existing rows keep their number (the old
--    global seq also increases within each tenant), so cursors that clients hold stay valid and the
--    order stays as it was; each tenant's counter goes on from its highest number.
--    A tenant's counter row stays locked until the inserting transaction ends, so that tenant's
--    events commit in tenant_seq order: a reader that has seen N never misses a later-committed
--    event numbered below N (a rolled-back insert leaves a gap, which cursors do not mind).
create table event_counters (
  tenant_id  uuid primary key references tenants(id),
  last_seq   bigint not null
);
alter table event_counters enable row level security;
alter table event_counters force row level security;
create policy tenant_isolation on event_counters to specmill_app
  using (tenant_id = specmill_current_tenant()) with check (tenant_id = specmill_current_tenant());
grant select, insert, update on event_counters to specmill_app;

alter table events add column tenant_seq bigint;
-- the backfill sees every tenant's rows: forced RLS is lifted for the owner for these statements only
alter table events no force row level security;
alter table event_counters no force row level security;
update events set tenant_seq = seq;
insert into event_counters (tenant_id, last_seq) select tenant_id, max(seq) from events group by tenant_id;
alter table events force row level security;
alter table event_counters force row level security;
alter table events alter column tenant_seq set not null;
create unique index events_tenant_cursor on events (tenant_id, tenant_seq);

create function specmill_event_tenant_seq() returns trigger
  language plpgsql set search_path = public
as $$
begin
  insert into event_counters as c (tenant_id, last_seq) values (new.tenant_id, 1)
    on conflict (tenant_id) do update set last_seq = c.last_seq + 1
    returning c.last_seq into new.tenant_seq;
  return new;
end
$$;
create trigger events_tenant_seq before insert on events
  for each row execute function specmill_event_tenant_seq();

-- 2. Live streams wake on this notification instead of polling. The payload is the tenant id only;
--    delivered at commit, once per tenant and transaction (PostgreSQL folds identical payloads).
create function specmill_event_notify() returns trigger
  language plpgsql set search_path = public
as $$
begin
  perform pg_notify('specmill_events', new.tenant_id::text);
  return null;
end
$$;
create trigger events_notify after insert on events
  for each row execute function specmill_event_notify();

-- 3. One row per open GET /api/events/stream, renewed while it is open: at most
--    MAX_EVENT_STREAMS_PER_TENANT at once over all gateways; a gateway that died lets them expire.
create table event_stream_leases (
  holder      text primary key,
  tenant_id   uuid not null references tenants(id),
  expires_at  timestamptz not null
);
create index event_stream_leases_tenant on event_stream_leases (tenant_id, expires_at);
alter table event_stream_leases enable row level security;
alter table event_stream_leases force row level security;
create policy tenant_isolation on event_stream_leases to specmill_app
  using (tenant_id = specmill_current_tenant()) with check (tenant_id = specmill_current_tenant());
grant select, insert, update, delete on event_stream_leases to specmill_app;
