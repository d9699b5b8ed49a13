-- multi_head_attention: what each line of an artifact's code relied on in its prompt (the kept
-- candidate's reliance, as models.generation.Reliance); null when the technique was not asked for.
alter table artifacts add column reliance jsonb;
