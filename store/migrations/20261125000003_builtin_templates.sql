-- Built-in templates belong to the system tenant (00000000-...-000) and are readable by every
-- tenant; only the platform (the admin connection, `specmill setup`) writes them.
create policy builtin_templates_read on spec_templates for select to specmill_app
  using (tenant_id = '00000000-0000-0000-0000-000000000000'::uuid);
