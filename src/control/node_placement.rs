//! Node placement: which worker pool runs a task in the cloud profile. A pure
//! function over candidate pools, fed by `node_registry` from its index of
//! model holders, so it touches only the pools that serve the model.
//!
//! Rules (BRIEF section 4), in order:
//! 1. Eligible: the node is online (heartbeat within the timeout) and not
//!    draining, the pool is Ready and serves the model, its context fits the
//!    task, and the node has not already failed this task.
//! 2. `pin`: only pools matching `pin_node_id` / `pin_pool_id`; with
//!    `allow_fallback`, any eligible pool when none of those can take it.
//! 3. `avoid` entries are left out (unless `allow_fallback` and nothing else
//!    is eligible).
//! 4. `prefer` entries narrow the choice when one of them is eligible.
//! 5. The session's previous pool, when it is in the remaining set.
//! 6. Least loaded: most free slots, then most free VRAM, then shortest
//!    queue, then the smallest (node id, pool id).
//!
//! A `prefer` or `avoid` entry names a pool id (on any node), a node id, or
//! one pool of one node as `node_id/pool_id`.
//!
//! The whole decision is one pass over the candidates, keeping the best of
//! each class, so it costs O(holders) with no allocation.

use std::cmp::Ordering;

/// One pool of one node, as placement sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolCandidate<'a> {
    pub node_id: &'a str,
    pub pool_id: &'a str,
    /// Node online and not draining, heartbeat fresh, pool Ready.
    pub available: bool,
    /// Context per slot, in tokens.
    pub ctx: u64,
    /// Slots minus what is running and queued there (may be negative).
    pub free_slots: i64,
    pub vram_free_bytes: u64,
    pub queue_depth: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Auto,
    Prefer,
    Pin,
}

/// What a task asks of placement.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodePlacementRequest<'a> {
    pub model_id: &'a str,
    /// Prompt tokens + max_tokens.
    pub ctx_needed: u64,
    pub mode: Mode,
    pub pin_node_id: Option<&'a str>,
    pub pin_pool_id: Option<&'a str>,
    pub prefer: &'a [String],
    pub avoid: &'a [String],
    pub allow_fallback: bool,
    /// Node and pool of the session's previous turn.
    pub session: Option<(&'a str, &'a str)>,
    /// Nodes that already failed this task (it is being placed again).
    pub exclude_nodes: &'a [String],
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
pub struct NodeDecision {
    pub node_id: String,
    pub pool_id: String,
    pub reason: Reason,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodePlacementError {
    #[error("no node holds model {0:?}")]
    NoHolder(String),
    #[error("no node serving model {0:?} is online with a ready pool")]
    NoneAvailable(String),
    #[error(
        "no pool serving model {model:?} has a context of {needed} tokens (largest: {largest})"
    )]
    CtxTooSmall {
        model: String,
        needed: u64,
        largest: u64,
    },
    #[error("pinned {0} does not exist or does not serve the model")]
    PinnedUnknown(String),
    #[error("pinned {0} is not accepting tasks")]
    PinnedUnavailable(String),
    #[error("every pool serving the model is in avoid_pools")]
    AllAvoided,
}

/// Does a prefer/avoid entry name this pool?
fn names(entry: &str, c: &PoolCandidate<'_>) -> bool {
    match entry.split_once('/') {
        Some((node, pool)) => node == c.node_id && pool == c.pool_id,
        None => entry == c.pool_id || entry == c.node_id,
    }
}

/// Least loaded first: `Less` means `a` is the better choice.
fn load_order(a: &PoolCandidate<'_>, b: &PoolCandidate<'_>) -> Ordering {
    // `then_with`: the string comparisons run only on full ties.
    b.free_slots
        .cmp(&a.free_slots)
        .then(b.vram_free_bytes.cmp(&a.vram_free_bytes))
        .then(a.queue_depth.cmp(&b.queue_depth))
        .then_with(|| a.node_id.cmp(b.node_id))
        .then_with(|| a.pool_id.cmp(b.pool_id))
}

fn keep_best<'a>(slot: &mut Option<PoolCandidate<'a>>, c: PoolCandidate<'a>) {
    match slot {
        Some(b) if load_order(&c, b) != Ordering::Less => {}
        _ => *slot = Some(c),
    }
}

fn decision(c: PoolCandidate<'_>, reason: Reason) -> NodeDecision {
    NodeDecision {
        node_id: c.node_id.to_string(),
        pool_id: c.pool_id.to_string(),
        reason,
    }
}

/// Choose a pool for `req` among `candidates` (the pools serving the model,
/// available or not).
pub fn place<'a>(
    req: &NodePlacementRequest<'_>,
    candidates: impl IntoIterator<Item = PoolCandidate<'a>>,
) -> Result<NodeDecision, NodePlacementError> {
    let pinning = req.mode == Mode::Pin && (req.pin_node_id.is_some() || req.pin_pool_id.is_some());
    let mut seen = false;
    let mut any_available = false;
    let mut largest_ctx = 0u64;
    let mut pinned_seen = false;
    let mut pinned_available = false;
    let mut best_any = None;
    let mut best_pinned = None;
    let mut best_allowed = None;
    let mut best_preferred = None;
    let mut session = None;
    let mut session_preferred = false;

    for c in candidates {
        seen = true;
        let excluded = req.exclude_nodes.iter().any(|n| n == c.node_id);
        let usable = c.available && !excluded;
        if usable {
            any_available = true;
            largest_ctx = largest_ctx.max(c.ctx);
        }
        let pinned = pinning
            && req.pin_node_id.is_none_or(|n| n == c.node_id)
            && req.pin_pool_id.is_none_or(|p| p == c.pool_id);
        if pinned {
            pinned_seen = true;
            pinned_available |= usable;
        }
        if !usable || c.ctx < req.ctx_needed {
            continue;
        }
        keep_best(&mut best_any, c);
        if pinning {
            if pinned {
                keep_best(&mut best_pinned, c);
            }
            continue;
        }
        if req.avoid.iter().any(|e| names(e, &c)) {
            continue;
        }
        keep_best(&mut best_allowed, c);
        let preferred = req.prefer.iter().any(|e| names(e, &c));
        if preferred {
            keep_best(&mut best_preferred, c);
        }
        if req.session == Some((c.node_id, c.pool_id)) {
            session = Some(c);
            session_preferred = preferred;
        }
    }

    let none_eligible = || {
        if !seen {
            NodePlacementError::NoHolder(req.model_id.to_string())
        } else if any_available {
            NodePlacementError::CtxTooSmall {
                model: req.model_id.to_string(),
                needed: req.ctx_needed,
                largest: largest_ctx,
            }
        } else {
            NodePlacementError::NoneAvailable(req.model_id.to_string())
        }
    };

    if pinning {
        if let Some(c) = best_pinned {
            return Ok(decision(c, Reason::Pinned));
        }
        if req.allow_fallback {
            return best_any
                .map(|c| decision(c, Reason::Fallback))
                .ok_or_else(none_eligible);
        }
        let label = match (req.pin_node_id, req.pin_pool_id) {
            (Some(n), Some(p)) => format!("pool {n}/{p}"),
            (Some(n), None) => format!("node {n:?}"),
            (None, Some(p)) => format!("pool {p:?}"),
            (None, None) => unreachable!("pinning needs a node or a pool"),
        };
        return Err(if !pinned_seen {
            NodePlacementError::PinnedUnknown(label)
        } else if pinned_available {
            none_eligible()
        } else {
            NodePlacementError::PinnedUnavailable(label)
        });
    }

    let Some(any) = best_any else {
        return Err(none_eligible());
    };
    let Some(allowed) = best_allowed else {
        return if req.allow_fallback {
            Ok(decision(any, Reason::Fallback))
        } else {
            Err(NodePlacementError::AllAvoided)
        };
    };
    if let Some(p) = best_preferred {
        return Ok(match session {
            Some(s) if session_preferred => decision(s, Reason::SessionAffinity),
            _ => decision(p, Reason::Preferred),
        });
    }
    Ok(match session {
        Some(s) => decision(s, Reason::SessionAffinity),
        None => decision(allowed, Reason::LeastLoaded),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand<'a>(node: &'a str, pool: &'a str, free: i64) -> PoolCandidate<'a> {
        PoolCandidate {
            node_id: node,
            pool_id: pool,
            available: true,
            ctx: 4096,
            free_slots: free,
            vram_free_bytes: 0,
            queue_depth: 0,
        }
    }

    fn req(model: &str) -> NodePlacementRequest<'_> {
        NodePlacementRequest {
            model_id: model,
            ctx_needed: 100,
            ..Default::default()
        }
    }

    fn chosen(r: Result<NodeDecision, NodePlacementError>) -> (String, String, Reason) {
        let d = r.unwrap();
        (d.node_id, d.pool_id, d.reason)
    }

    #[test]
    fn least_loaded_orders_by_slots_then_vram_then_queue_then_id() {
        let r = req("m");
        let a = cand("a", "p", 1);
        let b = cand("b", "p", 3);
        assert_eq!(chosen(place(&r, [a, b])).0, "b");
        let mut a = cand("a", "p", 3);
        a.vram_free_bytes = 10;
        let mut b = cand("b", "p", 3);
        b.vram_free_bytes = 20;
        assert_eq!(chosen(place(&r, [a, b])).0, "b");
        let mut a = cand("a", "p", 3);
        a.queue_depth = 0;
        let mut b = cand("b", "p", 3);
        b.queue_depth = 2;
        assert_eq!(chosen(place(&r, [b, a])).0, "a");
        // Full tie: the smallest id, whatever the input order.
        let (n, p, why) = chosen(place(
            &r,
            [cand("c", "x", 2), cand("b", "y", 2), cand("b", "x", 2)],
        ));
        assert_eq!(
            (n.as_str(), p.as_str(), why),
            ("b", "x", Reason::LeastLoaded)
        );
    }

    #[test]
    fn unavailable_small_and_excluded_pools_are_filtered() {
        let mut off = cand("a", "p", 9);
        off.available = false;
        let mut small = cand("b", "p", 9);
        small.ctx = 50;
        let ok = cand("c", "p", 0);
        let excluded = cand("d", "p", 9);
        let ex = vec!["d".to_string()];
        let r = NodePlacementRequest {
            exclude_nodes: &ex,
            ..req("m")
        };
        assert_eq!(chosen(place(&r, [off, small, ok, excluded])).0, "c");
    }

    #[test]
    fn errors_say_what_is_missing() {
        let r = req("m");
        assert_eq!(place(&r, []), Err(NodePlacementError::NoHolder("m".into())));
        let mut off = cand("a", "p", 1);
        off.available = false;
        assert_eq!(
            place(&r, [off]),
            Err(NodePlacementError::NoneAvailable("m".into()))
        );
        let mut small = cand("a", "p", 1);
        small.ctx = 64;
        assert_eq!(
            place(&r, [small]),
            Err(NodePlacementError::CtxTooSmall {
                model: "m".into(),
                needed: 100,
                largest: 64
            })
        );
        let ex = vec!["a".to_string()];
        let r2 = NodePlacementRequest {
            exclude_nodes: &ex,
            ..req("m")
        };
        assert_eq!(
            place(&r2, [cand("a", "p", 1)]),
            Err(NodePlacementError::NoneAvailable("m".into()))
        );
    }

    #[test]
    fn pin_by_node_pool_or_both() {
        let cs = [cand("a", "p", 5), cand("b", "p", 1), cand("b", "q", 2)];
        let r = NodePlacementRequest {
            mode: Mode::Pin,
            pin_node_id: Some("b"),
            ..req("m")
        };
        assert_eq!(
            chosen(place(&r, cs)),
            ("b".into(), "q".into(), Reason::Pinned)
        );
        let r = NodePlacementRequest {
            mode: Mode::Pin,
            pin_node_id: Some("b"),
            pin_pool_id: Some("p"),
            ..req("m")
        };
        assert_eq!(
            chosen(place(&r, cs)),
            ("b".into(), "p".into(), Reason::Pinned)
        );
        let r = NodePlacementRequest {
            mode: Mode::Pin,
            pin_pool_id: Some("p"),
            ..req("m")
        };
        assert_eq!(chosen(place(&r, cs)).0, "a");
    }

    #[test]
    fn pin_failures_and_fallback() {
        let mut down = cand("b", "p", 5);
        down.available = false;
        let cs = [cand("a", "p", 1), down];
        let pin = |node: &'static str, fallback: bool| NodePlacementRequest {
            mode: Mode::Pin,
            pin_node_id: Some(node),
            allow_fallback: fallback,
            ..req("m")
        };
        assert!(matches!(
            place(&pin("zz", false), cs),
            Err(NodePlacementError::PinnedUnknown(_))
        ));
        assert!(matches!(
            place(&pin("b", false), cs),
            Err(NodePlacementError::PinnedUnavailable(_))
        ));
        assert_eq!(
            chosen(place(&pin("b", true), cs)),
            ("a".into(), "p".into(), Reason::Fallback)
        );
        // Pin mode without a target is plain least-loaded placement.
        let r = NodePlacementRequest {
            mode: Mode::Pin,
            ..req("m")
        };
        assert_eq!(chosen(place(&r, cs)).2, Reason::LeastLoaded);
    }

    #[test]
    fn avoid_and_prefer_match_pool_node_or_both() {
        let cs = [cand("a", "p", 5), cand("b", "p", 1), cand("b", "q", 2)];
        let avoid = vec!["a".to_string()];
        let r = NodePlacementRequest {
            avoid: &avoid,
            ..req("m")
        };
        assert_eq!(
            chosen(place(&r, cs)),
            ("b".into(), "q".into(), Reason::LeastLoaded)
        );
        let avoid = vec!["a".to_string(), "b/q".to_string()];
        let r = NodePlacementRequest {
            avoid: &avoid,
            ..req("m")
        };
        assert_eq!(chosen(place(&r, cs)).1, "p");
        let prefer = vec!["p".to_string()];
        let r = NodePlacementRequest {
            prefer: &prefer,
            mode: Mode::Prefer,
            ..req("m")
        };
        assert_eq!(
            chosen(place(&r, cs)),
            ("a".into(), "p".into(), Reason::Preferred)
        );
        // A preferred pool that is not eligible does not narrow the choice.
        let prefer = vec!["zz".to_string()];
        let r = NodePlacementRequest {
            prefer: &prefer,
            ..req("m")
        };
        assert_eq!(
            chosen(place(&r, cs)),
            ("a".into(), "p".into(), Reason::LeastLoaded)
        );
    }

    #[test]
    fn all_avoided_fails_unless_fallback() {
        let cs = [cand("a", "p", 5)];
        let avoid = vec!["p".to_string()];
        let mut r = NodePlacementRequest {
            avoid: &avoid,
            ..req("m")
        };
        assert_eq!(place(&r, cs), Err(NodePlacementError::AllAvoided));
        r.allow_fallback = true;
        assert_eq!(chosen(place(&r, cs)).2, Reason::Fallback);
    }

    #[test]
    fn session_affinity_wins_within_the_allowed_set() {
        let cs = [cand("a", "p", 5), cand("b", "p", 1)];
        let r = NodePlacementRequest {
            session: Some(("b", "p")),
            ..req("m")
        };
        assert_eq!(
            chosen(place(&r, cs)),
            ("b".into(), "p".into(), Reason::SessionAffinity)
        );
        // Not when the session's pool is avoided or unavailable.
        let avoid = vec!["b".to_string()];
        let r2 = NodePlacementRequest { avoid: &avoid, ..r };
        assert_eq!(chosen(place(&r2, cs)).0, "a");
        let mut down = cand("b", "p", 1);
        down.available = false;
        assert_eq!(chosen(place(&r, [cs[0], down])).0, "a");
        // Preference narrows first: the session wins only if preferred too.
        let prefer = vec!["a".to_string()];
        let r3 = NodePlacementRequest {
            prefer: &prefer,
            ..r
        };
        assert_eq!(
            chosen(place(&r3, cs)),
            ("a".into(), "p".into(), Reason::Preferred)
        );
        let prefer = vec!["p".to_string()];
        let r4 = NodePlacementRequest {
            prefer: &prefer,
            ..r
        };
        assert_eq!(chosen(place(&r4, cs)).2, Reason::SessionAffinity);
    }
}
