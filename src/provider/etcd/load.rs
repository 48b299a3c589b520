//! The full load: every key under the prefix at one revision, read in pages sized by bytes and
//! parsed while the next page is read, then applied in one swap.

use etcd_client::{GetOptions, KvClient};
use tokio::{sync::watch as status_watch, time::Instant};

use super::{timed_for, SessionError, SyncState, REQUEST_TIMEOUT};
use crate::{
    keys::{KeyLayout, KeyMatch},
    provider::{set_status, Applier, ProviderStatus},
};

/// Pages of a full load are sized by bytes, not keys. etcd 3.4 counts the whole remaining range
/// for every limited request, so each page costs about as much as the count, whatever its size:
/// few large pages keep the load linear in the keys, and the byte target bounds the memory a
/// page takes. The first page is small; later ones aim at `PAGE_BYTES` from the sizes seen.
const PAGE_BYTES: usize = 4 << 20;
const FIRST_PAGE: i64 = 1_000;
const MAX_PAGE: i64 = 200_000;

/// The next page's key count for pages of `bytes` over `keys` so far.
fn page_limit(keys: usize, bytes: usize) -> i64 {
    if keys == 0 {
        return FIRST_PAGE;
    }
    let per_key = (bytes / keys).max(1);
    i64::try_from(PAGE_BYTES / per_key)
        .unwrap_or(MAX_PAGE)
        .clamp(FIRST_PAGE, MAX_PAGE)
}

/// Reads every key under the prefix at one revision, page by page, and replaces the cache with it.
/// Returns the revision read at.
///
/// Reading and parsing overlap: a blocking thread parses each page (and builds its routes) while
/// the next one is read, so a load takes about as long as the slower of the two, not their sum.
pub async fn full_load(
    kv: &mut KvClient,
    layout: &KeyLayout,
    applier: &Applier,
    state: &mut SyncState,
    status: &status_watch::Sender<ProviderStatus>,
) -> Result<i64, SessionError> {
    let started = Instant::now();
    // At most two pages wait to be parsed: reading stays ahead without holding the whole load.
    let (pages, parsed) = tokio::sync::mpsc::channel::<Page>(2);
    let first = !status.borrow().loaded;
    let parser = {
        let (applier, layout) = (applier.clone(), layout.clone());
        tokio::task::spawn_blocking(move || parse_pages(&applier, &layout, parsed, first))
    };
    let read = read_pages_owned(kv, layout.prefix().as_bytes(), |page, left| {
        let pages = pages.clone();
        async move {
            // The parser only stops early by panicking; the join below reports it.
            let _ = pages.send(Page::Keys(page, left)).await;
        }
    })
    .await;
    if let Ok(revision) = read {
        let _ = pages.send(Page::Done(revision)).await;
    }
    drop(pages);
    let parsed = parser
        .await
        .map_err(|e| SessionError::Load(e.to_string()))?;
    let revision = read?;
    let Some((keys, stats)) = parsed else {
        return Err(SessionError::Load("the config parser stopped early".into()));
    };
    applier.stats.last_full_load_us.store(
        u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        std::sync::atomic::Ordering::Relaxed,
    );
    state.applied = Some(revision);
    set_status(status, Some(true), None);
    tracing::info!(
        revision,
        keys,
        webhooks = applier.cache.webhook_count(),
        connections = applier.pool.len(),
        removed = stats.removed,
        elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "Loaded config from etcd."
    );
    Ok(revision)
}

/// What the reader hands the parser.
enum Page {
    /// A page, and how many keys were left to read with it (etcd's count).
    Keys(Vec<etcd_client::KeyValue>, usize),
    /// Every page was read at this revision: apply.
    Done(i64),
}

/// Parses pages into a snapshot and applies it once the reader says it read them all; nothing
/// is applied when the reader stops without saying so (a failed load changes nothing served:
/// the `first` load, before anything is served, writes into the cache as it goes).
fn parse_pages(
    applier: &Applier,
    layout: &KeyLayout,
    mut pages: tokio::sync::mpsc::Receiver<Page>,
    first: bool,
) -> Option<(usize, crate::cache::ReplaceStats)> {
    let mut snapshot = if first {
        applier.first_snapshot()
    } else {
        applier.snapshot()
    };
    let mut keys = 0usize;
    while let Some(page) = pages.blocking_recv() {
        match page {
            Page::Keys(kvs, left) => {
                if keys == 0 {
                    snapshot.expect(left);
                }
                for kv in &kvs {
                    keys += 1;
                    let source = String::from_utf8_lossy(kv.key());
                    match layout.parse(kv.key()) {
                        KeyMatch::Valid(key) => snapshot.add(&key, &source, kv.value()),
                        KeyMatch::Invalid(reason) => snapshot.skip(&source, &reason),
                        KeyMatch::Foreign => {
                            tracing::debug!(key = %source, "Ignoring key outside the layout.");
                        }
                    }
                }
            }
            Page::Done(revision) => return Some((keys, snapshot.apply(revision))),
        }
    }
    None
}

/// Reads every key under `prefix` at one revision, page by page, handing each to `visit`.
/// Returns the revision read at.
pub async fn read_pages(
    kv: &mut KvClient,
    prefix: &[u8],
    mut visit: impl FnMut(&etcd_client::KeyValue),
) -> Result<i64, SessionError> {
    read_pages_owned(kv, prefix, |page, _| {
        page.iter().for_each(&mut visit);
        std::future::ready(())
    })
    .await
}

/// Reads every key under `prefix` at one revision, a page at a time, handing over each page with
/// the number of keys left to read from its start (etcd counts them for every limited request).
/// Returns the revision read at.
pub async fn read_pages_owned<F: std::future::Future<Output = ()>>(
    kv: &mut KvClient,
    prefix: &[u8],
    mut visit: impl FnMut(Vec<etcd_client::KeyValue>, usize) -> F,
) -> Result<i64, SessionError> {
    let end = prefix_end(prefix);
    let mut start = prefix.to_vec();
    let mut revision = 0;
    let (mut keys, mut bytes) = (0usize, 0usize);
    loop {
        let mut options = GetOptions::new()
            .with_range(end.clone())
            .with_limit(page_limit(keys, bytes));
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let mut response = timed_for(
            "page read",
            REQUEST_TIMEOUT,
            kv.get(start.clone(), Some(options)),
        )
        .await?;
        if revision == 0 {
            revision = response
                .header()
                .map(|h| h.revision())
                .ok_or(SessionError::NoHeader)?;
        }
        let more = response.more();
        let left = usize::try_from(response.count()).unwrap_or(0);
        let page = response.take_kvs();
        keys += page.len();
        bytes += page
            .iter()
            .map(|kv| kv.key().len() + kv.value().len())
            .sum::<usize>();
        let next = page.last().map(|last| {
            let mut next = last.key().to_vec();
            next.push(0);
            next
        });
        visit(page, left).await;
        match (more, next) {
            (true, Some(next)) => start = next,
            _ => return Ok(revision),
        }
    }
}

/// The smallest key greater than every key starting with `prefix` (etcd's range end for a prefix).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): every key from the prefix on.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_aim_at_a_byte_size_within_bounds() {
        assert_eq!(page_limit(0, 0), FIRST_PAGE);
        // 200-byte entries: 4 MiB / 200 B.
        assert_eq!(page_limit(1_000, 200_000), 20_971);
        assert_eq!(page_limit(10, 10), MAX_PAGE, "tiny entries");
        assert_eq!(page_limit(1, 1 << 30), FIRST_PAGE, "huge entries");
    }

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/cwm/"), b"/cwm0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
