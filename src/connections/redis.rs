//! The Redis client of a `redis` connection and the commands modules send through it (the
//! only file that imports the redis crate).

use std::time::Duration;

use redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo,
};

use crate::config::connection::RedisConnection;

/// A shared, self-reconnecting Redis connection; clones share it.
#[derive(Clone)]
pub struct RedisClient(ConnectionManager);

impl std::fmt::Debug for RedisClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisClient")
    }
}

/// `XADD stream [MAXLEN ~ n] * field value ...`: the same command alone or in a pipeline.
fn xadd_command(stream: &str, maxlen: Option<u64>, fields: &[(&str, &[u8])]) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream);
    if let Some(maxlen) = maxlen {
        cmd.arg("MAXLEN").arg("~").arg(maxlen);
    }
    cmd.arg("*");
    for (field, value) in fields {
        cmd.arg(*field).arg(*value);
    }
    cmd
}

/// Reply codes that mean the command itself is refused (`WRONGTYPE`: the key holds another
/// type; `NOPERM`: the user may not run it; `NOSCRIPT`), not that Redis is unavailable.
/// Connection errors, timeouts and every other reply are not permanent.
const PERMANENT_CODES: &[&str] = &["WRONGTYPE", "NOPERM", "NOSCRIPT"];

impl From<redis::RedisError> for super::WriteError {
    fn from(error: redis::RedisError) -> Self {
        // Inside MULTI/EXEC the refusals come as a list of pipeline failures, each with the
        // refused command's code in quotes (`"WRONGTYPE": Operation against ...`).
        let text = error.to_string();
        let permanent = error.code().is_some_and(|c| PERMANENT_CODES.contains(&c))
            || PERMANENT_CODES
                .iter()
                .any(|code| text.contains(&format!("\"{code}\"")));
        Self {
            permanent: permanent && !error.is_io_error() && !error.is_timeout(),
            message: text,
        }
    }
}

impl RedisClient {
    /// The client settings of a connection. No I/O: `redis::Client::open` only checks them.
    fn client(connection: &RedisConnection) -> Result<redis::Client, String> {
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
        redis::Client::open(info).map_err(|e| format!("invalid Redis settings: {e}"))
    }

    /// Whether the connection's settings make a client (applied entries and `check`).
    pub fn validate(connection: &RedisConnection) -> Result<(), String> {
        Self::client(connection).map(|_| ())
    }

    /// Creates the client lazily: it connects on first use, so building does no I/O.
    pub fn build(connection: &RedisConnection) -> Result<Self, String> {
        let client = Self::client(connection)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        ConnectionManager::new_lazy_with_config(client, config)
            .map(RedisClient)
            .map_err(|e| format!("cannot create Redis client: {e}"))
    }

    /// `PUBLISH channel payload`.
    pub async fn publish(&self, channel: &str, payload: Vec<u8>) -> Result<(), super::WriteError> {
        let mut conn = self.0.clone();
        let _receivers: i64 = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// `XADD stream [MAXLEN ~ n] * field value ...`.
    pub async fn xadd(
        &self,
        stream: &str,
        maxlen: Option<u64>,
        fields: &[(&str, &[u8])],
    ) -> Result<(), super::WriteError> {
        let mut conn = self.0.clone();
        let _id: String = xadd_command(stream, maxlen, fields)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// `XADD`s of several entries to one stream in one `MULTI`/`EXEC` transaction: one round
    /// trip, in order, and Redis appends the whole batch to its AOF with one write (one fsync
    /// under `appendfsync always`, where a plain pipeline costs one per 16 KiB Redis reads). An
    /// error fails the whole batch (entries other than the failed one may have been added: a
    /// retry duplicates them, it never loses one).
    pub async fn xadd_all(
        &self,
        stream: &str,
        maxlen: Option<u64>,
        entries: &[Vec<(&str, &[u8])>],
    ) -> Result<(), super::WriteError> {
        let mut conn = self.0.clone();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for fields in entries {
            pipe.add_command(xadd_command(stream, maxlen, fields))
                .ignore();
        }
        let () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    /// `LPUSH` (`left`) or `RPUSH` the payload, then trim the list to `max_length` from the
    /// pushed end, atomically.
    pub async fn push(
        &self,
        key: &str,
        left: bool,
        payload: Vec<u8>,
        max_length: Option<u64>,
    ) -> Result<(), super::WriteError> {
        let mut conn = self.0.clone();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd(if left { "LPUSH" } else { "RPUSH" })
            .arg(key)
            .arg(payload)
            .ignore();
        if let Some(max) = max_length {
            let max = i64::try_from(max).unwrap_or(i64::MAX);
            let (start, stop) = if left { (0, max - 1) } else { (-max, -1) };
            pipe.cmd("LTRIM").arg(key).arg(start).arg(stop).ignore();
        }
        let () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    /// `SET key value NX PX ms`: whether the key was set (it did not exist).
    pub async fn set_new(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, String> {
        let mut conn = self.0.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(set.is_some())
    }

    /// `SET key value PX ms`.
    pub async fn set_for(&self, key: &str, value: &str, ttl: Duration) -> Result<(), String> {
        let mut conn = self.0.clone();
        let () = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1))
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    /// `GET key`.
    pub async fn get(&self, key: &str) -> Result<Option<String>, String> {
        let mut conn = self.0.clone();
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())
    }

    /// Deletes `key` only while it still holds `value` (atomically, one script).
    pub async fn delete_if(&self, key: &str, value: &str) -> Result<(), String> {
        const SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                              return redis.call('DEL', KEYS[1]) else return 0 end";
        let mut conn = self.0.clone();
        let _deleted: i64 = redis::Script::new(SCRIPT)
            .key(key)
            .arg(value)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}
