//! Which etcd member the router talks to: one endpoint per session, the next attempt after a
//! failure goes elsewhere, and a cheap status probe finds a member with a leader while the link
//! is down.
//!
//! The router watches through one member at a time (not a balanced channel), so it knows which
//! member it depends on, can leave one that is dead or has lost its leader, and can say so.

use std::{
    sync::{
        atomic::{AtomicI64, Ordering},
        Mutex,
    },
    time::{Duration, SystemTime},
};

use tokio::{task::JoinSet, time::Instant};

use super::client::EtcdLink;

/// One probe (connect + status) waits this long for a member.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Probe rounds while disconnected start this far apart (jittered down by up to half): a
/// recovered cluster is found within 2 s, and N disconnected instances send at most
/// N x endpoints probes per second.
const PROBE_EVERY: Duration = Duration::from_secs(2);

/// The endpoints of `ETCD_ENDPOINTS` with what the last attempt on each taught us.
#[derive(Debug)]
pub struct Members {
    urls: Vec<String>,
    /// When each endpoint last failed, as a count of failures so far (`None`: not yet).
    failed_at: Vec<Option<u64>>,
    failures: u64,
    /// Where the rotation starts: after the endpoint used last.
    next: usize,
}

impl Members {
    pub fn new(urls: Vec<String>) -> Self {
        let failed_at = vec![None; urls.len()];
        Self {
            urls,
            failed_at,
            failures: 0,
            next: 0,
        }
    }

    pub fn url(&self, index: usize) -> &str {
        &self.urls[index]
    }

    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The endpoint to try next: `preferred` (a probe just found it with a leader) when given;
    /// otherwise one that has not failed, else the one whose failure is oldest, in rotation order.
    pub fn pick(&mut self, preferred: Option<usize>) -> usize {
        let n = self.urls.len();
        let chosen = preferred.filter(|&i| i < n).unwrap_or_else(|| {
            (0..n)
                .map(|k| (self.next + k) % n)
                .min_by_key(|&i| self.failed_at[i])
                .unwrap_or(0)
        });
        self.next = (chosen + 1) % n.max(1);
        chosen
    }

    /// The attempt on `index` failed (dead, frozen, leaderless, or refused).
    pub fn failed(&mut self, index: usize) {
        self.failures += 1;
        if let Some(at) = self.failed_at.get_mut(index) {
            *at = Some(self.failures);
        }
    }
}

/// What `/health`, `/status` and `/metrics` show about the link (etcd backend).
#[derive(Debug, Default)]
pub struct LinkState {
    member: Mutex<MemberView>,
    /// The newest cluster revision any answer from etcd carried (watch, read, status, probe).
    newest_revision: AtomicI64,
}

/// The member in use and what it said about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemberView {
    /// The endpoint in use, or being tried.
    pub endpoint: Option<String>,
    /// The member's id (hex, as `etcdctl member list` prints it).
    pub member_id: Option<String>,
    /// Whether that member has a leader (watches and reads require one).
    pub has_leader: bool,
    /// The leader that member follows (hex).
    pub leader_id: Option<String>,
    /// The last failure per endpoint: `(endpoint, when, why)`.
    pub failures: Vec<EndpointFailure>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EndpointFailure {
    pub endpoint: String,
    /// RFC 3339.
    pub at: String,
    pub error: String,
}

impl LinkState {
    pub fn member(&self) -> MemberView {
        self.member.lock().map(|m| m.clone()).unwrap_or_default()
    }

    pub fn newest_revision(&self) -> i64 {
        self.newest_revision.load(Ordering::Relaxed)
    }

    /// How far `applied` is behind the newest revision seen (0 when unknown or ahead).
    pub fn lag(&self, applied: i64) -> i64 {
        (self.newest_revision() - applied).max(0)
    }

    /// Records a revision from any etcd answer.
    pub fn saw_revision(&self, revision: i64) {
        self.newest_revision.fetch_max(revision, Ordering::Relaxed);
    }

    fn update(&self, change: impl FnOnce(&mut MemberView)) {
        if let Ok(mut member) = self.member.lock() {
            change(&mut member);
        }
    }

    /// A session starts on `endpoint`.
    pub fn using(&self, endpoint: &str) {
        self.update(|m| {
            m.endpoint = Some(endpoint.to_owned());
            m.member_id = None;
            m.leader_id = None;
            m.has_leader = false;
        });
    }

    /// The member in use answered its status.
    pub fn status(&self, member_id: u64, leader: u64) {
        self.update(|m| {
            m.member_id = Some(format!("{member_id:x}"));
            m.has_leader = leader != 0;
            m.leader_id = (leader != 0).then(|| format!("{leader:x}"));
        });
    }

    /// The session on `endpoint` ended with `error`.
    pub fn failed(&self, endpoint: &str, error: &str) {
        let at = crate::modules::rfc3339(SystemTime::now());
        self.update(|m| {
            m.has_leader = false;
            m.failures.retain(|f| f.endpoint != endpoint);
            m.failures.push(EndpointFailure {
                endpoint: endpoint.to_owned(),
                at,
                error: error.to_owned(),
            });
        });
    }
}

/// Asks every endpoint for its status at once, each bounded by [`PROBE_TIMEOUT`], and returns the
/// first that answers with a leader. `None` when none does.
async fn probe_once(link: &EtcdLink, urls: &[String], state: &LinkState) -> Option<usize> {
    let mut probes = JoinSet::new();
    for (index, url) in urls.iter().enumerate() {
        let (link, url) = (link.clone(), url.clone());
        probes.spawn(async move {
            let status = tokio::time::timeout(PROBE_TIMEOUT, link.probe(&url)).await;
            (index, status)
        });
    }
    // Dropping the set aborts the probes still waiting.
    while let Some(done) = probes.join_next().await {
        let Ok((index, Ok(Ok(status)))) = done else {
            continue;
        };
        if let Some(header) = status.header() {
            state.saw_revision(header.revision());
        }
        if status.leader() != 0 {
            return Some(index);
        }
    }
    None
}

/// Probes in rounds until a member answers with a leader; returns its index. Never returns
/// otherwise: race it against the backoff wait.
pub async fn probe_until_leader(link: &EtcdLink, urls: &[String], state: &LinkState) -> usize {
    let mut rng = fastrand::Rng::new();
    loop {
        let round = Instant::now();
        if let Some(found) = probe_once(link, urls, state).await {
            return found;
        }
        let pause = PROBE_EVERY.mul_f64(1.0 - 0.5 * rng.f64());
        tokio::time::sleep_until(round + pause).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Members {
        Members::new((0..n).map(|i| format!("http://m{i}")).collect())
    }

    #[test]
    fn rotation_goes_round_without_failures() {
        let mut m = members(3);
        assert_eq!(
            [m.pick(None), m.pick(None), m.pick(None), m.pick(None)],
            [0, 1, 2, 0]
        );
    }

    #[test]
    fn after_a_failure_the_next_attempt_goes_elsewhere_and_the_oldest_failure_is_retried_first() {
        let mut m = members(3);
        let first = m.pick(None);
        m.failed(first);
        let second = m.pick(None);
        assert_ne!(second, first);
        m.failed(second);
        let third = m.pick(None);
        assert!(third != first && third != second, "the one never failed");
        m.failed(third);
        assert_eq!(m.pick(None), first, "every one failed: the oldest failure");
        m.failed(first);
        assert_eq!(m.pick(None), second);
    }

    #[test]
    fn a_probed_member_is_taken_when_given() {
        let mut m = members(3);
        assert_eq!(m.pick(Some(2)), 2);
        assert_eq!(m.pick(Some(7)), 0, "out of range falls back to rotation");
    }

    #[test]
    fn lag_is_the_distance_to_the_newest_revision_seen() {
        let state = LinkState::default();
        state.saw_revision(10);
        state.saw_revision(7);
        assert_eq!(state.newest_revision(), 10);
        assert_eq!(state.lag(4), 6);
        assert_eq!(state.lag(12), 0);
    }

    #[test]
    fn failures_are_kept_once_per_endpoint() {
        let state = LinkState::default();
        state.using("http://a");
        state.status(0xab, 0xcd);
        assert!(state.member().has_leader);
        state.failed("http://a", "one");
        state.failed("http://b", "two");
        state.failed("http://a", "three");
        let view = state.member();
        assert!(!view.has_leader);
        assert_eq!(view.failures.len(), 2);
        assert_eq!(view.failures[1].error, "three");
    }
}
