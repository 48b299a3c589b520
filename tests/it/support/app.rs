//! `TestApp`: the real `Application` on port 0, with typed helpers.

use std::{path::Path, time::Duration};

use reqwest::StatusCode;
use serde_json::Value;
pub use switchyard::settings::Settings;
use switchyard::{
    provider::ProviderStats,
    settings::{Backend, LogFormat},
    startup::{AppHandle, Application},
};
use tokio::sync::oneshot;

use super::wait_until;

pub struct TestApp {
    pub port: u16,
    pub handle: AppHandle,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Settings as `main` would build them from an empty environment, on port 0.
pub fn settings() -> Settings {
    Settings {
        host: "127.0.0.1".into(),
        port: 0,
        config_backend: Backend::File,
        webhooks_config_file: "config/webhooks.json".into(),
        connections_config_file: "config/connections.json".into(),
        etcd_host: "localhost".into(),
        etcd_port: 2379,
        etcd_endpoints: None,
        etcd_prefix: "/cwm/".into(),
        etcd_namespace: "default".parse().unwrap(),
        etcd_username: None,
        etcd_password: None,
        etcd_ca_file: None,
        etcd_cert_file: None,
        etcd_key_file: None,
        max_body_bytes: 1024 * 1024,
        max_body_bytes_ceiling: 32 * 1024 * 1024,
        body_memory_bytes: 256 * 1024 * 1024,
        max_chain_length: 16,
        log_format: LogFormat::Text,
        log_filter: "info".into(),
        http_workers: 1,
        shutdown_grace_seconds: 5,
        max_in_flight: 1024,
        trusted_proxies: Default::default(),
        http_allowed_networks: Default::default(),
        metrics_max_webhooks: 1000,
        body_read_timeout_ms: 10_000,
        max_body_readers: 1024,
        max_body_readers_per_client: 8,
        keep_alive_seconds: 75,
        client_request_timeout_ms: 5_000,
        client_disconnect_timeout_ms: 1_000,
        max_connections: 25_000,
        admin_host: "127.0.0.1".into(),
        admin_hosts: switchyard::settings::HostList(vec!["localhost".into()]),
        admin_port: None,
        shutdown_drain_seconds: 0,
        // Off unless a test gives the app a directory of its own (`spool_settings`).
        spool_dir: Default::default(),
        connector_url: None,
        connector_token: None,
        connector_token_file: None,
        connector_allow_insecure: false,
        connector_ca_file: None,
        connector_cert_file: None,
        connector_key_file: None,
        connector_protocol: switchyard::settings::ConnectorProtocol::Websocket,
        connector_namespace: None,
        connector_etcd_host: None,
        connector_etcd_port: None,
        connector_etcd_prefix: None,
        spool_max_bytes: 1 << 30,
        spool_namespace_share: 25,
        spool_handoff_ms: 2_000,
        spool_max_forwards: 16,
        spool_write_timeout_ms: 5_000,
        spool_on_damage: switchyard::settings::OnDamage::Refuse,
        dedup_max_keys: 1_000_000,
        seal_keys_file: None,
    }
}

/// Settings for the etcd backend at `endpoint` under `prefix`.
pub fn etcd_settings(endpoint: &str, prefix: &str) -> Settings {
    Settings {
        config_backend: Backend::Etcd,
        etcd_endpoints: Some(endpoint.to_owned()),
        etcd_prefix: prefix.to_owned(),
        ..settings()
    }
}

/// Settings for the file backend reading the two files in `dir`.
pub fn file_settings(dir: &Path) -> Settings {
    Settings {
        webhooks_config_file: dir.join("webhooks.json"),
        connections_config_file: dir.join("connections.json"),
        ..settings()
    }
}

impl TestApp {
    pub async fn spawn(settings: Settings) -> Self {
        super::init_logs();
        let app = Application::build(&settings).expect("application builds");
        let port = app.port();
        let handle = app.handle();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Self {
            port,
            handle,
            client: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Spawns and waits until `/health` says the config is loaded.
    pub async fn spawn_ready(settings: Settings) -> Self {
        let app = Self::spawn(settings).await;
        app.wait_ready().await;
        app
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> String {
        self.url("")
    }

    /// POSTs a JSON body to `/webhook/<path>`.
    pub async fn post_webhook(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/webhook/{path}")))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// The status of a JSON POST to `/webhook/<path>`.
    pub async fn status_of(&self, path: &str) -> StatusCode {
        self.post_webhook(path, &serde_json::json!({"hello": "world"}))
            .await
            .status()
    }

    pub async fn health(&self) -> (StatusCode, Value) {
        let response = self.client.get(self.url("/health")).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    pub async fn wait_ready(&self) {
        wait_until(Duration::from_secs(20), "health 200", || async {
            self.health().await.0 == StatusCode::OK
        })
        .await;
    }

    /// Waits until `POST /webhook/<path>` answers `status`.
    pub async fn wait_status(&self, path: &str, status: StatusCode) {
        wait_until(
            Duration::from_secs(10),
            &format!("POST /webhook/{path} -> {status}"),
            || async { self.status_of(path).await == status },
        )
        .await;
    }

    /// Waits until `/health` reports the etcd component as `state`.
    pub async fn wait_etcd_state(&self, state: &str, deadline: Duration) {
        wait_until(deadline, &format!("etcd component {state}"), || async {
            self.health().await.1["components"]["etcd"] == state
        })
        .await;
    }

    pub fn stats(&self) -> &ProviderStats {
        &self.handle.provider.stats
    }

    /// Stops the application gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
