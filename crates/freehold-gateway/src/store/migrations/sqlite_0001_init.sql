-- Virtual keys: only the SHA-256 of each secret is kept. Money is in
-- integer micro-dollars (1 USD = 1 000 000).
CREATE TABLE freehold_keys (
    id              TEXT    PRIMARY KEY,
    name            TEXT    NOT NULL,
    prefix          TEXT    NOT NULL,
    secret_sha256   TEXT    NOT NULL UNIQUE,
    created_at      BIGINT  NOT NULL,
    expires_at      BIGINT,
    revoked_at      BIGINT,
    allowed_models  TEXT    NOT NULL DEFAULT '[]',
    rpm             BIGINT,
    tpm             BIGINT,
    budget_micros   BIGINT,
    spent_micros    BIGINT  NOT NULL DEFAULT 0,
    reserved_micros BIGINT  NOT NULL DEFAULT 0,
    local_only      BOOLEAN NOT NULL DEFAULT FALSE
);

-- One active key per name, so that `freehold keys revoke NAME` is unambiguous.
CREATE UNIQUE INDEX freehold_keys_active_name ON freehold_keys (name) WHERE revoked_at IS NULL;
CREATE INDEX freehold_keys_prefix ON freehold_keys (prefix);

-- The usage ledger: one line per request, append-only.
CREATE TABLE freehold_usage (
    id                  INTEGER PRIMARY KEY,
    at_ms               BIGINT  NOT NULL,
    key_id              TEXT    REFERENCES freehold_keys (id),
    model               TEXT    NOT NULL,
    provider            TEXT    NOT NULL,
    provider_model      TEXT    NOT NULL,
    endpoint            TEXT    NOT NULL,
    input_tokens        BIGINT  NOT NULL,
    cached_input_tokens BIGINT  NOT NULL,
    output_tokens       BIGINT  NOT NULL,
    cost_micros         BIGINT,
    latency_ms          BIGINT  NOT NULL,
    status              INTEGER NOT NULL,
    error               TEXT,
    privacy             TEXT,
    body                TEXT
);

CREATE INDEX freehold_usage_at ON freehold_usage (at_ms);
CREATE INDEX freehold_usage_key ON freehold_usage (key_id, at_ms);
