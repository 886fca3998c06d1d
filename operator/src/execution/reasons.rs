//! The execution controller's condition reasons as types: why an execution is Pending with no
//! attempt under way ([`Pending`]) and why it failed without a result of its own
//! ([`Failure`]). Each says whether its event is a warning and, for waits, how soon to look
//! again; the strings exist only where they are written.

use std::time::Duration;

use kube::runtime::events::EventType;

use super::outcome::Loss;

/// Why an execution waits with no attempt under way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pending {
    /// Its WasmFunction does not exist (yet).
    FunctionNotFound,
    /// Its function is compiling or waiting for its source.
    FunctionNotReady,
    /// No node can run it as asked.
    Unschedulable,
    /// It waits for room on a node (the admission queue).
    Queued,
    /// Its module could not be fetched yet (retried with backoff, bounded).
    ArtifactUnavailable,
    /// An object an earlier execution of the same name left behind is being deleted.
    WaitingForCleanup,
}

impl Pending {
    /// The condition and event reason.
    pub fn reason(self) -> &'static str {
        match self {
            Pending::FunctionNotFound => "FunctionNotFound",
            Pending::FunctionNotReady => "FunctionNotReady",
            Pending::Unschedulable => "Unschedulable",
            Pending::Queued => "Queued",
            Pending::ArtifactUnavailable => "ArtifactUnavailable",
            Pending::WaitingForCleanup => "WaitingForCleanup",
        }
    }

    /// Its event's type: a warning when a person may have to act. Waiting for a compile, for
    /// room, or for a leftover to go is the normal course of things.
    pub fn event_type(self) -> EventType {
        match self {
            Pending::FunctionNotReady | Pending::Queued | Pending::WaitingForCleanup => {
                EventType::Normal
            }
            Pending::FunctionNotFound | Pending::Unschedulable | Pending::ArtifactUnavailable => {
                EventType::Warning
            }
        }
    }

    /// How soon to look again when no watched change comes first; none for
    /// `ArtifactUnavailable`, whose next try is the artifact's backoff, decided where the module
    /// is fetched.
    pub fn poll(self) -> Option<Duration> {
        Some(match self {
            Pending::FunctionNotFound | Pending::FunctionNotReady => Duration::from_secs(30),
            Pending::Unschedulable => Duration::from_secs(10),
            // A run pod finishing wakes the head of the queue sooner.
            Pending::Queued => Duration::from_secs(15),
            Pending::WaitingForCleanup => Duration::from_secs(1),
            Pending::ArtifactUnavailable => return None,
        })
    }
}

/// Why an execution failed without a result of its own (its guest's failures are the result
/// document's reasons).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Its function failed to compile or is invalid.
    FunctionFailed,
    /// Its spec asks for something impossible (both stdin and input, a memory limit below a
    /// page).
    InvalidSpec,
    /// Its stdin or arguments are larger than a run can be handed.
    InputTooLarge,
    /// Its module could not be fetched, for good or after the bounded retries.
    ArtifactUnavailable,
    /// An object it needs a name for belongs to someone else.
    NameConflict,
    /// Its last attempt was lost and no retry is left.
    Lost(Loss),
}

impl Failure {
    /// The condition and event reason.
    pub fn reason(self) -> &'static str {
        match self {
            Failure::FunctionFailed => "FunctionFailed",
            Failure::InvalidSpec => "InvalidSpec",
            Failure::InputTooLarge => "InputTooLarge",
            Failure::ArtifactUnavailable => "ArtifactUnavailable",
            Failure::NameConflict => "NameConflict",
            Failure::Lost(loss) => loss.reason(),
        }
    }

    /// The loss that ended the execution, when one did.
    pub fn loss(self) -> Option<Loss> {
        match self {
            Failure::Lost(loss) => Some(loss),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PENDING: [Pending; 6] = [
        Pending::FunctionNotFound,
        Pending::FunctionNotReady,
        Pending::Unschedulable,
        Pending::Queued,
        Pending::ArtifactUnavailable,
        Pending::WaitingForCleanup,
    ];

    #[test]
    fn every_pending_reason_is_distinct_and_a_valid_condition_reason() {
        let reasons: std::collections::BTreeSet<_> = PENDING.iter().map(|p| p.reason()).collect();
        assert_eq!(reasons.len(), PENDING.len());
        for reason in reasons {
            assert!(
                reason
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_uppercase())
                    && reason.chars().all(|c| c.is_ascii_alphanumeric()),
                "{reason}"
            );
        }
    }

    #[test]
    fn only_waits_a_person_must_act_on_warn() {
        let warning: Vec<_> = PENDING
            .iter()
            .filter(|p| p.event_type() == EventType::Warning)
            .collect();
        assert_eq!(
            warning,
            [
                &Pending::FunctionNotFound,
                &Pending::Unschedulable,
                &Pending::ArtifactUnavailable
            ]
        );
    }

    #[test]
    fn every_wait_but_an_unavailable_artifact_has_a_poll_of_its_own() {
        let without: Vec<_> = PENDING.iter().filter(|p| p.poll().is_none()).collect();
        assert_eq!(without, [&Pending::ArtifactUnavailable]);
    }

    #[test]
    fn an_unschedulable_execution_looks_again_sooner_than_one_waiting_for_its_function() {
        assert!(Pending::Unschedulable.poll() < Pending::FunctionNotReady.poll());
        assert!(Pending::Queued.poll() < Pending::FunctionNotReady.poll());
    }

    #[test]
    fn a_failure_from_a_loss_carries_the_losss_reason() {
        let failure = Failure::Lost(Loss::PodEvicted);
        assert_eq!(failure.reason(), "PodEvicted");
        assert_eq!(failure.loss(), Some(Loss::PodEvicted));
        assert_eq!(Failure::NameConflict.loss(), None);
    }
}
