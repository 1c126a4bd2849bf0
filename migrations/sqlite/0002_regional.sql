-- Regional detection: counts per (region, kind, CST day), each series' detector
-- state, the stage's clock, and the signals. Written in the batch's transaction.

CREATE TABLE regional_counts (
    region_code TEXT NOT NULL,
    kind TEXT NOT NULL,
    day TEXT NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (region_code, kind, day)
) WITHOUT ROWID;

CREATE TABLE regional_series (
    region_code TEXT NOT NULL,
    kind TEXT NOT NULL,
    checkpoint TEXT NOT NULL,
    PRIMARY KEY (region_code, kind)
) WITHOUT ROWID;

-- One row: the watermark and the days judged.
CREATE TABLE regional_clock (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    state TEXT NOT NULL
);

CREATE TABLE signals (
    signal_id TEXT PRIMARY KEY,
    region_code TEXT NOT NULL,
    kind TEXT NOT NULL,
    episode INTEGER NOT NULL,
    severity TEXT NOT NULL,
    status TEXT NOT NULL,
    day TEXT NOT NULL,
    raised_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    cleared_at TEXT,
    doc TEXT NOT NULL,
    UNIQUE (region_code, kind, episode)
);
CREATE UNIQUE INDEX signals_one_active ON signals (region_code, kind) WHERE status <> 'cleared';
