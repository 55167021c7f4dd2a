//! Sessions: a client-chosen id that keeps a conversation on the pool that
//! holds its KV cache. Each session lives `ttl` after its last turn and
//! allows at most `max_turns` turns; the number of sessions is bounded (the
//! least recently used one goes first).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A session as clients see it.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionView {
    pub session_id: String,
    /// The pool its last turn ran on.
    pub pool_id: Option<String>,
    pub turns: u32,
    pub max_turns: u32,
    /// Milliseconds until it expires unless used again.
    pub ttl_remaining_ms: u64,
    /// Whether the last turn reused KV cache from an earlier one.
    pub kv_warmth: bool,
    /// Prompt tokens the last turn reused.
    pub reused_tokens: usize,
    pub last_task_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error(
        "session {id:?} has used all {max} of its turns; start a new session (or DELETE this one)"
    )]
    TurnsExhausted { id: String, max: u32 },
}

#[derive(Debug, Clone)]
struct Session {
    pool_id: Option<String>,
    turns: u32,
    kv_warmth: bool,
    reused_tokens: usize,
    last_task_id: Option<String>,
    last_used: Instant,
}

pub struct SessionStore {
    ttl: Duration,
    max_turns: u32,
    max_sessions: usize,
    map: Mutex<HashMap<String, Session>>,
}

impl SessionStore {
    pub fn new(ttl: Duration, max_turns: u32, max_sessions: usize) -> SessionStore {
        SessionStore {
            ttl,
            max_turns: max_turns.max(1),
            max_sessions: max_sessions.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn live(&self, s: &Session, now: Instant) -> bool {
        now.saturating_duration_since(s.last_used) < self.ttl
    }

    /// The pool a new turn should prefer, or an error when the session has
    /// no turns left. Does not count the turn: call [`Self::commit_turn`]
    /// once the task is admitted.
    pub fn affinity(&self, id: &str, now: Instant) -> Result<Option<String>, SessionError> {
        let map = self.lock();
        match map.get(id).filter(|s| self.live(s, now)) {
            Some(s) if s.turns >= self.max_turns => Err(SessionError::TurnsExhausted {
                id: id.to_string(),
                max: self.max_turns,
            }),
            Some(s) => Ok(s.pool_id.clone()),
            None => Ok(None),
        }
    }

    /// Count an admitted turn (creating the session on its first), placed
    /// on `pool_id`.
    pub fn commit_turn(
        &self,
        id: &str,
        pool_id: &str,
        task_id: &str,
        now: Instant,
    ) -> Result<u32, SessionError> {
        let mut map = self.lock();
        let expired = map.get(id).is_some_and(|s| !self.live(s, now));
        if expired {
            map.remove(id);
        }
        if !map.contains_key(id) && map.len() >= self.max_sessions {
            self.evict_lru(&mut map, now);
        }
        let s = map.entry(id.to_string()).or_insert_with(|| Session {
            pool_id: None,
            turns: 0,
            kv_warmth: false,
            reused_tokens: 0,
            last_task_id: None,
            last_used: now,
        });
        if s.turns >= self.max_turns {
            return Err(SessionError::TurnsExhausted {
                id: id.to_string(),
                max: self.max_turns,
            });
        }
        s.turns += 1;
        s.pool_id = Some(pool_id.to_string());
        s.last_task_id = Some(task_id.to_string());
        s.last_used = now;
        Ok(s.turns)
    }

    /// Undo [`Self::commit_turn`] for a task that was then refused.
    pub fn rollback_turn(&self, id: &str) {
        let mut map = self.lock();
        if let Some(s) = map.get_mut(id) {
            s.turns = s.turns.saturating_sub(1);
            if s.turns == 0 {
                map.remove(id);
            }
        }
    }

    /// A turn started on its pool: record whether it found its KV cache warm.
    pub fn record_start(&self, id: &str, pool_id: &str, reused_tokens: usize, now: Instant) {
        if let Some(s) = self.lock().get_mut(id) {
            s.pool_id = Some(pool_id.to_string());
            s.kv_warmth = reused_tokens > 0;
            s.reused_tokens = reused_tokens;
            s.last_used = now;
        }
    }

    /// A turn ended: the TTL counts from here.
    pub fn touch(&self, id: &str, now: Instant) {
        if let Some(s) = self.lock().get_mut(id) {
            s.last_used = now;
        }
    }

    pub fn get(&self, id: &str, now: Instant) -> Option<SessionView> {
        let map = self.lock();
        let s = map.get(id).filter(|s| self.live(s, now))?;
        let left = self
            .ttl
            .saturating_sub(now.saturating_duration_since(s.last_used));
        Some(SessionView {
            session_id: id.to_string(),
            pool_id: s.pool_id.clone(),
            turns: s.turns,
            max_turns: self.max_turns,
            ttl_remaining_ms: left.as_millis() as u64,
            kv_warmth: s.kv_warmth,
            reused_tokens: s.reused_tokens,
            last_task_id: s.last_task_id.clone(),
        })
    }

    /// Forget a session; true if it existed (and had not expired).
    pub fn remove(&self, id: &str, now: Instant) -> bool {
        let mut map = self.lock();
        match map.remove(id) {
            Some(s) => self.live(&s, now),
            None => false,
        }
    }

    /// Drop expired sessions; returns how many.
    pub fn sweep(&self, now: Instant) -> usize {
        let mut map = self.lock();
        let before = map.len();
        map.retain(|_, s| now.saturating_duration_since(s.last_used) < self.ttl);
        before - map.len()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn evict_lru(&self, map: &mut HashMap<String, Session>, now: Instant) {
        map.retain(|_, s| self.live(s, now));
        if map.len() >= self.max_sessions {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> SessionStore {
        SessionStore::new(Duration::from_secs(600), 3, 100)
    }

    #[tokio::test(start_paused = true)]
    async fn affinity_follows_the_last_pool() {
        let s = store();
        let now = Instant::now();
        assert_eq!(s.affinity("c1", now).unwrap(), None);
        assert_eq!(s.commit_turn("c1", "p0", "t1", now).unwrap(), 1);
        assert_eq!(s.affinity("c1", now).unwrap().as_deref(), Some("p0"));
        s.record_start("c1", "p1", 0, now);
        assert_eq!(s.affinity("c1", now).unwrap().as_deref(), Some("p1"));
        let v = s.get("c1", now).unwrap();
        assert!(!v.kv_warmth);
        assert_eq!(v.turns, 1);
        assert_eq!(v.last_task_id.as_deref(), Some("t1"));
        s.commit_turn("c1", "p1", "t2", now).unwrap();
        s.record_start("c1", "p1", 42, now);
        let v = s.get("c1", now).unwrap();
        assert!(v.kv_warmth);
        assert_eq!(v.reused_tokens, 42);
        assert_eq!(v.turns, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_expires_and_refreshes() {
        let s = store();
        s.commit_turn("c", "p0", "t1", Instant::now()).unwrap();
        tokio::time::advance(Duration::from_secs(599)).await;
        let v = s.get("c", Instant::now()).unwrap();
        assert_eq!(v.ttl_remaining_ms, 1000);
        s.touch("c", Instant::now());
        tokio::time::advance(Duration::from_secs(599)).await;
        assert!(s.get("c", Instant::now()).is_some());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(s.get("c", Instant::now()).is_none());
        assert_eq!(s.affinity("c", Instant::now()).unwrap(), None);
        assert_eq!(s.sweep(Instant::now()), 1);
        assert!(s.is_empty());
        // An expired session starts over with fresh turns.
        assert_eq!(s.commit_turn("c", "p0", "t9", Instant::now()).unwrap(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn turns_are_bounded() {
        let s = store();
        let now = Instant::now();
        for t in 1..=3 {
            assert_eq!(s.commit_turn("c", "p0", "t", now).unwrap(), t);
        }
        assert!(matches!(
            s.affinity("c", now),
            Err(SessionError::TurnsExhausted { max: 3, .. })
        ));
        assert!(s.commit_turn("c", "p0", "t", now).is_err());
        s.rollback_turn("c");
        assert_eq!(s.get("c", now).unwrap().turns, 2);
        assert!(s.remove("c", now));
        assert!(!s.remove("c", now));
        assert_eq!(s.commit_turn("c", "p0", "t", now).unwrap(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn session_count_is_bounded_lru_first() {
        let s = SessionStore::new(Duration::from_secs(600), 8, 2);
        s.commit_turn("a", "p", "t", Instant::now()).unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        s.commit_turn("b", "p", "t", Instant::now()).unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        s.touch("a", Instant::now());
        s.commit_turn("c", "p", "t", Instant::now()).unwrap();
        assert_eq!(s.len(), 2);
        assert!(s.get("b", Instant::now()).is_none());
        assert!(s.get("a", Instant::now()).is_some());
    }
}
