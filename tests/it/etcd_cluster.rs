//! The etcd link against a real 3-member etcd cluster, through the faults production sees: a
//! member killed, the leader killed, a member frozen, a member cut off from its peers while the
//! router still reaches it, every member down and back, and compaction while the router was away.
//!
//! Each test asserts the same three things: the known webhooks are served throughout (every
//! answer 200), a change made on a healthy member is routable within 10 s, and the router
//! converges exactly (its webhooks are the keys in etcd, its revision is the cluster's).

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use reqwest::StatusCode;
use tokio::{task::JoinHandle, time::Instant};

use crate::{
    support::{app::etcd_settings, cluster::EtcdCluster, wait_until, Freeze, TestApp},
    unique,
};

const LOG: &str = r#"{"module":"log"}"#;
/// Webhooks that must answer 200 through every fault.
const KNOWN: usize = 10;
/// A change made on a healthy member is routable within this.
const CHANGE_WITHIN: Duration = Duration::from_secs(10);
const CONVERGE_WITHIN: Duration = Duration::from_secs(30);

/// Which member the router starts on.
#[derive(Clone, Copy)]
enum Start {
    Leader,
    Follower,
}

struct Fixture {
    cluster: EtcdCluster,
    app: TestApp,
    prefix: String,
    /// The member the router uses at the start.
    used: usize,
    serving: Serving,
}

impl Fixture {
    /// A cluster with the known webhooks and one to delete later, and a router started on the
    /// member `start` asks for, already serving under load.
    async fn start(start: Start) -> Self {
        let cluster = EtcdCluster::start(3).await;
        let leader = cluster.leader().await;
        let used = match start {
            Start::Leader => leader,
            Start::Follower => (leader + 1) % 3,
        };
        let prefix = format!("/{}/", unique!("cluster"));
        for i in 0..KNOWN {
            cluster
                .put(leader, &format!("{prefix}acme/webhooks/known{i}"), LOG)
                .await;
        }
        cluster
            .put(leader, &format!("{prefix}acme/webhooks/doomed"), LOG)
            .await;
        // The router tries its endpoints in order: `used` first, which must answer at once (a
        // member that has just joined may not have caught up yet).
        wait_until(
            CONVERGE_WITHIN,
            "the first member to list the keys",
            || async {
                cluster
                    .try_keys(used, &prefix)
                    .await
                    .is_ok_and(|(keys, _)| keys.len() == KNOWN + 1)
            },
        )
        .await;
        let order: Vec<usize> = (0..3).map(|k| (used + k) % 3).collect();
        let app = TestApp::spawn_ready(etcd_settings(&cluster.endpoints(&order), &prefix)).await;
        app.wait_etcd_state("healthy", CONVERGE_WITHIN).await;
        let fixture = Self {
            serving: Serving::start(app.base(), KNOWN),
            cluster,
            app,
            prefix,
            used,
        };
        if fixture.member_in_use().await != Some(used) {
            let status = crate::support::get_json(&fixture.app.base(), "/status").await;
            panic!(
                "the router left member {used} at once: {}",
                status["etcd_link"]
            );
        }
        fixture
    }

    /// The member the router says it uses (`/health`).
    async fn member_in_use(&self) -> Option<usize> {
        let (_, health) = self.app.health().await;
        health["etcd"]["endpoint"]
            .as_str()
            .map(|e| self.cluster.member_of(e))
    }

    fn key(&self, id: &str) -> String {
        format!("{}acme/webhooks/{id}", self.prefix)
    }

    /// Puts a new webhook through member `via` and waits until the router routes it; returns
    /// how long that took.
    async fn change_is_routable(&self, via: usize, id: &str) -> Duration {
        let made = Instant::now();
        self.cluster.put(via, &self.key(id), LOG).await;
        let path = format!("acme/{id}");
        wait_until(
            CHANGE_WITHIN,
            &format!("{id}, put on member {via}, routable"),
            || async { self.app.status_of(&path).await == StatusCode::OK },
        )
        .await;
        let took = made.elapsed();
        eprintln!("{id} routable {} ms after it was put", took.as_millis());
        took
    }

    /// Deletes the doomed webhook and adds one more through `via`, then waits until the router
    /// holds exactly the keys in etcd at the cluster's revision; stops the load and checks it.
    async fn converges(self, via: usize) {
        self.cluster.delete(via, &self.key("doomed")).await;
        self.cluster.put(via, &self.key("last"), LOG).await;
        let (keys, revision) = self.cluster.keys(via, &self.prefix).await;
        wait_until(
            CONVERGE_WITHIN,
            "the router at the cluster's revision",
            || async { self.app.health().await.1["config"]["revision"] == revision },
        )
        .await;
        let (_, health) = self.app.health().await;
        assert_eq!(health["config"]["webhooks"], keys.len(), "{health}");
        assert_eq!(health["components"]["etcd"], "healthy");
        assert_eq!(health["etcd"]["has_leader"], true, "{health}");
        assert_eq!(health["etcd"]["revision_lag"], 0, "{health}");
        for key in &keys {
            let id = key.rsplit('/').next().unwrap();
            assert_eq!(
                self.app.status_of(&format!("acme/{id}")).await,
                StatusCode::OK,
                "{key}"
            );
        }
        assert_eq!(
            self.app.status_of("acme/doomed").await,
            StatusCode::NOT_FOUND
        );
        self.serving.finish().await;
    }
}

/// POSTs to the known webhooks in turn, a few hundred a second, until stopped; every answer must
/// be 200.
struct Serving {
    stop: Arc<AtomicBool>,
    task: JoinHandle<(usize, Vec<String>)>,
}

impl Serving {
    fn start(base: String, known: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = Arc::clone(&stop);
            async move {
                let client = reqwest::Client::new();
                let (mut sent, mut wrong) = (0usize, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let url = format!("{base}/webhook/acme/known{}", sent % known);
                    let answer = client
                        .post(&url)
                        .json(&serde_json::json!({"n": sent}))
                        .send()
                        .await;
                    sent += 1;
                    match answer {
                        Ok(r) if r.status() == StatusCode::OK => {}
                        Ok(r) => wrong.push(format!("{url}: {}", r.status())),
                        Err(e) => wrong.push(format!("{url}: {e}")),
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (sent, wrong)
            }
        });
        Self { stop, task }
    }

    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let (sent, wrong) = self.task.await.unwrap();
        eprintln!("{sent} requests to known webhooks during the test");
        assert!(sent > 10, "the load ran ({sent} requests)");
        assert!(
            wrong.is_empty(),
            "{} of {sent} not 200: {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
    }
}

#[tokio::test]
async fn a_killed_member_is_left_for_another() {
    let mut fx = Fixture::start(Start::Follower).await;
    let leader = fx.cluster.leader().await;
    fx.cluster.kill(fx.used);
    fx.change_is_routable(leader, "after-kill").await;
    assert_ne!(fx.member_in_use().await, Some(fx.used));

    fx.cluster.restart(fx.used).await;
    fx.converges(leader).await;
}

#[tokio::test]
async fn a_killed_leader_is_left_for_the_new_one() {
    let mut fx = Fixture::start(Start::Leader).await;
    fx.cluster.kill(fx.used);
    // The two others elect a new leader; a write needs it.
    let leader = fx.cluster.leader().await;
    assert_ne!(leader, fx.used);
    fx.change_is_routable(leader, "after-leader-kill").await;
    assert_ne!(fx.member_in_use().await, Some(fx.used));

    fx.cluster.restart(fx.used).await;
    fx.converges(leader).await;
}

#[tokio::test]
async fn a_frozen_member_is_left_within_seconds() {
    let fx = Fixture::start(Start::Follower).await;
    let leader = fx.cluster.leader().await;
    fx.cluster.members[fx.used].etcd.pause();
    fx.change_is_routable(leader, "after-freeze").await;
    assert_ne!(fx.member_in_use().await, Some(fx.used));

    fx.cluster.members[fx.used].etcd.resume();
    fx.converges(leader).await;
}

#[tokio::test]
async fn a_member_cut_off_from_its_peers_is_left_although_it_still_answers() {
    let fx = Fixture::start(Start::Follower).await;
    let leader = fx.cluster.leader().await;
    fx.cluster.partition(fx.used);
    fx.change_is_routable(leader, "after-partition").await;
    assert_ne!(fx.member_in_use().await, Some(fx.used));
    let status = crate::support::get_json(&fx.app.base(), "/status").await;
    let failures = status["etcd_link"]["member"]["failures"].to_string();
    assert!(failures.contains("no leader"), "{failures}");

    fx.cluster.heal();
    let leader = fx.cluster.leader().await;
    fx.converges(leader).await;
}

#[tokio::test]
async fn every_member_down_and_back_is_caught_up_without_waiting_out_the_backoff() {
    let mut fx = Fixture::start(Start::Follower).await;
    fx.cluster.kill_all();
    fx.app
        .wait_etcd_state("disconnected", CONVERGE_WITHIN)
        .await;
    // Let the backoff grow past a few steps (1, 2, 4, 8 s ...).
    wait_until(CONVERGE_WITHIN, "four reconnect attempts", || async {
        fx.app.stats().reconnects.load(Ordering::Relaxed) >= 4
    })
    .await;

    fx.cluster.restart_stopped().await;
    let back = Instant::now();
    let leader = fx.cluster.leader().await;
    fx.change_is_routable(leader, "after-outage").await;
    eprintln!(
        "caught up {} ms after the cluster answered",
        back.elapsed().as_millis()
    );
    fx.converges(leader).await;
}

#[tokio::test]
async fn compaction_while_the_router_was_away_is_a_full_reload_with_removals() {
    let fx = Fixture::start(Start::Follower).await;
    let leader = fx.cluster.leader().await;
    for m in &fx.cluster.members {
        m.link.block();
    }
    fx.app
        .wait_etcd_state("disconnected", CONVERGE_WITHIN)
        .await;
    fx.cluster.delete(leader, &fx.key("doomed")).await;
    fx.cluster.put(leader, &fx.key("while-away"), LOG).await;
    fx.cluster.members[leader].etcd.compact().await;
    for m in &fx.cluster.members {
        m.link.unblock();
    }
    fx.change_is_routable(leader, "after-compaction").await;
    assert_eq!(fx.app.status_of("acme/while-away").await, StatusCode::OK);
    assert_eq!(fx.app.stats().full_loads.load(Ordering::Relaxed), 2);
    fx.converges(leader).await;
}
