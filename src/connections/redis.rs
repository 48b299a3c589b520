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

/// The keys of a channel kept in Redis (connector mode, a fleet's shared channel). They share
/// one hash tag, so a cluster keeps them on one node and the scripts may touch them together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelKeys {
    /// The stream of messages: entry id `0-<seq>`, fields `r` (received at, ms) and `f` (the
    /// message with sequence 0 in its header).
    pub messages: String,
    /// A hash: `head` (the last sequence given), `acked`, `bytes` (of the messages stored).
    pub meta: String,
    /// The dead letters: a stream with fields `s` (the sequence it had), `r` and `f`.
    pub dead: String,
    /// The lease: who pulls the channel now (`SET NX PX`).
    pub lease: String,
}

/// One message of a Redis-kept channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelEntry {
    pub seq: u64,
    pub received_ms: u64,
    pub frame: Vec<u8>,
}

/// A Redis-kept channel's numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelNumbers {
    pub head: u64,
    pub acked: u64,
    pub bytes: u64,
    pub depth: u64,
    pub oldest_ms: Option<u64>,
    pub dead: u64,
    pub lease_holder: Option<String>,
}

/// Most entries one script moves, so that no call holds Redis for long; callers loop.
pub const CHANNEL_STEP: u64 = 1000;

/// Appends a message under the next sequence, unless the channel would pass its byte bound
/// (-1). The stream entry is written before the head moves: a refused `XADD` changes nothing.
const CHANNEL_APPEND: &str = r"
local size = string.len(ARGV[3])
local bytes = tonumber(redis.call('HGET', KEYS[2], 'bytes') or '0')
if bytes + size > tonumber(ARGV[1]) then return -1 end
local seq = tonumber(redis.call('HGET', KEYS[2], 'head') or '0') + 1
redis.call('XADD', KEYS[1], '0-' .. seq, 'r', ARGV[2], 'f', ARGV[3])
redis.call('HSET', KEYS[2], 'head', seq)
redis.call('HINCRBY', KEYS[2], 'bytes', size)
return seq
";

/// Removes acknowledged messages up to ARGV[1] (at most ARGV[2]); returns the sequence
/// acknowledged now. With a consumer (ARGV[3]), records the range it removed in the meta hash
/// (`owner:<consumer>` = `after:upto`), one range for its consecutive acknowledgements. (Lua writes the negation of 0 as `-0`, which `HINCRBY` refuses:
/// a zero is never added.)
const CHANNEL_ACK: &str = r"
local acked = tonumber(redis.call('HGET', KEYS[2], 'acked') or '0')
local head = tonumber(redis.call('HGET', KEYS[2], 'head') or '0')
local upto = math.min(tonumber(ARGV[1]), head)
if upto <= acked then return acked end
local entries = redis.call('XRANGE', KEYS[1], '-', '0-' .. upto, 'COUNT', tonumber(ARGV[2]))
local bytes = 0
for _, e in ipairs(entries) do
  local f = e[2]
  for i = 1, #f, 2 do if f[i] == 'f' then bytes = bytes + string.len(f[i + 1]) end end
  redis.call('XDEL', KEYS[1], e[1])
end
if #entries == tonumber(ARGV[2]) then upto = tonumber(string.sub(entries[#entries][1], 3)) end
if bytes > 0 then redis.call('HINCRBY', KEYS[2], 'bytes', -bytes) end
redis.call('HSET', KEYS[2], 'acked', upto)
if ARGV[3] ~= '' then
  local after = acked
  local last = redis.call('HGET', KEYS[2], 'owner:' .. ARGV[3])
  if last then
    local from, to = string.match(last, '^(%d+):(%d+)$')
    if to and tonumber(to) == acked then after = tonumber(from) end
  end
  redis.call('HSET', KEYS[2], 'owner:' .. ARGV[3], after .. ':' .. upto)
end
return upto
";

/// Moves messages received before ARGV[1] (ms) to the dead letters, oldest first, at most
/// ARGV[2]; returns how many.
const CHANNEL_EXPIRE: &str = r"
local entries = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', tonumber(ARGV[2]))
local moved, bytes = 0, 0
for _, e in ipairs(entries) do
  local f, r, frame = e[2], nil, nil
  for i = 1, #f, 2 do
    if f[i] == 'r' then r = f[i + 1] elseif f[i] == 'f' then frame = f[i + 1] end
  end
  if r == nil or frame == nil or tonumber(r) >= tonumber(ARGV[1]) then break end
  redis.call('XADD', KEYS[3], '*', 's', string.sub(e[1], 3), 'r', r, 'f', frame)
  redis.call('XDEL', KEYS[1], e[1])
  bytes = bytes + string.len(frame)
  moved = moved + 1
end
if bytes > 0 then redis.call('HINCRBY', KEYS[2], 'bytes', -bytes) end
return moved
";

/// Puts dead letters back at the channel's end under new sequences, received now (ARGV[1]),
/// at most ARGV[2]; returns how many.
const CHANNEL_REPLAY: &str = r"
local entries = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', tonumber(ARGV[2]))
local head = tonumber(redis.call('HGET', KEYS[2], 'head') or '0')
local bytes = 0
for _, e in ipairs(entries) do
  local f, frame = e[2], nil
  for i = 1, #f, 2 do if f[i] == 'f' then frame = f[i + 1] end end
  if frame then
    head = head + 1
    redis.call('XADD', KEYS[1], '0-' .. head, 'r', ARGV[1], 'f', frame)
    bytes = bytes + string.len(frame)
  end
  redis.call('XDEL', KEYS[3], e[1])
end
redis.call('HSET', KEYS[2], 'head', head)
if bytes > 0 then redis.call('HINCRBY', KEYS[2], 'bytes', bytes) end
return #entries
";

/// Extends the lease while ARGV[1] holds it (ARGV[2] ms); returns whether it does.
const LEASE_RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
";

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// An integer out of a reply (a number, or digits as a string).
fn integer(value: &redis::Value) -> Option<u64> {
    match value {
        redis::Value::Int(n) => u64::try_from(*n).ok(),
        redis::Value::BulkString(bytes) => std::str::from_utf8(bytes).ok()?.parse().ok(),
        redis::Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

/// The entries of an `XRANGE` reply (`[[id, [field, value, ...]], ...]`) whose ids are
/// `0-<seq>`.
fn entries(reply: &redis::Value) -> Result<Vec<ChannelEntry>, String> {
    let redis::Value::Array(items) = reply else {
        return Err("XRANGE: not an array".into());
    };
    let mut read = Vec::with_capacity(items.len());
    for item in items {
        let redis::Value::Array(pair) = item else {
            return Err("XRANGE: an entry is not an array".into());
        };
        let [redis::Value::BulkString(id), redis::Value::Array(fields)] = pair.as_slice() else {
            return Err("XRANGE: an entry is not [id, fields]".into());
        };
        let seq = std::str::from_utf8(id)
            .ok()
            .and_then(|id| id.strip_prefix("0-"))
            .and_then(|seq| seq.parse().ok())
            .ok_or("XRANGE: an entry id is not 0-<seq>")?;
        let mut entry = ChannelEntry {
            seq,
            received_ms: 0,
            frame: Vec::new(),
        };
        for pair in fields.chunks(2) {
            match pair {
                [redis::Value::BulkString(name), value] if name == b"r" => {
                    entry.received_ms = integer(value).unwrap_or(0);
                }
                [redis::Value::BulkString(name), redis::Value::BulkString(frame)]
                    if name == b"f" =>
                {
                    entry.frame.clone_from(frame);
                }
                _ => {}
            }
        }
        read.push(entry);
    }
    Ok(read)
}

/// The commands of a Redis-kept channel (connector mode). Errors are Redis's text.
impl RedisClient {
    async fn script(
        &self,
        source: &'static str,
        keys: &[&str],
        args: &[&[u8]],
    ) -> Result<i64, String> {
        let mut conn = self.0.clone();
        let script = redis::Script::new(source);
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            invocation.arg(*arg);
        }
        invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| e.to_string())
    }

    /// Stores a message; `Ok(None)` when the channel holds `max_bytes` already.
    pub async fn channel_append(
        &self,
        keys: &ChannelKeys,
        max_bytes: u64,
        received_ms: u64,
        frame: &[u8],
    ) -> Result<Option<u64>, String> {
        let seq = self
            .script(
                CHANNEL_APPEND,
                &[&keys.messages, &keys.meta],
                &[
                    max_bytes.to_string().as_bytes(),
                    received_ms.to_string().as_bytes(),
                    frame,
                ],
            )
            .await?;
        Ok(u64::try_from(seq).ok())
    }

    /// Up to `max` messages after `after`.
    pub async fn channel_read(
        &self,
        keys: &ChannelKeys,
        after: u64,
        max: usize,
    ) -> Result<Vec<ChannelEntry>, String> {
        let mut conn = self.0.clone();
        let reply: redis::Value = redis::cmd("XRANGE")
            .arg(&keys.messages)
            .arg(format!("(0-{after}"))
            .arg("+")
            .arg("COUNT")
            .arg(max)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        entries(&reply)
    }

    /// Acknowledges up to `upto` (at most [`CHANNEL_STEP`] messages); returns the sequence
    /// acknowledged now.
    pub async fn channel_ack(
        &self,
        keys: &ChannelKeys,
        upto: u64,
        consumer: &str,
    ) -> Result<u64, String> {
        let acked = self
            .script(
                CHANNEL_ACK,
                &[&keys.messages, &keys.meta],
                &[
                    upto.to_string().as_bytes(),
                    CHANNEL_STEP.to_string().as_bytes(),
                    consumer.as_bytes(),
                ],
            )
            .await?;
        Ok(u64::try_from(acked).unwrap_or(0))
    }

    /// The range (after, upto] that `consumer`'s acknowledgements removed last.
    pub async fn channel_owned(
        &self,
        keys: &ChannelKeys,
        consumer: &str,
    ) -> Result<Option<(u64, u64)>, String> {
        let mut conn = self.0.clone();
        let range: Option<String> = redis::cmd("HGET")
            .arg(&keys.meta)
            .arg(format!("owner:{consumer}"))
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(range.and_then(|range| {
            let (after, upto) = range.split_once(':')?;
            Some((after.parse().ok()?, upto.parse().ok()?))
        }))
    }

    /// Moves messages received before `before_ms` to the dead letters (at most
    /// [`CHANNEL_STEP`]); returns how many.
    pub async fn channel_expire(&self, keys: &ChannelKeys, before_ms: u64) -> Result<u64, String> {
        self.channel_step(CHANNEL_EXPIRE, keys, before_ms).await
    }

    /// Puts dead letters back (at most [`CHANNEL_STEP`]); returns how many.
    pub async fn channel_replay(&self, keys: &ChannelKeys, now_ms: u64) -> Result<u64, String> {
        self.channel_step(CHANNEL_REPLAY, keys, now_ms).await
    }

    /// One step of a script that moves messages between the stream and the dead letters.
    async fn channel_step(
        &self,
        source: &'static str,
        keys: &ChannelKeys,
        at_ms: u64,
    ) -> Result<u64, String> {
        let moved = self
            .script(
                source,
                &[&keys.messages, &keys.meta, &keys.dead],
                &[
                    at_ms.to_string().as_bytes(),
                    CHANNEL_STEP.to_string().as_bytes(),
                ],
            )
            .await?;
        Ok(u64::try_from(moved).unwrap_or(0))
    }

    /// The channel's numbers, in one round trip.
    pub async fn channel_numbers(&self, keys: &ChannelKeys) -> Result<ChannelNumbers, String> {
        let mut conn = self.0.clone();
        let (meta, depth, oldest, dead, lease): (
            Vec<redis::Value>,
            u64,
            redis::Value,
            u64,
            Option<String>,
        ) = redis::pipe()
            .cmd("HMGET")
            .arg(&keys.meta)
            .arg("head")
            .arg("acked")
            .arg("bytes")
            .cmd("XLEN")
            .arg(&keys.messages)
            .cmd("XRANGE")
            .arg(&keys.messages)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .cmd("XLEN")
            .arg(&keys.dead)
            .cmd("GET")
            .arg(&keys.lease)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        let number = |i: usize| meta.get(i).and_then(integer).unwrap_or(0);
        Ok(ChannelNumbers {
            head: number(0),
            acked: number(1),
            bytes: number(2),
            depth,
            oldest_ms: entries(&oldest)?.first().map(|e| e.received_ms),
            dead,
            lease_holder: lease,
        })
    }

    /// One number of the meta hash (`head`, `acked`) alone: a reader's wait, a long poll.
    pub async fn channel_number(&self, keys: &ChannelKeys, field: &str) -> Result<u64, String> {
        let mut conn = self.0.clone();
        let number: Option<u64> = redis::cmd("HGET")
            .arg(&keys.meta)
            .arg(field)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(number.unwrap_or(0))
    }

    /// Takes the lease for `holder` if it is free, or extends it if `holder` has it.
    pub async fn lease(&self, key: &str, holder: &str, ttl: Duration) -> Result<bool, String> {
        if self.set_new(key, holder, ttl).await? {
            return Ok(true);
        }
        let renewed = self
            .script(
                LEASE_RENEW,
                &[key],
                &[holder.as_bytes(), millis(ttl).to_string().as_bytes()],
            )
            .await?;
        Ok(renewed == 1)
    }

    /// Whether Redis makes every write durable before answering (`appendonly yes` and
    /// `appendfsync always`); `None` when it does not say (`CONFIG` is refused, as managed
    /// services do).
    pub async fn fsyncs_every_write(&self) -> Result<Option<bool>, String> {
        let mut conn = self.0.clone();
        let reply: Result<Vec<String>, _> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("append*")
            .query_async(&mut conn)
            .await;
        let settings = match reply {
            Ok(settings) => settings,
            Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => {
                return Err(e.to_string())
            }
            Err(_) => return Ok(None),
        };
        let get = |name: &str| {
            settings
                .chunks(2)
                .find(|pair| pair.first().is_some_and(|n| n == name))
                .and_then(|pair| pair.get(1).cloned())
        };
        Ok(Some(
            get("appendonly").as_deref() == Some("yes")
                && get("appendfsync").as_deref() == Some("always"),
        ))
    }
}
