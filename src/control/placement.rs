//! Placement: which pool runs a task. Pure functions over a snapshot of the
//! pools, so every rule is unit-tested and the cloud profile can feed the
//! same code pools from many nodes.
//!
//! Rules, in order:
//! 1. Eligible pools serve the model, are Ready and not draining, and have
//!    the context the task needs.
//! 2. `pin`: only the named pool (or node); with `allow_fallback`, any
//!    eligible pool when the pinned one cannot take it.
//! 3. `avoid_pools` are left out, unless `allow_fallback` and nothing else
//!    is eligible.
//! 4. `prefer_pools` narrow the choice when one of them is eligible.
//! 5. The session's previous pool, when eligible (its KV cache is there).
//! 6. Least loaded: most free slots (after what is queued), then most free
//!    VRAM, then shortest queue, then the smallest pool id.

use std::cmp::Reverse;

/// One pool as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub pool_id: String,
    pub node_id: String,
    pub model_id: String,
    /// Ready, and not draining.
    pub accepting: bool,
    pub ctx: usize,
    pub slots_total: usize,
    /// Slots running a task (as the control side counts them).
    pub slots_busy: usize,
    pub queue_depth: usize,
    pub vram_free_bytes: u64,
}

impl Candidate {
    /// Free slots minus the queue in front of them (may be negative).
    fn headroom(&self) -> i64 {
        self.slots_total as i64 - self.slots_busy as i64 - self.queue_depth as i64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Auto,
    Prefer,
    Pin,
}

/// What the task asks of placement.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Request {
    pub model_id: String,
    /// Prompt tokens + max_tokens.
    pub ctx_needed: usize,
    pub mode: Mode,
    pub pin_pool_id: Option<String>,
    pub pin_node_id: Option<String>,
    pub prefer_pools: Vec<String>,
    pub avoid_pools: Vec<String>,
    pub allow_fallback: bool,
    /// The pool the session's last turn ran on.
    pub session_pool: Option<String>,
}

/// Why a pool was chosen (for logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Pinned,
    Preferred,
    SessionAffinity,
    LeastLoaded,
    /// The pin or avoid list could not be honoured; `allow_fallback` let
    /// another pool take it.
    Fallback,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Pinned => "pinned",
            Reason::Preferred => "preferred",
            Reason::SessionAffinity => "session affinity",
            Reason::LeastLoaded => "least loaded",
            Reason::Fallback => "fallback",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub pool_id: String,
    pub node_id: String,
    pub reason: Reason,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("no pool serves model {0:?}")]
    NoPoolForModel(String),
    #[error("no pool serving model {0:?} is ready")]
    NoReadyPool(String),
    #[error(
        "no pool serving model {model:?} has a context of {needed} tokens (largest: {largest})"
    )]
    CtxTooSmall {
        model: String,
        needed: usize,
        largest: usize,
    },
    #[error("pinned pool {0:?} does not exist or does not serve the model")]
    PinnedUnknown(String),
    #[error("pinned pool {0:?} is not accepting tasks")]
    PinnedUnavailable(String),
    #[error("every pool serving the model is in avoid_pools")]
    AllAvoided,
}

/// Choose a pool for `req` among `pools`.
pub fn place(req: &Request, pools: &[Candidate]) -> Result<Decision, PlacementError> {
    let serving: Vec<&Candidate> = pools
        .iter()
        .filter(|c| c.model_id == req.model_id)
        .collect();
    if serving.is_empty() {
        return Err(PlacementError::NoPoolForModel(req.model_id.clone()));
    }
    let eligible: Vec<&Candidate> = serving
        .iter()
        .copied()
        .filter(|c| c.accepting && c.ctx >= req.ctx_needed)
        .collect();
    let none_eligible = || {
        if serving.iter().any(|c| c.accepting) {
            PlacementError::CtxTooSmall {
                model: req.model_id.clone(),
                needed: req.ctx_needed,
                largest: serving.iter().map(|c| c.ctx).max().unwrap_or(0),
            }
        } else {
            PlacementError::NoReadyPool(req.model_id.clone())
        }
    };

    if req.mode == Mode::Pin {
        let pinned: Vec<&Candidate> = serving
            .iter()
            .copied()
            .filter(|c| req.pin_pool_id.as_ref().is_none_or(|p| &c.pool_id == p))
            .filter(|c| req.pin_node_id.as_ref().is_none_or(|n| &c.node_id == n))
            .collect();
        let label = req
            .pin_pool_id
            .clone()
            .or_else(|| req.pin_node_id.clone())
            .unwrap_or_default();
        let usable: Vec<&Candidate> = pinned
            .iter()
            .copied()
            .filter(|c| eligible.iter().any(|e| e.pool_id == c.pool_id))
            .collect();
        if let Some(c) = least_loaded(&usable) {
            return Ok(decision(c, Reason::Pinned));
        }
        if !req.allow_fallback {
            return Err(if pinned.is_empty() {
                PlacementError::PinnedUnknown(label)
            } else if pinned.iter().all(|c| c.accepting) {
                none_eligible()
            } else {
                PlacementError::PinnedUnavailable(label)
            });
        }
        return least_loaded(&eligible)
            .map(|c| decision(c, Reason::Fallback))
            .ok_or_else(none_eligible);
    }

    if eligible.is_empty() {
        return Err(none_eligible());
    }
    let allowed: Vec<&Candidate> = eligible
        .iter()
        .copied()
        .filter(|c| !req.avoid_pools.contains(&c.pool_id))
        .collect();
    if allowed.is_empty() {
        return if req.allow_fallback {
            Ok(decision(
                least_loaded(&eligible).expect("eligible is not empty"),
                Reason::Fallback,
            ))
        } else {
            Err(PlacementError::AllAvoided)
        };
    }
    let preferred: Vec<&Candidate> = allowed
        .iter()
        .copied()
        .filter(|c| req.prefer_pools.contains(&c.pool_id))
        .collect();
    let (set, reason) = if preferred.is_empty() {
        (allowed, Reason::LeastLoaded)
    } else {
        (preferred, Reason::Preferred)
    };
    if let Some(sp) = &req.session_pool {
        if let Some(c) = set.iter().find(|c| &c.pool_id == sp) {
            return Ok(decision(c, Reason::SessionAffinity));
        }
    }
    Ok(decision(
        least_loaded(&set).expect("set is not empty"),
        reason,
    ))
}

fn decision(c: &Candidate, reason: Reason) -> Decision {
    Decision {
        pool_id: c.pool_id.clone(),
        node_id: c.node_id.clone(),
        reason,
    }
}

fn least_loaded<'a>(set: &[&'a Candidate]) -> Option<&'a Candidate> {
    set.iter().copied().min_by_key(|c| {
        (
            Reverse(c.headroom()),
            Reverse(c.vram_free_bytes),
            c.queue_depth,
            c.pool_id.as_str(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(id: &str, busy: usize, queue: usize) -> Candidate {
        Candidate {
            pool_id: id.into(),
            node_id: "local".into(),
            model_id: "m".into(),
            accepting: true,
            ctx: 2048,
            slots_total: 4,
            slots_busy: busy,
            queue_depth: queue,
            vram_free_bytes: 0,
        }
    }

    fn req() -> Request {
        Request {
            model_id: "m".into(),
            ctx_needed: 100,
            ..Default::default()
        }
    }

    fn chosen(r: &Request, pools: &[Candidate]) -> String {
        place(r, pools).unwrap().pool_id
    }

    #[test]
    fn least_loaded_with_deterministic_ties() {
        let pools = [pool("b", 1, 0), pool("a", 1, 0), pool("c", 0, 0)];
        assert_eq!(chosen(&req(), &pools), "c");
        let pools = [pool("b", 1, 0), pool("a", 1, 0)];
        assert_eq!(chosen(&req(), &pools), "a");
        // Queue counts against free slots.
        let pools = [pool("a", 1, 2), pool("b", 2, 0)];
        assert_eq!(chosen(&req(), &pools), "b");
        // Same headroom: more free VRAM wins, then the shorter queue.
        let mut x = pool("x", 0, 1);
        let mut y = pool("y", 1, 0);
        assert_eq!(chosen(&req(), &[x.clone(), y.clone()]), "y");
        x.vram_free_bytes = 10;
        assert_eq!(chosen(&req(), &[x.clone(), y.clone()]), "x");
        y.vram_free_bytes = 10;
        assert_eq!(chosen(&req(), &[x, y]), "y");
    }

    #[test]
    fn model_readiness_and_ctx_filters() {
        let mut other = pool("a", 0, 0);
        other.model_id = "other".into();
        assert_eq!(
            place(&req(), &[other.clone()]),
            Err(PlacementError::NoPoolForModel("m".into()))
        );
        let mut down = pool("b", 0, 0);
        down.accepting = false;
        assert_eq!(
            place(&req(), &[other, down.clone()]),
            Err(PlacementError::NoReadyPool("m".into()))
        );
        let mut r = req();
        r.ctx_needed = 4096;
        assert!(matches!(
            place(&r, &[pool("c", 0, 0), down]),
            Err(PlacementError::CtxTooSmall { largest: 2048, .. })
        ));
    }

    #[test]
    fn pin_honoured_and_fallback_optional() {
        let pools = [pool("a", 0, 0), pool("b", 3, 5)];
        let mut r = req();
        r.mode = Mode::Pin;
        r.pin_pool_id = Some("b".into());
        let d = place(&r, &pools).unwrap();
        assert_eq!((d.pool_id.as_str(), d.reason), ("b", Reason::Pinned));
        let mut down = pools.clone();
        down[1].accepting = false;
        assert_eq!(
            place(&r, &down),
            Err(PlacementError::PinnedUnavailable("b".into()))
        );
        r.allow_fallback = true;
        let d = place(&r, &down).unwrap();
        assert_eq!((d.pool_id.as_str(), d.reason), ("a", Reason::Fallback));
        r.allow_fallback = false;
        r.pin_pool_id = Some("zzz".into());
        assert_eq!(
            place(&r, &pools),
            Err(PlacementError::PinnedUnknown("zzz".into()))
        );
        // Pin by node.
        let mut remote = pool("r", 0, 0);
        remote.node_id = "gpu-1".into();
        r.pin_pool_id = None;
        r.pin_node_id = Some("gpu-1".into());
        assert_eq!(chosen(&r, &[pool("a", 0, 0), remote]), "r");
    }

    #[test]
    fn prefer_and_avoid() {
        let pools = [pool("a", 0, 0), pool("b", 2, 0), pool("c", 3, 0)];
        let mut r = req();
        r.prefer_pools = vec!["c".into(), "b".into()];
        let d = place(&r, &pools).unwrap();
        assert_eq!((d.pool_id.as_str(), d.reason), ("b", Reason::Preferred));
        // Preferred pools that cannot take it are skipped.
        let mut busy = pools.clone();
        busy[1].accepting = false;
        busy[2].accepting = false;
        assert_eq!(chosen(&r, &busy), "a");
        let mut r = req();
        r.avoid_pools = vec!["a".into()];
        assert_eq!(chosen(&r, &pools), "b");
        r.avoid_pools = vec!["a".into(), "b".into(), "c".into()];
        assert_eq!(place(&r, &pools), Err(PlacementError::AllAvoided));
        r.allow_fallback = true;
        assert_eq!(place(&r, &pools).unwrap().reason, Reason::Fallback);
    }

    #[test]
    fn session_affinity_beats_load_but_not_eligibility() {
        let pools = [pool("a", 0, 0), pool("b", 3, 0)];
        let mut r = req();
        r.session_pool = Some("b".into());
        let d = place(&r, &pools).unwrap();
        assert_eq!(
            (d.pool_id.as_str(), d.reason),
            ("b", Reason::SessionAffinity)
        );
        let mut down = pools.clone();
        down[1].accepting = false;
        assert_eq!(chosen(&r, &down), "a");
        r.avoid_pools = vec!["b".into()];
        assert_eq!(chosen(&r, &pools), "a");
    }
}
