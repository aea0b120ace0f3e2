//! The maximum offline age: how long the device may go on showing records without reaching
//! the server.
//!
//! Each sharing agreement sets `max_offline_hours`; the server sends the shortest of those
//! covering the user with every pull page ([`doorstep_protocol::PullPage::max_offline_hours`]).
//! Past it since the last successful contact (a completed sync, or an online sign-in with
//! password and authenticator code), the device shows no list and no record
//! ([`crate::ClientError::OfflineTooLong`]) until it reaches the server again. Why: a record
//! that cannot be refreshed may no longer be one the clinician should see (the patient left
//! the list, withdrew consent, the agreement narrowed), and its "as of" grows stale (H1, H9).
//!
//! What stays: the outbox (notes waiting are kept and still sent), the status and the
//! notes written here. The rule is a pure function of the stored times and the clock, so
//! tests give it any "now".

use chrono::{DateTime, Duration, Utc};

use crate::error::{ClientError, Result};

/// May records be shown at `now`? `max_hours` is the limit last learnt from the server (none:
/// no limit known, as before the first sync, when there is nothing to show anyway);
/// `last_contact` the last successful contact. A limit with no contact on record counts as
/// the worst case: refused.
pub(crate) fn check(
    max_hours: Option<u32>,
    last_contact: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<()> {
    let Some(max_hours) = max_hours else {
        return Ok(());
    };
    match last_contact {
        Some(at) if now - at <= Duration::hours(i64::from(max_hours)) => Ok(()),
        last_contact => Err(ClientError::OfflineTooLong {
            last_contact,
            max_hours,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn records_show_up_to_the_limit_and_not_a_second_past_it() {
        let contact = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
        let limit = Duration::hours(12);
        assert!(check(Some(12), Some(contact), contact).is_ok());
        assert!(check(Some(12), Some(contact), contact + limit).is_ok());
        let e = check(
            Some(12),
            Some(contact),
            contact + limit + Duration::seconds(1),
        )
        .unwrap_err();
        assert!(
            matches!(e, ClientError::OfflineTooLong { last_contact: Some(t), max_hours: 12 } if t == contact),
            "{e:?}"
        );
        // A clock set back before the contact does not hide records; nor does no limit.
        assert!(check(Some(12), Some(contact), contact - Duration::days(3)).is_ok());
        assert!(check(None, Some(contact), contact + Duration::days(365)).is_ok());
        assert!(check(None, None, contact).is_ok());
    }

    #[test]
    fn a_limit_without_a_contact_on_record_is_refused() {
        let now = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
        assert!(matches!(
            check(Some(72), None, now),
            Err(ClientError::OfflineTooLong {
                last_contact: None,
                max_hours: 72
            })
        ));
    }
}
