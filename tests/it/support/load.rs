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
    acknowledged: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    senders: Vec<JoinHandle<Vec<(String, StatusCode)>>>,
}

/// What the senders saw.
pub struct Outcome {
    pub sent: HashMap<String, StatusCode>,
}

impl Load {
    /// Starts `senders` tasks that together POST `total` bodies (`body(seq)`, all distinct) to
    /// `url`, 2 ms apart per sender. Any answer other than 2xx or 503 fails the test.
    pub fn start(url: String, total: usize, senders: usize, body: fn(usize) -> String) -> Self {
        let next = Arc::new(AtomicUsize::new(0));
        let acknowledged = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let client = reqwest::Client::new();
        let senders = (0..senders)
            .map(|_| {
                let (next, acknowledged, refused) = (
                    Arc::clone(&next),
                    Arc::clone(&acknowledged),
                    Arc::clone(&refused),
                );
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move {
                    let mut outcomes = Vec::new();
                    loop {
                        let seq = next.fetch_add(1, Ordering::SeqCst);
                        if seq >= total {
                            return outcomes;
                        }
                        let body = body(seq);
                        let status = client
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send()
                            .await
                            .expect("the router answers")
                            .status();
                        match status {
                            s if s.is_success() => acknowledged.fetch_add(1, Ordering::SeqCst),
                            StatusCode::SERVICE_UNAVAILABLE => {
                                refused.fetch_add(1, Ordering::SeqCst)
                            }
                            other => panic!("unexpected status {other}"),
                        };
                        outcomes.push((body, status));
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
            })
            .collect();
        Self {
            acknowledged,
            refused,
            senders,
        }
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
        let mut sent = HashMap::new();
        for sender in self.senders {
            sent.extend(sender.await.expect("sender task"));
        }
        Outcome { sent }
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
