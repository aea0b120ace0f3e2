-- A rebuild (the server answered 410) pulls the whole view again *beside* the copy the device
-- holds, which stays readable until the rebuild completes. This table notes the patients the
-- rebuild has brought so far; when its last page arrives, every patient it did not bring is
-- purged, in the same transaction.
CREATE TABLE rebuild_seen (
    patient_id TEXT PRIMARY KEY
) WITHOUT ROWID;
