//! Connecting to etcd: endpoints, keep-alive and credentials.

use std::time::Duration;

use std::path::PathBuf;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, StatusResponse, TlsOptions};

use crate::{config::secret::Secret, settings::Settings};

/// An HTTP/2 ping goes out after this long without a frame from etcd; a peer that does not answer
/// it within [`KEEP_ALIVE_TIMEOUT`] is dead: a frozen member or a silently dropped link is noticed
/// within 8 s. 5 s is the floor etcd accepts (`--grpc-keepalive-min-time`); pinging more often
/// gets the connection closed with "too many pings".
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(3);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest gRPC message accepted (a page of a full load, a burst of watch events).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct EtcdLink {
    pub endpoints: Vec<String>,
    pub user: Option<(String, Secret)>,
    pub tls: Option<TlsFiles>,
}

/// PEM files of the TLS link, read at every connect (so rotated certificates are picked up).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: Option<PathBuf>,
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// Why the client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Etcd(#[from] etcd_client::Error),
}

fn read(path: &PathBuf) -> Result<Vec<u8>, LinkError> {
    std::fs::read(path).map_err(|source| LinkError::Read {
        path: path.clone(),
        source,
    })
}

impl EtcdLink {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            endpoints: settings.etcd_endpoints(),
            user: settings
                .etcd_username
                .clone()
                .zip(settings.etcd_password.clone()),
            tls: settings.etcd_tls().then(|| TlsFiles {
                ca: settings.etcd_ca_file.clone(),
                identity: settings
                    .etcd_cert_file
                    .clone()
                    .zip(settings.etcd_key_file.clone()),
            }),
        }
    }

    /// Every request requires a leader: a member cut off from its quorum refuses reads at once
    /// and cancels its watches (about 4 s after losing the leader) instead of serving a revision
    /// that no longer moves.
    fn options(&self) -> Result<ConnectOptions, LinkError> {
        let mut options = self.anonymous_options()?.with_require_leader(true);
        if let Some((user, password)) = &self.user {
            options = options
                .with_user(user.clone(), password.expose().to_owned())
                .with_auto_token_refresh(true);
        }
        Ok(options)
    }

    /// Transport and TLS, no credentials: what a status probe needs (etcd answers `Status`
    /// without authentication, so a probe costs no password check).
    fn anonymous_options(&self) -> Result<ConnectOptions, LinkError> {
        let mut options = ConnectOptions::new()
            .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT)
            .with_keep_alive_while_idle(true)
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_tcp_keepalive(KEEP_ALIVE_INTERVAL);
        if let Some(files) = &self.tls {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &files.ca {
                tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            if let Some((cert, key)) = &files.identity {
                tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            options = options.with_tls(tls);
        }
        Ok(options)
    }

    /// Opens a client over every endpoint (authenticating when a user is set), for the one-shot
    /// config tools.
    pub async fn connect(&self) -> Result<Client, LinkError> {
        let options = self.options()?;
        Ok(Client::connect(&self.endpoints, Some(options)).await?)
    }

    /// Opens a client to one member (authenticating when a user is set).
    pub async fn connect_to(&self, endpoint: &str) -> Result<Client, LinkError> {
        let options = self.options()?;
        Ok(Client::connect([endpoint], Some(options)).await?)
    }

    /// One member's status, over a fresh unauthenticated connection.
    pub async fn probe(&self, endpoint: &str) -> Result<StatusResponse, LinkError> {
        let options = self.anonymous_options()?;
        let mut client = Client::connect([endpoint], Some(options)).await?;
        Ok(client.status().await?)
    }
}
