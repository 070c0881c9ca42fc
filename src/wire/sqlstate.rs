//! SQLSTATE classes, for counting the server's errors by class: the standard
//! classes of Postgres' errcodes, and one slot for anything else (or an error
//! whose code pgshift did not see whole). A fixed set keeps the counters small
//! and a metric's labels bounded whatever the server sends.

/// The classes counted apart, sorted.
pub const CLASSES: &[&str] = &[
    "00", "01", "02", "03", "08", "09", "0A", "0B", "0F", "0L", "0P", "0Z", "20", "21", "22", "23",
    "24", "25", "26", "27", "28", "2B", "2D", "2F", "34", "38", "39", "3B", "3D", "3F", "40", "42",
    "44", "53", "54", "55", "57", "58", "72", "F0", "HV", "P0", "XX",
];

/// Slots: one per class, and the last for the rest.
pub const SLOTS: usize = CLASSES.len() + 1;

/// The label of slot `i`.
pub fn label(i: usize) -> &'static str {
    CLASSES.get(i).copied().unwrap_or("other")
}

/// The slot of the ErrorResponse whose body starts with `body` (all of it, or
/// only its first bytes): its `C` field's first two characters.
pub fn slot_of_error(body: &[u8]) -> usize {
    let mut rest = body;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let Some(end) = tail.iter().position(|&b| b == 0) else {
            break;
        };
        if field == b'C' {
            return tail
                .get(..2)
                .filter(|_| end >= 2)
                .and_then(|class| CLASSES.binary_search_by(|c| c.as_bytes().cmp(class)).ok())
                .unwrap_or(CLASSES.len());
        }
        rest = &tail[end + 1..];
    }
    CLASSES.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_class_comes_from_the_code_field() {
        let body = b"SERROR\0VERROR\0C22012\0Mdivision by zero\0\0";
        assert_eq!(label(slot_of_error(body)), "22");
        assert_eq!(label(slot_of_error(b"SFATAL\0C57P01\0M\0\0")), "57");
        assert_eq!(label(slot_of_error(b"C0A000\0\0")), "0A");
        // Unknown, cut short, or missing: the last slot.
        assert_eq!(label(slot_of_error(b"CZZ000\0\0")), "other");
        assert_eq!(label(slot_of_error(b"SERROR\0VERR")), "other");
        assert_eq!(label(slot_of_error(b"Mno code\0\0")), "other");
        assert!(CLASSES.windows(2).all(|w| w[0] < w[1]));
    }
}
