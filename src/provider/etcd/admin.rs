//! One-shot etcd access for the config tools (`check --etcd`, `migrate`, `export`). The server
//! itself never writes; only `migrate` calls [`put_all`].

use etcd_client::{GetOptions, Txn, TxnOp};

use super::{client::EtcdLink, watch::prefix_end, SessionError};

/// etcd's default `--max-txn-ops`.
const TXN_OPS: usize = 128;

/// Every key and value under `prefix`, in key order.
pub async fn read_prefix(
    link: &EtcdLink,
    prefix: &str,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>, SessionError> {
    let client = link.connect().await?;
    let mut kv = client
        .kv_client()
        .max_decoding_message_size(super::client::MAX_MESSAGE_BYTES);
    let end = prefix_end(prefix.as_bytes());
    let mut start = prefix.as_bytes().to_vec();
    let mut revision = 0;
    let mut out = Vec::new();
    loop {
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(2_000);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let response = kv.get(start.clone(), Some(options)).await?;
        if revision == 0 {
            revision = response.header().map_or(0, |h| h.revision());
        }
        out.extend(
            response
                .kvs()
                .iter()
                .map(|kv| (kv.key().to_vec(), kv.value().to_vec())),
        );
        match (response.more(), response.kvs().last()) {
            (true, Some(last)) => {
                start = last.key().to_vec();
                start.push(0);
            }
            _ => break,
        }
    }
    Ok(out)
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
