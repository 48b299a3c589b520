//! The Redis client of one connection (the only file that builds redis clients).

use std::time::Duration;

use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo,
};

use crate::config::connection::RedisConnection;

/// A shared, self-reconnecting Redis connection; clones share it.
#[derive(Clone)]
pub struct RedisClient(pub(super) ConnectionManager);

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisClient")
    }
}

impl RedisClient {
    /// Creates the client lazily: it connects on first use, so building does no I/O.
    pub fn build(connection: &RedisConnection) -> Result<Self, String> {
        let info = match &connection.url {
            Some(url) => url
                .expose()
                .into_connection_info()
                .map_err(|e| format!("invalid Redis url: {e}"))?,
            None => {
                let host = connection
                    .host
                    .clone()
                    .unwrap_or_else(|| "localhost".into());
                let port = connection.port.unwrap_or(6379);
                let addr = if connection.tls {
                    ConnectionAddr::TcpTls {
                        host,
                        port,
                        insecure: false,
                        tls_params: None,
                    }
                } else {
                    ConnectionAddr::Tcp(host, port)
                };
                let mut redis = RedisConnectionInfo::default().set_db(connection.db.unwrap_or(0));
                if let Some(user) = &connection.username {
                    redis = redis.set_username(user);
                }
                if let Some(password) = &connection.password {
                    redis = redis.set_password(password.expose());
                }
                addr.into_connection_info()
                    .map_err(|e| format!("invalid Redis address: {e}"))?
                    .set_redis_settings(redis)
            }
        };
        let client =
            redis::Client::open(info).map_err(|e| format!("invalid Redis settings: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        ConnectionManager::new_lazy_with_config(client, config)
            .map(RedisClient)
            .map_err(|e| format!("cannot create Redis client: {e}"))
    }
}
