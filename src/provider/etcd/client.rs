//! Connecting to etcd: endpoints, keep-alive and credentials.

use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

use crate::{config::secret::Secret, settings::Settings};

/// HTTP/2 pings this often; a peer that does not answer within [`KEEP_ALIVE_TIMEOUT`] is dead.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest gRPC message accepted (a page of a full load, a burst of watch events).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdLink {
    pub endpoints: Vec<String>,
    pub user: Option<(String, Secret)>,
}

impl EtcdLink {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            endpoints: settings.etcd_endpoints(),
            user: settings
                .etcd_username
                .clone()
                .zip(settings.etcd_password.clone()),
        }
    }

    fn options(&self) -> ConnectOptions {
        let mut options = ConnectOptions::new()
            .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT)
            .with_keep_alive_while_idle(true)
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_tcp_keepalive(KEEP_ALIVE_INTERVAL);
        if let Some((user, password)) = &self.user {
            options = options
                .with_user(user.clone(), password.expose().to_owned())
                .with_auto_token_refresh(true);
        }
        options
    }

    /// Opens a client (authenticating when a user is set). Fails fast when no endpoint answers.
    pub async fn connect(&self) -> Result<Client, etcd_client::Error> {
        Client::connect(&self.endpoints, Some(self.options())).await
    }
}
