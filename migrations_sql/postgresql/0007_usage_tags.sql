-- 0007_usage_tags: llm_usage per row and tag set, so usage can be read per tenant, feature, ...
--
-- llm_usage.tags: the tags of the minute's calls, as their canonical text (names sorted,
--   'feature=chat,tenant=acme'; '' for untagged calls: every existing minute). The primary key
--   becomes (bucket_start, llm_id, tags): a row's calls with different tags are counted apart, and
--   a row's total is their sum. Pools bound how many distinct values a tag may take per UTC day
--   (PoolOptions.max_tag_values): the rest are counted as 'other'.

ALTER TABLE llm_usage ADD COLUMN tags varchar(1400) NOT NULL DEFAULT '';
ALTER TABLE llm_usage DROP CONSTRAINT llm_usage_pkey;
ALTER TABLE llm_usage ADD CONSTRAINT llm_usage_pkey PRIMARY KEY (bucket_start, llm_id, tags);
