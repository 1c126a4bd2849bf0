-- Facts about the store itself, one row per name. `key_fingerprint`: the keyed digest
-- (HMAC-SHA256 of a constant, hex) of the pseudonymisation key the store was made with,
-- written at the key's first use; never the key.
CREATE TABLE store_settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
