-- 0006_usage_latency: the latency of each row's answers, per minute, beside its calls and cost.
--
-- llm_usage.latency_ms_sum: the summed latency (milliseconds) of the minute's answered calls
--   (calls - errors); their mean is latency_ms_sum / (calls - errors). Failed calls add none.
-- llm_usage.latency_le_<N>: how many of those answers took at most N ms and more than the
--   bound before (50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000 ms); latency_gt_30000:
--   longer. A fixed histogram adds up across replicas and minutes (percentiles would not), so
--   any hour or day of a row has its p50 and p95, within the bucket they fall in.
-- Existing minutes read 0: no latency was recorded for them.

ALTER TABLE llm_usage
    ADD COLUMN latency_ms_sum   double precision NOT NULL DEFAULT 0 CHECK (latency_ms_sum >= 0),
    ADD COLUMN latency_le_50    bigint           NOT NULL DEFAULT 0 CHECK (latency_le_50 >= 0),
    ADD COLUMN latency_le_100   bigint           NOT NULL DEFAULT 0 CHECK (latency_le_100 >= 0),
    ADD COLUMN latency_le_250   bigint           NOT NULL DEFAULT 0 CHECK (latency_le_250 >= 0),
    ADD COLUMN latency_le_500   bigint           NOT NULL DEFAULT 0 CHECK (latency_le_500 >= 0),
    ADD COLUMN latency_le_1000  bigint           NOT NULL DEFAULT 0 CHECK (latency_le_1000 >= 0),
    ADD COLUMN latency_le_2500  bigint           NOT NULL DEFAULT 0 CHECK (latency_le_2500 >= 0),
    ADD COLUMN latency_le_5000  bigint           NOT NULL DEFAULT 0 CHECK (latency_le_5000 >= 0),
    ADD COLUMN latency_le_10000 bigint           NOT NULL DEFAULT 0 CHECK (latency_le_10000 >= 0),
    ADD COLUMN latency_le_30000 bigint           NOT NULL DEFAULT 0 CHECK (latency_le_30000 >= 0),
    ADD COLUMN latency_gt_30000 bigint           NOT NULL DEFAULT 0 CHECK (latency_gt_30000 >= 0);
