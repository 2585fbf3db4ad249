-- SMS pacing held across processes: the next free send slot of each sender number.
CREATE TABLE sms_pace (
    sender   TEXT PRIMARY KEY,
    next_at  BIGINT NOT NULL
);
