//! UUIDs as the Globus Compute SDK parses them (`uuid.UUID(...)`), without a UUID crate:
//! the few operations needed are formatting, parsing and drawing 16 random bytes.
//!
//! Gateway task ids are integers; a Globus Compute task id is a UUID that *contains* its
//! gateway id ([`task_uuid`]), so no table maps one to the other and nothing is lost when
//! the gateway restarts. Endpoint ids (32 hex digits) are UUIDs already, written with dashes.

use std::fmt::Write;

use crate::store::StoreError;

/// A UUID's 16 bytes.
pub(crate) type Uuid = [u8; 16];

/// The first bytes of every task UUID: "funcxg" (and a version-8 nibble after them).
const TASK_MARKER: [u8; 6] = *b"funcxg";

/// The canonical text form: 8-4-4-4-12 lowercase hex digits.
pub(crate) fn format(uuid: &Uuid) -> String {
    let mut text = String::with_capacity(36);
    for (i, byte) in uuid.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            text.push('-');
        }
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// Parses 32 hex digits, with or without the dashes of the canonical form (and with
/// optional braces or a `urn:uuid:` prefix, as Python's `uuid.UUID` accepts).
pub(crate) fn parse(text: &str) -> Option<Uuid> {
    let text = text.trim();
    let text = text.strip_prefix("urn:uuid:").unwrap_or(text);
    let text = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or(text);
    let digits: Vec<u8> = text.bytes().filter(|b| *b != b'-').collect();
    if digits.len() != 32 || text.len() > 36 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut uuid = [0u8; 16];
    for (i, byte) in uuid.iter_mut().enumerate() {
        let pair = std::str::from_utf8(&digits[2 * i..2 * i + 2]).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(uuid)
}

/// A random (version 4) UUID.
pub(crate) fn random() -> Result<Uuid, StoreError> {
    let mut uuid = [0u8; 16];
    getrandom::getrandom(&mut uuid)
        .map_err(|e| StoreError::backend(format!("no randomness for a UUID: {e}")))?;
    uuid[6] = (uuid[6] & 0x0f) | 0x40;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    Ok(uuid)
}

/// The UUID of gateway task `id` (a version-8 UUID: a marker, then the id).
pub(crate) fn task_uuid(id: u64) -> Uuid {
    let mut uuid = [0u8; 16];
    uuid[..6].copy_from_slice(&TASK_MARKER);
    uuid[6] = 0x80;
    uuid[8..].copy_from_slice(&id.to_be_bytes());
    // Ids stay below 2^62: the top two bits hold the RFC 4122 variant.
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    uuid
}

/// The gateway task id inside a task UUID; `None` for any other UUID.
pub(crate) fn task_id(uuid: &Uuid) -> Option<u64> {
    if uuid[..6] != TASK_MARKER || uuid[6] != 0x80 || uuid[7] != 0 || uuid[8] & 0xc0 != 0x80 {
        return None;
    }
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&uuid[8..]);
    bytes[0] &= 0x3f;
    Some(u64::from_be_bytes(bytes))
}

/// The funcx endpoint id (32 lowercase hex digits) a Globus Compute endpoint UUID names.
pub(crate) fn endpoint_id(uuid: &Uuid) -> String {
    format(uuid).replace('-', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_round_trip_through_their_uuid() {
        for id in [0, 1, 42, u64::from(u32::MAX) + 7, (1 << 62) - 1] {
            let uuid = task_uuid(id);
            let text = format(&uuid);
            assert_eq!(text.len(), 36);
            assert_eq!(parse(&text), Some(uuid));
            assert_eq!(task_id(&uuid), Some(id), "{text}");
        }
        assert_eq!(
            format(&task_uuid(1)),
            "66756e63-7867-8000-8000-000000000001"
        );
        assert_eq!(task_id(&random().unwrap()), None);
    }

    #[test]
    fn parsing_takes_what_python_takes_and_refuses_the_rest() {
        let uuid = random().unwrap();
        let text = format(&uuid);
        assert_eq!(text.as_bytes()[14], b'4');
        assert_eq!(parse(&text.to_uppercase()), Some(uuid));
        assert_eq!(parse(&text.replace('-', "")), Some(uuid));
        assert_eq!(parse(&format!("{{{text}}}")), Some(uuid));
        assert_eq!(parse(&format!("urn:uuid:{text}")), Some(uuid));
        for bad in [
            "",
            "xyz",
            &text[1..],
            &format!("{text}0"),
            "g0000000-0000-0000-0000-000000000000",
            "0-0-0-0-0",
            "+0000000000000000000000000000000",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        assert_eq!(endpoint_id(&uuid), text.replace('-', ""));
    }
}
