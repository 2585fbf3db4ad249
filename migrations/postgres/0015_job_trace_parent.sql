-- The W3C trace context of the request that queued a job, so its delivery continues that
-- trace (only when OpenTelemetry export is on; otherwise null).
ALTER TABLE jobs ADD COLUMN trace_parent TEXT;
