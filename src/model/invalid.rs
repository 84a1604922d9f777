//! What a rule-breaking value in a request is called: the field the API names and one sentence
//! of what is wrong, shared by every check in the model (schedules, placements), so that the
//! API turns each into the same 422.

/// A value that breaks a rule: the field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The field, as the API names it (`schedule.cron`, `placement.selector`, ...).
    pub field: &'static str,
    /// What is wrong, in one sentence.
    pub detail: String,
}

/// An [`Invalid`] for `field`.
pub(crate) fn invalid(field: &'static str, detail: impl Into<String>) -> Invalid {
    Invalid {
        field,
        detail: detail.into(),
    }
}
