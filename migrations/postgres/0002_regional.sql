-- Regional detection: counts per (region, kind, CST day), each series' detector
-- state, the stage's clock, and the signals. Written in the batch's transaction.

CREATE TABLE regional_counts (
    region_code TEXT NOT NULL,
    kind TEXT NOT NULL,
    day DATE NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (region_code, kind, day)
);

CREATE TABLE regional_series (
    region_code TEXT NOT NULL,
    kind TEXT NOT NULL,
    checkpoint TEXT NOT NULL,
    PRIMARY KEY (region_code, kind)
);

-- One row: the watermark and the days judged.
CREATE TABLE regional_clock (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    state TEXT NOT NULL
);

CREATE TABLE signals (
    signal_id TEXT PRIMARY KEY,
    region_code TEXT NOT NULL,
    kind TEXT NOT NULL,
    episode BIGINT NOT NULL,
    severity TEXT NOT NULL,
    status TEXT NOT NULL,
    day DATE NOT NULL,
    raised_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    cleared_at TIMESTAMPTZ,
    doc TEXT NOT NULL,
    UNIQUE (region_code, kind, episode)
);
CREATE UNIQUE INDEX signals_one_active ON signals (region_code, kind) WHERE status <> 'cleared';
