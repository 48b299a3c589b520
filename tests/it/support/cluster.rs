//! A real 3-member etcd cluster on free loopback ports, with the faults production sees: a member
//! killed, frozen (SIGSTOP), or cut off from its peers while its clients still reach it.
//!
//! Peers reach each other through [`PeerProxy`]s (to partition a member); the router reaches each
//! member through its own [`Proxy`] (its endpoint list), while the test talks to members directly.

use std::time::Duration;

use etcd_client::{Client, GetOptions};

use super::{
    etcd::{Etcd, EtcdOptions, Membership},
    peer_proxy::PeerProxy,
    ports::free_port,
    Freeze, Proxy,
};

pub struct Member {
    pub etcd: Etcd,
    /// What the other members dial to reach this one.
    pub peer: PeerProxy,
    /// What the router dials to reach this one.
    pub link: Proxy,
    /// The member id in hex, as etcd writes it.
    pub id: String,
}

pub struct EtcdCluster {
    pub members: Vec<Member>,
}

impl EtcdCluster {
    /// Starts `n` members and waits until every one of them answers with a leader.
    pub async fn start(n: usize) -> Self {
        let peer_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut proxies = Vec::new();
        for port in &peer_ports {
            proxies.push(PeerProxy::start(*port).await);
        }
        let names: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
        let initial_cluster = names
            .iter()
            .zip(&proxies)
            .map(|(name, proxy)| format!("{name}={}", proxy.endpoint()))
            .collect::<Vec<_>>()
            .join(",");
        let token = crate::unique!("cluster");
        let mut members = Vec::new();
        for ((name, peer), port) in names.into_iter().zip(proxies).zip(peer_ports) {
            let membership = Membership {
                name,
                advertise_peer: peer.endpoint(),
                initial_cluster: initial_cluster.clone(),
                token: token.clone(),
            };
            let mut etcd = Etcd::unstarted(port, membership, EtcdOptions::default());
            etcd.launch();
            let link = Proxy::start(etcd.client_port).await;
            members.push(Member {
                etcd,
                peer,
                link,
                id: String::new(),
            });
        }
        for m in &members {
            m.etcd.wait_answering().await;
        }
        let mut cluster = Self { members };
        let list = cluster.client(0).await.member_list().await.unwrap();
        for listed in list.members() {
            let index = cluster
                .members
                .iter()
                .position(|m| m.etcd.endpoint() == listed.client_urls()[0])
                .expect("a member of this cluster");
            cluster.members[index].id = format!("{:x}", listed.id());
        }
        cluster
    }

    /// A direct client to member `i`.
    pub async fn client(&self, i: usize) -> Client {
        self.members[i].etcd.client().await
    }

    /// The router's endpoint list (`ETCD_ENDPOINTS`): the members' links, in `order`.
    pub fn endpoints(&self, order: &[usize]) -> String {
        order
            .iter()
            .map(|&i| self.members[i].link.endpoint())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Which member an endpoint of [`EtcdCluster::endpoints`] leads to.
    pub fn member_of(&self, endpoint: &str) -> usize {
        self.members
            .iter()
            .position(|m| m.link.endpoint() == endpoint)
            .unwrap_or_else(|| panic!("{endpoint} is not a member's link"))
    }

    /// The member that every running member reports as leader (waits for an election).
    pub async fn leader(&self) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(leader) = self.agreed_leader().await {
                return leader;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no agreed leader within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn agreed_leader(&self) -> Option<usize> {
        let mut leaders = Vec::new();
        for m in &self.members {
            if m.etcd.pid().is_none() {
                continue;
            }
            let Ok(mut client) = m.etcd.try_client().await else {
                return None;
            };
            let Ok(Ok(status)) =
                tokio::time::timeout(Duration::from_secs(1), client.status()).await
            else {
                return None;
            };
            leaders.push(format!("{:x}", status.leader()));
        }
        let first = leaders.first()?.clone();
        if leaders.iter().any(|l| *l != first) {
            return None;
        }
        // A leader that was just killed is still named until the others notice.
        self.members
            .iter()
            .position(|m| m.id == first && m.etcd.pid().is_some())
    }

    pub fn kill(&mut self, i: usize) {
        self.members[i].etcd.kill();
    }

    /// Starts member `i` again on its data and waits until it answers.
    pub async fn restart(&mut self, i: usize) {
        self.members[i].etcd.restart().await;
    }

    /// Kills every member.
    pub fn kill_all(&mut self) {
        self.members.iter_mut().for_each(|m| m.etcd.kill());
    }

    /// Starts every member that is not running and waits until each answers.
    pub async fn restart_stopped(&mut self) {
        for m in &mut self.members {
            if m.etcd.pid().is_none() {
                m.etcd.launch();
            }
        }
        for m in &self.members {
            m.etcd.wait_answering().await;
        }
    }

    /// Cuts member `i` off from every other member (both directions); its clients still reach it.
    pub fn partition(&self, i: usize) {
        let others: Vec<String> = (0..self.members.len())
            .filter(|&j| j != i)
            .map(|j| self.members[j].id.clone())
            .collect();
        self.members[i].peer.refuse(&others);
        for j in (0..self.members.len()).filter(|&j| j != i) {
            self.members[j].peer.refuse(&[self.members[i].id.clone()]);
        }
    }

    /// Ends every partition.
    pub fn heal(&self) {
        for m in &self.members {
            m.peer.admit_all();
        }
    }

    pub async fn put(&self, via: usize, key: &str, value: &str) -> i64 {
        self.members[via].etcd.put(key, value).await
    }

    pub async fn delete(&self, via: usize, key: &str) -> i64 {
        self.members[via].etcd.delete(key).await
    }

    /// The keys under `prefix` and the revision they were read at, from member `via`.
    pub async fn keys(&self, via: usize, prefix: &str) -> (Vec<String>, i64) {
        match self.try_keys(via, prefix).await {
            Ok(keys) => keys,
            Err(error) => panic!("member {via} could not list {prefix}: {error}"),
        }
    }

    /// [`Self::keys`], or why member `via` could not answer.
    pub async fn try_keys(&self, via: usize, prefix: &str) -> Result<(Vec<String>, i64), String> {
        let response = self
            .client(via)
            .await
            .get(
                prefix,
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await
            .map_err(|e| e.to_string())?;
        let keys = response
            .kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
            .collect();
        let revision = response.header().map_or(0, |h| h.revision());
        Ok((keys, revision))
    }
}
