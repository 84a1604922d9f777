//! Labels in the API: the rules a client's labels follow, checked before anything touches
//! etcd, and where they are kept in the stored resource.

use std::collections::BTreeMap;

use super::ApiError;
use crate::model::resource::{LABELS_FIELD, Resource};

/// Most labels on one resource.
pub const MAX_LABELS: usize = 64;
/// Longest label key, in characters.
pub const MAX_LABEL_KEY: usize = 128;
/// Longest label value, in characters.
pub const MAX_LABEL_VALUE: usize = 256;

/// Stores `labels` in `r` (none: no field).
pub fn set_labels(r: &mut Resource, labels: &BTreeMap<String, String>) {
    if labels.is_empty() {
        r.extra.remove(LABELS_FIELD);
    } else if let Ok(value) = serde_json::to_value(labels) {
        r.extra.insert(LABELS_FIELD.to_owned(), value);
    }
}

/// Checks labels (a value of `None` removes one) by the rules.
pub fn check_labels<'a>(
    labels: impl IntoIterator<Item = (&'a String, Option<&'a String>)>,
) -> Result<(), ApiError> {
    for (key, value) in labels {
        let key_ok = (1..=MAX_LABEL_KEY).contains(&key.chars().count())
            && !key.chars().any(char::is_control);
        let value_ok = value.is_none_or(|v| {
            v.chars().count() <= MAX_LABEL_VALUE && !v.chars().any(char::is_control)
        });
        if !key_ok || !value_ok {
            return Err(ApiError::Unprocessable {
                detail: "a label key is 1 to 128 characters and a value at most 256, with no \
                         control characters"
                    .into(),
                field: Some("labels".into()),
            });
        }
    }
    Ok(())
}

/// Checks a whole set of labels: each by the rules, and at most [`MAX_LABELS`].
pub fn check_all(labels: &BTreeMap<String, String>) -> Result<(), ApiError> {
    check_labels(labels.iter().map(|(k, v)| (k, Some(v))))?;
    if labels.len() > MAX_LABELS {
        return Err(ApiError::Unprocessable {
            detail: format!("at most {MAX_LABELS} labels"),
            field: Some("labels".into()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_lengths_count_characters() {
        let key = "é".repeat(MAX_LABEL_KEY);
        let value = "ü".repeat(MAX_LABEL_VALUE);
        assert!(check_labels([(&key, Some(&value))]).is_ok());
        let long = "é".repeat(MAX_LABEL_KEY + 1);
        assert!(check_labels([(&long, None)]).is_err());
        let control = "a\u{85}".to_owned();
        assert!(check_labels([(&control, None)]).is_err());
    }
}
