//! One-shot etcd access for the config tools (`check --etcd`, `migrate`, `export`). The server
//! itself never writes; only `migrate` calls [`put_all`] and [`put_all_if_unchanged`].

use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use super::{client::EtcdLink, load::read_pages, SessionError};

/// etcd's default `--max-txn-ops`.
const TXN_OPS: usize = 128;

/// Every key and value under `prefix`, in key order, at one revision.
pub async fn read_prefix(
    link: &EtcdLink,
    prefix: &str,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>, SessionError> {
    Ok(read_prefix_revisions(link, prefix)
        .await?
        .into_iter()
        .map(|(key, value, _)| (key, value))
        .collect())
}

/// Every key under `prefix` with its value and mod revision, at one revision.
pub async fn read_prefix_revisions(
    link: &EtcdLink,
    prefix: &str,
) -> Result<Vec<(Vec<u8>, Vec<u8>, i64)>, SessionError> {
    let client = link.connect().await?;
    let mut kv = client
        .kv_client()
        .max_decoding_message_size(super::client::MAX_MESSAGE_BYTES);
    let mut out = Vec::new();
    read_pages(&mut kv, prefix.as_bytes(), |kv| {
        out.push((kv.key().to_vec(), kv.value().to_vec(), kv.mod_revision()));
    })
    .await?;
    Ok(out)
}

/// Writes every `(key, value)` only while the key is still at the mod revision it was read at
/// (0: absent), 64 keys per transaction (a compare and a put each). `false` when a transaction's
/// compare failed: someone wrote meanwhile; that transaction and the ones after it wrote nothing.
pub async fn put_all_if_unchanged(
    link: &EtcdLink,
    entries: &[(String, String, i64)],
) -> Result<bool, SessionError> {
    let mut client = link.connect().await?;
    for chunk in entries.chunks(TXN_OPS / 2) {
        let compares: Vec<_> = chunk
            .iter()
            .map(|(k, _, revision)| Compare::mod_revision(k.as_str(), CompareOp::Equal, *revision))
            .collect();
        let puts: Vec<_> = chunk
            .iter()
            .map(|(k, v, _)| TxnOp::put(k.as_str(), v.as_str(), None))
            .collect();
        let response = client.txn(Txn::new().when(compares).and_then(puts)).await?;
        if !response.succeeded() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Writes every `(key, value)`, 128 per transaction.
pub async fn put_all(link: &EtcdLink, entries: &[(String, String)]) -> Result<(), SessionError> {
    let mut client = link.connect().await?;
    for chunk in entries.chunks(TXN_OPS) {
        let ops: Vec<_> = chunk
            .iter()
            .map(|(k, v)| TxnOp::put(k.as_str(), v.as_str(), None))
            .collect();
        client.txn(Txn::new().and_then(ops)).await?;
    }
    Ok(())
}
