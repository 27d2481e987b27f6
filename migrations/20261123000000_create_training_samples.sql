-- Feature vectors sampled for training the detection model (scorer/src/detect/samples.rs):
-- at most one per key per `detect.training.sample_interval_ms`, written behind by each scorer,
-- read back as a uniform sample when a model is fitted, so a restarted scorer or another
-- replica trains on the whole fleet's recent history instead of its own memory. Rows older than
-- `detect.training.window_ms` are deleted after each fit.
CREATE TABLE palisade_training_samples (
    id          bigserial PRIMARY KEY,
    -- The feature schema's hash (scorer/src/detect/model.rs): vectors of another schema are
    -- never read back.
    schema_hash bigint    NOT NULL,
    -- A keyed hash of the API key the vector describes (never the key): calibration counts keys.
    owner       bigint    NOT NULL,
    -- Engine clock, ms since the Unix epoch.
    at_ms       bigint    NOT NULL,
    -- The model input (log-scaled features), in schema order.
    vector      float8[]  NOT NULL
);

CREATE INDEX palisade_training_samples_schema_at ON palisade_training_samples (schema_hash, at_ms);
