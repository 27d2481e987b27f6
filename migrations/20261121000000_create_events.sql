-- One row per request the gateway saw: the security event (docs/telemetry.md).
--
-- Range-partitioned by `time` (one partition per UTC day, named events_pYYYYMMDD, created
-- ahead of time by the scorer and dropped after the retention period). A partitioned table's
-- primary key must contain the partition key, so it is (event_id, time); event_id is a UUIDv7
-- whose timestamp is `time`, generated once when the event is created and stored with it in
-- the spool, so a replayed event has the same key and `ON CONFLICT DO NOTHING` skips it.
CREATE TABLE events (
    event_id            uuid             NOT NULL,
    time                timestamptz      NOT NULL,
    request_id          text             NOT NULL,
    -- The filter's stable key id; never the raw API key. NULL when not authenticated.
    key_id              text,
    tenant              text,
    tier                text,
    client_ip           inet,
    method              text             NOT NULL,
    -- Without the query string, bounded and escaped by the scorer.
    path                text             NOT NULL,
    -- The path with id-like segments replaced by `:id`, for grouping.
    route               text             NOT NULL,
    user_agent          text,
    decision            text             NOT NULL CHECK (decision IN (
                            'ALLOW', 'THROTTLE', 'BLOCK', 'FLAG', 'UNAUTHORIZED', 'FAIL_OPEN',
                            'FAIL_CLOSED', 'SHADOW_THROTTLE', 'SHADOW_BLOCK', 'UNSPECIFIED')),
    reason              text,
    status              smallint         NOT NULL,
    anomaly_score       double precision,
    model_version       text,
    gateway_latency_us  bigint           NOT NULL,
    upstream_latency_us bigint,
    backend_latency_us  bigint,
    request_bytes       bigint           NOT NULL,
    response_bytes      bigint           NOT NULL,
    -- When the scorer received the outcome report.
    received_at         timestamptz      NOT NULL,
    PRIMARY KEY (event_id, time)
) PARTITION BY RANGE (time);

-- "This key over this period."
CREATE INDEX events_key_time ON events (key_id, time) WHERE key_id IS NOT NULL;
-- "All blocks in this period" (enforced and shadow).
CREATE INDEX events_blocks_time ON events (time)
    WHERE decision IN ('BLOCK', 'SHADOW_BLOCK');
-- Correlation by X-Request-ID.
CREATE INDEX events_request_id ON events (request_id);

-- Creates the daily partitions covering [first_day, last_day] (UTC) that do not exist yet;
-- returns how many it created. Serialised by an advisory lock so scorers may race.
CREATE FUNCTION palisade_ensure_event_partitions(first_day date, last_day date)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    d date := first_day;
    part text;
    created integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('palisade_event_partitions'));
    WHILE d <= last_day LOOP
        part := format('events_p%s', to_char(d, 'YYYYMMDD'));
        IF to_regclass(part) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF events FOR VALUES FROM (%L) TO (%L)',
                part, d::timestamp AT TIME ZONE 'UTC', (d + 1)::timestamp AT TIME ZONE 'UTC');
            created := created + 1;
        END IF;
        d := d + 1;
    END LOOP;
    RETURN created;
END
$$;

-- Drops the daily partitions entirely before keep_from (UTC); returns how many it dropped.
CREATE FUNCTION palisade_drop_event_partitions(keep_from date)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    r record;
    dropped integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('palisade_event_partitions'));
    FOR r IN
        SELECT c.relname
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'events'::regclass
          AND c.relname ~ '^events_p[0-9]{8}$'
          AND to_date(substr(c.relname, 9), 'YYYYMMDD') < keep_from
    LOOP
        EXECUTE format('DROP TABLE %I', r.relname);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END
$$;
