//! What a device holds, read the way a test compares it: the cache as the screens show it,
//! the cache opened directly, and the Doorstep notes the server holds.

use std::collections::BTreeMap;
use std::path::Path;

use doorstep_client::Device;
use doorstep_server::store::Store;

/// The list and each record as the device shows them (without the "as of", which is the time
/// of the pull): two devices of one user that converged answer the same.
pub fn cache_view(device: &Device) -> BTreeMap<String, serde_json::Value> {
    let today = doorstep_client::today();
    device
        .list(None, today)
        .expect("the list")
        .into_iter()
        .map(|row| {
            let record = device
                .record(&row.patient_id, today)
                .expect("a record")
                .expect("the record of a listed patient");
            let view = serde_json::json!({
                "row": row, "record": record.view,
                "withheld": record.withheld, "list_reason": record.list_reason,
            });
            (row.patient_id, view)
        })
        .collect()
}

/// The cache of the device enrolled in `dir`, opened with the key `pin` unwraps, bypassing
/// the device (and its count of wrong PINs): for tests that read or change its tables.
pub fn open_cache(dir: &Path, pin: &str) -> rusqlite::Connection {
    let file = doorstep_client::DeviceFile::read(dir).expect("device.json");
    let key = file
        .vault
        .as_ref()
        .expect("a wrapped cache key")
        .unwrap(pin, &file.device_id)
        .expect("an intact wrapped key")
        .expect("the PIN opens it");
    let conn = rusqlite::Connection::open(dir.join(doorstep_client::files::CACHE_FILE))
        .expect("open cache.db");
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    conn.execute_batch(&format!("PRAGMA key = \"x'{hex}'\";"))
        .expect("key the cache");
    conn
}

/// The ids of the Composition resources (Doorstep notes among them) the server holds for
/// these patients, each with how many live rows carry it.
pub async fn compositions(store: &dyn Store, patients: &[String]) -> BTreeMap<String, usize> {
    let mut ids = BTreeMap::new();
    for p in patients {
        for r in store.patient_resources(p).await.expect("patient resources") {
            if r.resource_type == "Composition" && !r.deleted {
                *ids.entry(r.id).or_insert(0) += 1;
            }
        }
    }
    ids
}
