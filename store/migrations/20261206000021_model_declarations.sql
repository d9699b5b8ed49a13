-- What a generation worker's backend declares of each model it reports (models/availability.py:
-- ModelDeclaration: backend, what it runs, capabilities, the key and the server it needs), so that the
-- gateway judges availability from the reports without building a backend (api/availability.py).
-- Null in rows written before this column, or by a writer that declares nothing.
alter table model_workers add column declared jsonb;
