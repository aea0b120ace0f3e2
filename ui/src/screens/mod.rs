//! One component per screen of DESIGN.md section 8.

mod break_glass;
mod composer;
mod enrol;
mod list;
mod record;
mod settings;
mod sync;
mod unlock;

pub use break_glass::BreakGlassScreen;
pub use composer::ComposerScreen;
pub use enrol::{EnrolScreen, FieldErrors, validate_enrol};
pub use list::ListScreen;
pub use record::RecordScreen;
pub use settings::SettingsScreen;
pub use sync::SyncScreen;
pub use unlock::UnlockScreen;
