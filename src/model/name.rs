//! Resource name rules.
//!
//! A name becomes part of an etcd key (`/resources/<name>`), so it is checked before anything
//! touches etcd: 1 to 128 characters from `[A-Za-z0-9._-]`, and not `.` or `..`.

/// Longest accepted name, in bytes (all accepted characters are ASCII).
pub const MAX_LEN: usize = 128;

/// The rule as a regular expression (ECMA-262 and Rust `regex` alike, with no look-around), for
/// the OpenAPI document: a first character that is not a dot, or one dot and then a non-dot,
/// or two dots and then at least one more character.
pub const PATTERN: &str = "^([A-Za-z0-9_-][A-Za-z0-9._-]{0,127}|\\.[A-Za-z0-9_-][A-Za-z0-9._-]{0,126}|\\.\\.[A-Za-z0-9._-]{1,126})$";

/// The rule, as shown to users in errors.
pub const RULE: &str = "a name is 1 to 128 characters from [A-Za-z0-9._-], and not '.' or '..'";

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty name.
    #[error("name is empty; {RULE}")]
    Empty,
    /// Longer than [`MAX_LEN`].
    #[error("name is longer than 128 characters; {RULE}")]
    TooLong,
    /// A character outside the allowed set.
    #[error("name contains a character outside [A-Za-z0-9._-]; {RULE}")]
    BadCharacter,
    /// `.` or `..`.
    #[error("name may not be '.' or '..'; {RULE}")]
    Dots,
}

/// Checks a resource name.
pub fn validate(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_LEN {
        return Err(NameError::TooLong);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(NameError::BadCharacter);
    }
    if name == "." || name == ".." {
        return Err(NameError::Dots);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in ["douban", "a", "A-b_c.d", "..a", &"x".repeat(128)] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_hostile_names() {
        assert_eq!(validate(""), Err(NameError::Empty));
        assert_eq!(validate(&"x".repeat(129)), Err(NameError::TooLong));
        assert_eq!(validate("."), Err(NameError::Dots));
        assert_eq!(validate(".."), Err(NameError::Dots));
        for bad in ["a/b", "../x", "a b", "a\u{0}", "é", "a\nb", "a%2F"] {
            assert_eq!(validate(bad), Err(NameError::BadCharacter), "{bad:?}");
        }
    }

    proptest::proptest! {
        /// The published pattern and the check agree on every name, including the ones made
        /// of the edge cases (dots, the length bound, characters just outside the set).
        #[test]
        fn the_pattern_states_the_rule(name in "[A-Za-z0-9._/ é-]{0,130}|\\.{1,3}[a-z]{0,2}") {
            let pattern = regex::Regex::new(PATTERN).expect("pattern");
            proptest::prop_assert_eq!(pattern.is_match(&name), validate(&name).is_ok(), "{:?}", name);
        }
    }
}
