//! Field rules shared by every command: lengths, formats, identifiers.
//!
//! Every limit is a named constant so that documentation, schemas and tests
//! can refer to it.

use crate::rejection::Rejection;
use unicode_general_category::{get_general_category, GeneralCategory};
use unicode_normalization::char::canonical_combining_class;
use unicode_normalization::is_nfc;
use uuid::Uuid;

/// Largest accepted command body, in bytes.
pub const COMMAND_BYTES_MAX: usize = 64 * 1024;
/// `workspaceId`: a NATS subject token.
pub const WORKSPACE_ID_LEN_MAX: usize = 64;
/// Client token `name`, in characters.
pub const NAME_LEN_MAX: usize = 200;
/// `providedResourceId`, in characters (seed rule).
pub const PROVIDED_ID_LEN_MAX: usize = 300;
/// `permissionGroupId`, in characters.
pub const PERMISSION_GROUP_ID_LEN_MAX: usize = 200;
/// Groups on one token.
pub const PERMISSION_GROUPS_MAX: usize = 256;
/// `provider`, in characters.
pub const PROVIDER_LEN_MAX: usize = 64;
/// `accountName`, in characters (an e-mail address is at most 320).
pub const ACCOUNT_NAME_LEN_MAX: usize = 320;
/// Provider secrets, in bytes.
pub const SECRET_LEN_MAX: usize = 8192;
/// `reason` on trash and revoke, in characters.
pub const REASON_LEN_MAX: usize = 1000;
/// `agentId` and `correlationId`, in characters.
pub const AGENT_ID_LEN_MAX: usize = 200;

/// Checks `workspaceId` against `[A-Za-z0-9_-]{1,64}`.
pub fn workspace_id(field: &str, value: &str) -> Result<(), Rejection> {
    let ok = !value.is_empty()
        && value.len() <= WORKSPACE_ID_LEN_MAX
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Rejection::invalid(
            field,
            "must match [A-Za-z0-9_-]{1,64} (it is a NATS subject token)",
        ))
    }
}

/// Parses a UUID that must be in lowercase canonical (hyphenated) form.
pub fn uuid(field: &str, value: &str) -> Result<Uuid, Rejection> {
    let parsed = Uuid::try_parse(value).ok();
    match parsed {
        Some(id) if id.hyphenated().to_string() == value => Ok(id),
        _ => Err(Rejection::invalid(
            field,
            "must be a UUID in lowercase canonical form (8-4-4-4-12 hex digits)",
        )),
    }
}

/// Who acts (a command's or a request's `actor`): its `agentId` is text like
/// any other (a control character in it could forge a line of the audit log
/// it is written to).
pub fn actor(agent: &crate::Agent) -> Result<(), Rejection> {
    text("actor.agentId", &agent.agent_id, AGENT_ID_LEN_MAX)
}

/// A required text field: trimmed non-empty, bounded, free of control
/// characters, of bidirectional embeddings, overrides and isolates, and of
/// line and paragraph separators. Such text ends up in audit output and
/// logs, where an override reorders what a reader sees ("Trojan Source",
/// CVE-2021-42574) and a separator starts what looks like a new line.
pub fn text(field: &str, value: &str, max_chars: usize) -> Result<(), Rejection> {
    if value.trim().is_empty() {
        return Err(Rejection::invalid(field, "must not be empty"));
    }
    if value.chars().count() > max_chars {
        return Err(Rejection::invalid(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Rejection::invalid(
            field,
            "must not contain control characters",
        ));
    }
    if let Some(c) = value.chars().find(|c| reorders_or_breaks(*c)) {
        return Err(Rejection::invalid(
            field,
            format!(
                "must not contain bidirectional overrides or line separators (U+{:04X})",
                u32::from(c)
            ),
        ));
    }
    Ok(())
}

/// Bidirectional embeddings, overrides and isolates, and the line and
/// paragraph separators. The marks (U+200E, U+200F, U+061C) stay allowed:
/// they change no order of their own, and right-to-left text needs them.
fn reorders_or_breaks(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
}

/// Letters and symbols that render as nothing (Hangul fillers, the blank
/// Braille pattern): not format characters, but as invisible as they are.
fn blank(c: char) -> bool {
    matches!(
        c,
        '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' | '\u{2800}'
    )
}

/// Text that is (part of) a uniqueness key (a client token's name, an access
/// token's provider and account), on top of [`text`]: what looks alike must
/// compare alike, so it must be in Unicode normalization form C (else "Café"
/// composed and decomposed are two names), without surrounding whitespace,
/// and without invisible format characters (zero-width spaces and joiners,
/// bidirectional overrides: general category Cf; a joiner right after a
/// virama is allowed, as Indic scripts need it), spaces other than U+0020,
/// line and paragraph separators, or letters that render blank (Hangul
/// fillers). Variation selectors stay allowed: emoji need them.
pub fn key_text(field: &str, value: &str) -> Result<(), Rejection> {
    if value.trim() != value {
        return Err(Rejection::invalid(
            field,
            "must not begin or end with whitespace",
        ));
    }
    // ASCII has no format characters and is always in NFC.
    if value.is_ascii() {
        return Ok(());
    }
    let mut before: Option<char> = None;
    for c in value.chars() {
        let invisible = match get_general_category(c) {
            // Zero-width (non-)joiners shape Indic scripts after a virama
            // (the rule of RFC 5892's CONTEXTJ that needs no joining-type
            // table); anywhere else they only hide.
            GeneralCategory::Format if matches!(c, '\u{200C}' | '\u{200D}') => {
                before.is_none_or(|b| canonical_combining_class(b) != VIRAMA)
            }
            GeneralCategory::Format => true,
            // Spaces other than U+0020 look like it and compare unlike it;
            // line and paragraph separators render as a break or nothing.
            GeneralCategory::SpaceSeparator => c != ' ',
            GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator => true,
            _ => blank(c),
        };
        if invisible {
            return Err(Rejection::invalid(
                field,
                format!(
                    "must not contain invisible format characters or spaces other than U+0020 (U+{:04X})",
                    u32::from(c)
                ),
            ));
        }
        before = Some(c);
    }
    if !is_nfc(value) {
        return Err(Rejection::invalid(
            field,
            "must be in Unicode normalization form C (NFC), so that names that look alike compare alike",
        ));
    }
    Ok(())
}

/// The canonical combining class of a virama (killer) sign.
const VIRAMA: u8 = 9;

/// A secret: non-empty and bounded in bytes; any characters allowed.
pub fn secret(field: &str, value: &str) -> Result<(), Rejection> {
    if value.is_empty() {
        return Err(Rejection::invalid(field, "must not be empty"));
    }
    if value.len() > SECRET_LEN_MAX {
        return Err(Rejection::invalid(
            field,
            format!("must be at most {SECRET_LEN_MAX} bytes"),
        ));
    }
    Ok(())
}

/// Unicode default case folding, the key for case-insensitive uniqueness.
pub fn fold(value: &str) -> String {
    // For ASCII, default case folding is lowercasing; most names are ASCII.
    if value.is_ascii() {
        value.to_ascii_lowercase()
    } else {
        caseless::default_case_fold_str(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_ids() {
        assert!(workspace_id("w", "acme_1-x").is_ok());
        for bad in ["", "a.b", "a b", "ä", &"x".repeat(65)] {
            let err = workspace_id("w", bad).unwrap_err();
            assert_eq!(err.field.as_deref(), Some("w"), "{bad}");
        }
    }

    #[test]
    fn uuids_must_be_lowercase_canonical() {
        let id = "c2fb2dbe-39eb-421a-b07c-5a14671fbbb5";
        assert_eq!(uuid("id", id).unwrap().to_string(), id);
        for bad in [
            "C2FB2DBE-39EB-421A-B07C-5A14671FBBB5",
            "c2fb2dbe39eb421ab07c5a14671fbbb5",
            "{c2fb2dbe-39eb-421a-b07c-5a14671fbbb5}",
            "urn:uuid:c2fb2dbe-39eb-421a-b07c-5a14671fbbb5",
            "nope",
        ] {
            assert!(uuid("id", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn folding_is_unicode_aware() {
        assert_eq!(fold("MyToken"), fold("mytoken"));
        assert_eq!(fold("STRASSE"), fold("straße"));
        assert_eq!(fold("ΣΊΣΥΦΟΣ"), fold("σίσυφος"));
        assert_ne!(fold("a"), fold("b"));
    }

    #[test]
    fn text_limits() {
        assert!(text("name", "ok", 3).is_ok());
        assert!(text("name", "   ", 3).is_err());
        assert!(text("name", "abcd", 3).is_err());
        assert!(text("name", "a\u{0}b", 3).is_err());
        // Characters, not bytes.
        assert!(text("name", "äöü", 3).is_ok());
    }
}
