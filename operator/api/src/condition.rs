//! Status conditions: the standard `metav1.Condition` list keyed by `type`, and the helper that
//! keeps `lastTransitionTime` when a condition's status does not change.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionStatus {
    /// `True`.
    True,
    /// `False`.
    False,
    /// `Unknown`.
    Unknown,
}

impl ConditionStatus {
    /// The API string.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionStatus::True => "True",
            ConditionStatus::False => "False",
            ConditionStatus::Unknown => "Unknown",
        }
    }
}

/// Sets condition `type_` in `conditions`: replaces the one with that type (keeping its
/// `lastTransitionTime` when the status is unchanged) or appends it.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    observed_generation: Option<i64>,
    now: Time,
) {
    let status = status.as_str().to_owned();
    let previous = conditions.iter().position(|c| c.type_ == type_);
    let last_transition_time = match previous.map(|i| &conditions[i]) {
        Some(existing) if existing.status == status => existing.last_transition_time.clone(),
        _ => now,
    };
    let condition = Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        // The 1.20 apiserver's server-side apply turns an empty message into null and then
        // rejects it; a condition always says something.
        message: if message.is_empty() {
            reason.to_owned()
        } else {
            message.to_owned()
        },
        observed_generation,
        last_transition_time,
    };
    match previous {
        Some(index) => conditions[index] = condition,
        None => conditions.push(condition),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).expect("valid time"))
    }

    #[test]
    fn a_new_condition_is_appended_with_the_current_time() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            "Ready",
            ConditionStatus::False,
            "Compiling",
            "m",
            Some(1),
            at(10),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].status, "False");
        assert_eq!(conditions[0].last_transition_time, at(10));
        assert_eq!(conditions[0].observed_generation, Some(1));
    }

    #[test]
    fn an_unchanged_status_keeps_its_transition_time_but_takes_the_new_reason() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            "Ready",
            ConditionStatus::False,
            "Compiling",
            "a",
            Some(1),
            at(10),
        );
        set_condition(
            &mut conditions,
            "Ready",
            ConditionStatus::False,
            "CompileFailed",
            "b",
            Some(2),
            at(20),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, at(10));
        assert_eq!(conditions[0].reason, "CompileFailed");
        assert_eq!(conditions[0].message, "b");
        assert_eq!(conditions[0].observed_generation, Some(2));
    }

    #[test]
    fn a_changed_status_moves_the_transition_time_and_other_types_are_untouched() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            "Compiled",
            ConditionStatus::True,
            "Compiled",
            "",
            None,
            at(5),
        );
        set_condition(
            &mut conditions,
            "Ready",
            ConditionStatus::False,
            "Compiling",
            "",
            None,
            at(10),
        );
        set_condition(
            &mut conditions,
            "Ready",
            ConditionStatus::True,
            "Ready",
            "",
            None,
            at(30),
        );
        assert_eq!(conditions.len(), 2);
        assert_eq!(conditions[0].last_transition_time, at(5));
        assert_eq!(conditions[1].status, "True");
        assert_eq!(conditions[1].last_transition_time, at(30));
        assert_eq!(
            conditions[0].message, "Compiled",
            "an empty message takes the reason"
        );
    }
}
