//! Timestamps as events write them: RFC 3339, exactly as chrono's own
//! `Serialize` writes a `DateTime<Utc>` (`Z`, fractional seconds only when
//! there are some), but each distinct value formatted once rather than at
//! every field. A finding event carries the same few instants over and
//! over (the step's clock, its first sighting, its due date), and
//! chrono's formatting, written character by character through serde's
//! string escaping, was a visible share of writing 100,000 events.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serializer;
use std::cell::RefCell;

/// How many distinct instants are kept formatted (per thread).
const KEPT: usize = 4;

/// The last instants formatted on this thread, with their text; the
/// oldest is replaced first.
#[derive(Default)]
struct Formatted {
    kept: [Option<(DateTime<Utc>, String)>; KEPT],
    next: usize,
}

thread_local! {
    static FORMATTED: RefCell<Formatted> = RefCell::new(Formatted::default());
}

/// The text chrono's `Serialize` gives `t`.
pub fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Serializes `t` as chrono's `Serialize` does (for `serialize_with`).
pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    FORMATTED.with(|cell| {
        // Serializing a string cannot come back here; should it ever,
        // the value is formatted afresh.
        let Ok(mut f) = cell.try_borrow_mut() else {
            return s.serialize_str(&rfc3339(t));
        };
        let at = match f
            .kept
            .iter()
            .position(|k| k.as_ref().is_some_and(|(v, _)| v == t))
        {
            Some(i) => i,
            None => {
                let i = f.next;
                f.next = (i + 1) % KEPT;
                f.kept[i] = Some((*t, rfc3339(t)));
                i
            }
        };
        match &f.kept[at] {
            Some((_, text)) => s.serialize_str(text),
            None => s.serialize_str(&rfc3339(t)),
        }
    })
}

/// [`serialize`] for an optional timestamp (null when absent, as serde
/// writes `None`).
pub fn serialize_opt<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => serialize(t, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    #[derive(serde::Serialize)]
    struct Via(#[serde(serialize_with = "serialize")] DateTime<Utc>);

    fn both(t: DateTime<Utc>) -> (String, String) {
        (
            serde_json::to_string(&t).unwrap(),
            serde_json::to_string(&Via(t)).unwrap(),
        )
    }

    #[test]
    fn writes_what_chrono_writes() {
        let base = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let table = [
            base,
            base + chrono::Duration::milliseconds(5),
            base + chrono::Duration::microseconds(7),
            base + chrono::Duration::nanoseconds(9),
            Utc.with_ymd_and_hms(1, 2, 3, 4, 5, 6).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
        ];
        // Twice, so that the second pass reads what the first kept.
        for t in table.iter().chain(table.iter()) {
            let (chrono, ours) = both(*t);
            assert_eq!(chrono, ours);
        }
    }

    proptest! {
        #[test]
        fn any_instant_is_written_as_chrono_writes_it(
            secs in -62_000_000_000i64..250_000_000_000i64,
            nanos in prop_oneof![Just(0u32), 0u32..1_000_000_000, (0u32..1000).prop_map(|m| m * 1_000_000)],
        ) {
            if let Some(t) = DateTime::<Utc>::from_timestamp(secs, nanos) {
                let (chrono, ours) = both(t);
                prop_assert_eq!(chrono, ours);
            }
        }
    }
}
