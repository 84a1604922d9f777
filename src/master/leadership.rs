//! Whether this master leads, as a value that request handlers read synchronously.
//!
//! A term goes `None` → `Won(fence)` (the campaign was won and verified; the leader is taking
//! over) → `Ready(fence)` (take-over done: writes are accepted) → `None`. The [`Fence`] names
//! our leader key and its create revision; every write the leader makes compares it inside the
//! same etcd txn, so a deposed leader's writes never apply. Any part of the process that sees a
//! fence fail calls [`Leadership::step_down`], which ends the term at once; the election loop
//! sees that and campaigns again.

use std::sync::Arc;

use tokio::sync::watch;

/// Our leader key, as written by a won campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The leader key, `<election>/<lease hex>`.
    pub key: String,
    /// The key's create revision; compared by every leader write.
    pub create_revision: i64,
    /// The session lease the key lives on.
    pub lease: i64,
}

/// This master's term.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Term {
    /// Not the leader.
    #[default]
    None,
    /// Won the election; taking over, not yet accepting writes.
    Won(Fence),
    /// Leading and accepting writes.
    Ready(Fence),
}

impl Term {
    /// The fence of the current term, if any.
    pub fn fence(&self) -> Option<&Fence> {
        match self {
            Term::None => None,
            Term::Won(f) | Term::Ready(f) => Some(f),
        }
    }
}

/// Shared, cheap to clone handle on this master's term.
#[derive(Debug, Clone)]
pub struct Leadership {
    term: Arc<watch::Sender<Term>>,
}

impl Default for Leadership {
    fn default() -> Self {
        Self::new()
    }
}

impl Leadership {
    /// Not leading.
    pub fn new() -> Self {
        Self {
            term: Arc::new(watch::channel(Term::None).0),
        }
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.term.borrow().clone()
    }

    /// The fence to write with, when leading and ready.
    pub fn ready_fence(&self) -> Option<Fence> {
        match &*self.term.borrow() {
            Term::Ready(f) => Some(f.clone()),
            _ => None,
        }
    }

    /// True once a campaign has been won (ready or not).
    pub fn is_leader(&self) -> bool {
        !matches!(*self.term.borrow(), Term::None)
    }

    /// Changes to the term.
    pub fn subscribe(&self) -> watch::Receiver<Term> {
        self.term.subscribe()
    }

    /// A verified campaign win.
    pub(crate) fn won(&self, fence: Fence) {
        self.term.send_replace(Term::Won(fence));
    }

    /// Take-over done for `fence`; ignored when that term already ended.
    pub fn ready(&self, fence: &Fence) -> bool {
        self.term.send_if_modified(|t| match t {
            Term::Won(f) if f == fence => {
                *t = Term::Ready(fence.clone());
                true
            }
            _ => false,
        })
    }

    /// Ends the term of `fence` (a fenced write failed, the lease was lost, another leader was
    /// seen). Ignored when that term already ended. Returns whether it ended now.
    pub fn step_down(&self, fence: &Fence) -> bool {
        self.term.send_if_modified(|t| {
            if t.fence() == Some(fence) {
                *t = Term::None;
                true
            } else {
                false
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fence(rev: i64) -> Fence {
        Fence {
            key: format!("/e/{rev:x}"),
            create_revision: rev,
            lease: rev,
        }
    }

    #[test]
    fn a_term_is_won_made_ready_and_ended_once() {
        let l = Leadership::new();
        assert!(!l.is_leader());
        l.won(fence(5));
        assert!(l.is_leader());
        assert_eq!(l.ready_fence(), None);
        assert!(!l.ready(&fence(4)), "an old term cannot become ready");
        assert!(l.ready(&fence(5)));
        assert_eq!(l.ready_fence(), Some(fence(5)));
        assert!(
            !l.step_down(&fence(4)),
            "an old fence cannot end a newer term"
        );
        assert!(l.step_down(&fence(5)));
        assert!(!l.step_down(&fence(5)));
        assert_eq!(l.term(), Term::None);
    }
}
