//! Admission of request bodies: how many may be read at once, overall and per client, and how
//! many of their bytes may be held in memory at once.
//!
//! A body being read holds a reader slot, never a delivery slot (`MAX_IN_FLIGHT`): a client that
//! opens connections and stalls its uploads can take at most its own share of the readers, for at
//! most `BODY_READ_TIMEOUT_MS`, and never the capacity that complete requests are delivered with.
//! Every body also reserves its bytes from one budget (`BODY_MEMORY_BYTES`) as they arrive and
//! holds them until its request is answered, so memory is bounded by bytes, not by
//! (readers + in flight) x the largest body allowed.

use std::{
    net::{IpAddr, Ipv6Addr},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use dashmap::DashMap;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a body may not be read now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every reader slot is taken (503, the server is busy).
    Busy,
    /// This client already sends its share of bodies (429, the client is the cause).
    ClientShare,
}

/// The reader slots of one process.
#[derive(Debug, Clone)]
pub struct BodyReaders {
    slots: Arc<Semaphore>,
    max: usize,
    per_client: Arc<DashMap<IpAddr, u32>>,
    max_per_client: u32,
}

/// One body being read; frees its slot and its client's share on drop.
#[derive(Debug)]
pub struct ReaderSlot {
    _slot: OwnedSemaphorePermit,
    client: IpAddr,
    per_client: Arc<DashMap<IpAddr, u32>>,
}

/// The unit a client's share is counted in: the address, or its /64 for IPv6 (one host's
/// usual allocation, so rotating through addresses of one prefix does not multiply the share).
fn client_unit(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
    }
}

impl BodyReaders {
    pub fn new(max: usize, max_per_client: u32) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
            per_client: Arc::new(DashMap::new()),
            max_per_client,
        }
    }

    /// Takes a reader slot for `client`, without waiting.
    pub fn admit(&self, client: IpAddr) -> Result<ReaderSlot, Refusal> {
        let client = client_unit(client);
        {
            // The map guard is released at the end of this block, before anything awaits.
            let mut share = self.per_client.entry(client).or_insert(0);
            if *share >= self.max_per_client {
                return Err(Refusal::ClientShare);
            }
            *share += 1;
        }
        match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(slot) => Ok(ReaderSlot {
                _slot: slot,
                client,
                per_client: Arc::clone(&self.per_client),
            }),
            Err(_) => {
                release(&self.per_client, client);
                Err(Refusal::Busy)
            }
        }
    }

    /// Bodies being read now.
    pub fn reading(&self) -> usize {
        self.max.saturating_sub(self.slots.available_permits())
    }
}

fn release(per_client: &DashMap<IpAddr, u32>, client: IpAddr) {
    per_client.remove_if_mut(&client, |_, share| {
        *share = share.saturating_sub(1);
        *share == 0
    });
}

impl Drop for ReaderSlot {
    fn drop(&mut self) {
        release(&self.per_client, self.client);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_client_gets_its_share_and_others_still_get_slots() {
        let readers = BodyReaders::new(10, 2);
        let a1 = readers.admit(ip("192.0.2.1")).unwrap();
        let _a2 = readers.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(
            readers.admit(ip("192.0.2.1")).unwrap_err(),
            Refusal::ClientShare
        );
        let _b = readers.admit(ip("192.0.2.2")).unwrap();
        drop(a1);
        assert!(readers.admit(ip("192.0.2.1")).is_ok());
    }

    #[test]
    fn ipv6_addresses_of_one_64_share_one_budget() {
        let readers = BodyReaders::new(10, 1);
        let _a = readers.admit(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            readers.admit(ip("2001:db8:1:2::ffff")).unwrap_err(),
            Refusal::ClientShare
        );
        assert!(readers.admit(ip("2001:db8:1:3::1")).is_ok());
    }

    #[test]
    fn no_slot_left_is_busy_and_gives_the_share_back() {
        let readers = BodyReaders::new(1, 5);
        let held = readers.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(readers.admit(ip("192.0.2.2")).unwrap_err(), Refusal::Busy);
        assert_eq!(readers.reading(), 1);
        drop(held);
        assert!(readers.per_client.is_empty(), "shares are returned");
        assert!(readers.admit(ip("192.0.2.2")).is_ok());
    }
}

/// The bytes of request bodies held in memory at once: the one owner of that count.
#[derive(Debug, Clone)]
pub struct BodyMemory {
    used: Arc<AtomicU64>,
    limit: u64,
}

/// Bytes one body holds from the budget; given back on drop.
#[derive(Debug)]
pub struct Reservation {
    used: Arc<AtomicU64>,
    limit: u64,
    bytes: u64,
}

/// The budget has no room for these bytes now (503 `overloaded`: the sender retries later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoRoom;

impl BodyMemory {
    pub fn new(limit: u64) -> Self {
        Self {
            used: Arc::new(AtomicU64::new(0)),
            limit,
        }
    }

    /// Reserves `bytes` (0 for a body of unknown length, grown as it arrives).
    pub fn reserve(&self, bytes: u64) -> Result<Reservation, NoRoom> {
        let mut reservation = Reservation {
            used: Arc::clone(&self.used),
            limit: self.limit,
            bytes: 0,
        };
        reservation.grow_to(bytes)?;
        Ok(reservation)
    }

    /// Bytes reserved now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }
}

impl Reservation {
    /// Holds `total` bytes in all (no change when it already holds as many).
    pub fn grow_to(&mut self, total: u64) -> Result<(), NoRoom> {
        let Some(more) = total.checked_sub(self.bytes).filter(|&more| more > 0) else {
            return Ok(());
        };
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(more).filter(|&next| next <= self.limit)
            })
            .map_err(|_| NoRoom)?;
        self.bytes = total;
        Ok(())
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod memory_tests {
    use super::*;

    #[test]
    fn reservations_stay_within_the_budget_and_give_back_on_drop() {
        let memory = BodyMemory::new(100);
        let mut a = memory.reserve(60).unwrap();
        assert_eq!(memory.reserve(41).unwrap_err(), NoRoom);
        let b = memory.reserve(40).unwrap();
        assert_eq!(memory.used(), 100);
        assert_eq!(
            a.grow_to(61),
            Err(NoRoom),
            "a refused growth changes nothing"
        );
        assert_eq!((a.bytes(), memory.used()), (60, 100));
        drop(b);
        a.grow_to(100).unwrap();
        a.grow_to(10).unwrap();
        assert_eq!((a.bytes(), memory.used()), (100, 100), "never shrinks");
        drop(a);
        assert_eq!(memory.used(), 0);
        let empty = memory.reserve(0).unwrap();
        assert_eq!(empty.bytes(), 0);
        assert_eq!(memory.reserve(u64::MAX).unwrap_err(), NoRoom);
    }
}
