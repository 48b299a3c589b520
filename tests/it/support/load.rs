//! A steady stream of webhook requests through an outage, and the one check that matters after
//! it: every request that was acknowledged (2xx) is stored at the destination.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use reqwest::StatusCode;
use tokio::task::JoinHandle;

use super::wait_until;

/// Senders posting distinct bodies to one webhook URL.
pub struct Load {
    next: Arc<AtomicUsize>,
    acknowledged: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    stored: Arc<AtomicUsize>,
    senders: Vec<JoinHandle<Vec<Sent>>>,
}

/// One request: its body, and its status with how long the answer took (`None`: the router
/// could not be reached, e.g. while it restarts).
type Sent = (String, Option<(StatusCode, Duration)>);

/// What the senders saw.
pub struct Outcome {
    /// Answered requests.
    pub sent: HashMap<String, StatusCode>,
    /// Requests that found no router listening.
    pub unreachable: usize,
    /// The slowest answer.
    pub slowest: Duration,
}

impl Load {
    /// Starts `senders` tasks that together POST `total` bodies (`body(seq)`, all distinct) to
    /// `url`, 2 ms apart per sender. Any answer other than 2xx or 503 fails the test.
    pub fn start(url: String, total: usize, senders: usize, body: fn(usize) -> String) -> Self {
        Self::start_with(url, total, senders, body, false)
    }

    /// As [`Load::start`]; with `through_restarts`, a request that finds no router listening
    /// (it is being restarted) is counted as unreachable instead of failing the test.
    pub fn start_with(
        url: String,
        total: usize,
        senders: usize,
        body: fn(usize) -> String,
        through_restarts: bool,
    ) -> Self {
        let next = Arc::new(AtomicUsize::new(0));
        let acknowledged = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let stored = Arc::new(AtomicUsize::new(0));
        let client = reqwest::Client::new();
        let senders = (0..senders)
            .map(|_| {
                let (next, acknowledged, refused, stored) = (
                    Arc::clone(&next),
                    Arc::clone(&acknowledged),
                    Arc::clone(&refused),
                    Arc::clone(&stored),
                );
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move {
                    let mut outcomes = Vec::new();
                    loop {
                        let seq = next.fetch_add(1, Ordering::SeqCst);
                        if seq >= total.min(usize::MAX / 2) {
                            return outcomes;
                        }
                        let body = body(seq);
                        let started = std::time::Instant::now();
                        let sent = client
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send()
                            .await;
                        let status = match sent {
                            Ok(response) => response.status(),
                            Err(error) if through_restarts => {
                                let _ = error;
                                outcomes.push((body, None));
                                tokio::time::sleep(Duration::from_millis(20)).await;
                                continue;
                            }
                            Err(error) => panic!("the router does not answer: {error}"),
                        };
                        match status {
                            StatusCode::ACCEPTED => {
                                stored.fetch_add(1, Ordering::SeqCst);
                                acknowledged.fetch_add(1, Ordering::SeqCst)
                            }
                            s if s.is_success() => acknowledged.fetch_add(1, Ordering::SeqCst),
                            StatusCode::SERVICE_UNAVAILABLE => {
                                refused.fetch_add(1, Ordering::SeqCst)
                            }
                            other => panic!("unexpected status {other}"),
                        };
                        outcomes.push((body, Some((status, started.elapsed()))));
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
            })
            .collect();
        Self {
            next,
            acknowledged,
            refused,
            stored,
            senders,
        }
    }

    /// Stops sending: each sender ends after its current request.
    pub fn stop(&self) {
        // Far past any total, and far from wrapping around.
        self.next.store(usize::MAX / 2, Ordering::SeqCst);
    }

    /// Requests answered 202 (in the spool) so far.
    pub fn stored(&self) -> usize {
        self.stored.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests were answered 202 (stored in the spool).
    pub async fn wait_stored(&self, n: usize) {
        wait_until(Duration::from_secs(30), &format!("{n} stored"), || async {
            self.stored.load(Ordering::SeqCst) >= n
        })
        .await;
    }

    /// Waits until at least `n` requests were acknowledged.
    pub async fn wait_acknowledged(&self, n: usize) {
        wait_until(
            Duration::from_secs(30),
            &format!("{n} acknowledged"),
            || async { self.acknowledged.load(Ordering::SeqCst) >= n },
        )
        .await;
    }

    /// Waits until at least `n` requests were refused with 503 (the outage is visible).
    pub async fn wait_refused(&self, n: usize) {
        wait_until(Duration::from_secs(30), &format!("{n} refused"), || async {
            self.refused.load(Ordering::SeqCst) >= n
        })
        .await;
    }

    /// Waits for every sender to finish.
    pub async fn finish(self) -> Outcome {
        let mut outcome = Outcome {
            sent: HashMap::new(),
            unreachable: 0,
            slowest: Duration::ZERO,
        };
        for sender in self.senders {
            for (body, answer) in sender.await.expect("sender task") {
                match answer {
                    Some((status, took)) => {
                        outcome.slowest = outcome.slowest.max(took);
                        outcome.sent.insert(body, status);
                    }
                    None => outcome.unreachable += 1,
                }
            }
        }
        outcome
    }
}

impl Outcome {
    /// Bodies that got a 2xx.
    pub fn acknowledged(&self) -> Vec<&String> {
        self.sent
            .iter()
            .filter(|(_, s)| s.is_success())
            .map(|(b, _)| b)
            .collect()
    }

    pub fn refused(&self) -> usize {
        self.sent.len() - self.acknowledged().len()
    }

    /// How many answers had `status`.
    pub fn count(&self, status: StatusCode) -> usize {
        self.sent.values().filter(|s| **s == status).count()
    }

    /// Fails unless every acknowledged body is in `stored`; prints the tally as `what`.
    pub fn assert_all_acknowledged_are_stored(&self, stored: &[String], what: &str) {
        let acknowledged = self.acknowledged();
        for body in &acknowledged {
            assert!(
                stored.contains(body),
                "{what}: acknowledged but missing: {body}"
            );
        }
        eprintln!(
            "{what}: {} acknowledged (all stored), {} refused with 503, {} stored",
            acknowledged.len(),
            self.refused(),
            stored.len()
        );
    }
}
