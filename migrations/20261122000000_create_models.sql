-- Trained Isolation Forest models (scorer/src/detect/store.rs).
--
-- `version` is derived from the model bytes ("iforest-" and the first 12 hex digits of their
-- SHA-256), so saving the same model twice touches one row. `active` is the model the scorers
-- load; `held` was held back by the drift gate and is kept for audit only; `retired` was active
-- once. Adopting a model retires the previous active one in the same transaction, and the
-- partial unique index below makes a second active row impossible whatever the writers do.
CREATE TABLE palisade_models (
    version    text        PRIMARY KEY,
    status     text        NOT NULL CHECK (status IN ('active', 'held', 'retired')),
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Training metadata, threshold and feature names, for audit queries; the bytes are the
    -- truth.
    meta       jsonb       NOT NULL,
    -- The model file format of scorer/src/detect/model.rs, checksum included.
    model      bytea       NOT NULL
);

-- At most one active model.
CREATE UNIQUE INDEX palisade_models_one_active ON palisade_models ((true))
    WHERE status = 'active';
-- Listing and retention, newest first.
CREATE INDEX palisade_models_status_created ON palisade_models (status, created_at DESC);
