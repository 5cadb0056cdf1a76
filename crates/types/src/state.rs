//! The sandbox state machine. Every state change in the node engine goes through [`transition`], and
//! the table test below lists every (state, event) pair, so an illegal move is a compile-time-visible
//! decision rather than an accident.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxState {
    /// Namespaces, filesystem and agent are being set up.
    Creating,
    /// Booted and idle, not yet handed to a caller (pool members).
    Ready,
    /// Handed to a caller; its end time is ticking.
    Running,
    /// Every process frozen; memory kept.
    Paused,
    /// Checkpointed to disk; no processes on the host.
    Hibernated,
    /// Gone. Terminal.
    Killed,
}

impl SandboxState {
    /// The E2B name of the state (`running` / `paused`), used in list filters and answers.
    pub fn e2b_name(self) -> &'static str {
        match self {
            SandboxState::Paused | SandboxState::Hibernated => "paused",
            _ => "running",
        }
    }

    /// Handed to a caller and not yet killed: what E2B lists.
    pub fn is_claimed(self) -> bool {
        matches!(self, SandboxState::Running | SandboxState::Paused | SandboxState::Hibernated)
    }

    pub fn is_terminal(self) -> bool {
        self == SandboxState::Killed
    }
}

/// Why a sandbox ended; kept in its record and its event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum KillReason {
    /// A caller asked for it (`DELETE /sandboxes/{id}`).
    Requested,
    /// Its end time passed.
    Timeout,
    /// Its init process exited on its own (e.g. killed by the OOM killer).
    Exited { detail: String },
    /// Setting it up failed.
    CreateFailed { detail: String },
    /// The daemon restarted and could not find its processes any more.
    LostOnRestart,
    /// A ready pool member was let go (the pool shrank or was removed, or the claim failed).
    PoolRelease { detail: String },
}

impl KillReason {
    /// A stable name for logs and APIs.
    pub fn code(&self) -> &'static str {
        match self {
            KillReason::Requested => "requested",
            KillReason::Timeout => "timeout",
            KillReason::Exited { .. } => "exited",
            KillReason::CreateFailed { .. } => "create_failed",
            KillReason::LostOnRestart => "lost_on_restart",
            KillReason::PoolRelease { .. } => "pool_release",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SandboxEvent {
    Booted,
    Claimed,
    Pause,
    Resume,
    Hibernate,
    Wake,
    Kill(KillReason),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a sandbox in state {from:?} cannot take event {event:?}")]
pub struct IllegalTransition {
    pub from: SandboxState,
    pub event: SandboxEvent,
}

/// The one place that decides which state follows which.
pub fn transition(from: SandboxState, event: &SandboxEvent) -> Result<SandboxState, IllegalTransition> {
    use SandboxEvent as E;
    use SandboxState as S;
    let to = match (from, event) {
        (S::Creating, E::Booted) => S::Ready,
        (S::Ready, E::Claimed) => S::Running,
        (S::Running, E::Pause) => S::Paused,
        (S::Paused, E::Resume) => S::Running,
        (S::Paused, E::Hibernate) => S::Hibernated,
        (S::Hibernated, E::Wake) => S::Running,
        (S::Killed, _) => {
            return Err(IllegalTransition { from, event: event.clone() });
        }
        (_, E::Kill(_)) => S::Killed,
        _ => return Err(IllegalTransition { from, event: event.clone() }),
    };
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use SandboxEvent as E;
    use SandboxState as S;

    #[test]
    fn every_state_and_event_pair() {
        let kill = E::Kill(KillReason::Requested);
        let states = [S::Creating, S::Ready, S::Running, S::Paused, S::Hibernated, S::Killed];
        let events = [E::Booted, E::Claimed, E::Pause, E::Resume, E::Hibernate, E::Wake, kill.clone()];
        let expected = |s: S, e: &E| -> Option<S> {
            match (s, e) {
                (S::Creating, E::Booted) => Some(S::Ready),
                (S::Ready, E::Claimed) => Some(S::Running),
                (S::Running, E::Pause) => Some(S::Paused),
                (S::Paused, E::Resume) => Some(S::Running),
                (S::Paused, E::Hibernate) => Some(S::Hibernated),
                (S::Hibernated, E::Wake) => Some(S::Running),
                (S::Killed, _) => None,
                (_, E::Kill(_)) => Some(S::Killed),
                _ => None,
            }
        };
        let mut legal = 0;
        for s in states {
            for e in &events {
                let got = transition(s, e).ok();
                assert_eq!(got, expected(s, e), "{s:?} + {e:?}");
                legal += got.is_some() as usize;
            }
        }
        // 6 forward moves + kill from the 5 live states.
        assert_eq!(legal, 11);
    }

    #[test]
    fn killed_is_terminal() {
        assert!(S::Killed.is_terminal());
        assert!(transition(S::Killed, &E::Kill(KillReason::Timeout)).is_err());
    }
}
