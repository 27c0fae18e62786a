//! Free text the lifecycle worker stores (a work order's `service_type` and `message`, a profile's
//! `name` and `profile_pic`, a rating's description). Postgres text cannot hold U+0000: without
//! this check such a value fails the whole statement, which a REST caller heard as "temporarily
//! unavailable, please retry" (a retry fails the same way) and a frame's sender as "could not be
//! processed", neither naming the field. The wording is the chat worker's.

/// The refusal naming `field` when `text` holds U+0000.
pub fn refuse_nul(field: &str, text: Option<&str>) -> Result<(), String> {
    match text {
        Some(text) if text.contains('\0') => Err(format!("{field} must not contain U+0000")),
        _ => Ok(()),
    }
}

/// The first refusal among `fields` (name, value), in their order.
pub fn refuse_nul_in(fields: &[(&str, Option<&str>)]) -> Result<(), String> {
    fields
        .iter()
        .try_for_each(|(field, text)| refuse_nul(field, *text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nul_is_refused_naming_the_field() {
        assert_eq!(
            refuse_nul("message", Some("a\0b")),
            Err(String::from("message must not contain U+0000"))
        );
        assert_eq!(refuse_nul("message", Some("plain text")), Ok(()));
        assert_eq!(refuse_nul("message", None), Ok(()));
    }

    #[test]
    fn the_first_field_with_a_nul_is_named() {
        assert_eq!(
            refuse_nul_in(&[
                ("service_type", Some("Plumbing")),
                ("message", Some("\0")),
                ("name", Some("\0")),
            ]),
            Err(String::from("message must not contain U+0000"))
        );
    }
}
