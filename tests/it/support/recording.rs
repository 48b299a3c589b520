//! `RecordingModule`: a module that records deliveries (and can be told to fail or stall).

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use switchyard::modules::{Delivery, DeliveryError, Module};

#[derive(Debug, Default)]
pub struct RecordingModule {
    pub deliveries: Mutex<Vec<Delivery>>,
    pub fail: AtomicBool,
    pub stall: Option<Duration>,
    /// Deliveries that have begun (before any stall).
    pub started: AtomicUsize,
}

impl RecordingModule {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn stalling(delay: Duration) -> Arc<Self> {
        Arc::new(Self {
            stall: Some(delay),
            ..Self::default()
        })
    }

    pub fn failing() -> Arc<Self> {
        let m = Self::default();
        m.fail.store(true, Ordering::SeqCst);
        Arc::new(m)
    }

    pub fn taken(&self) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl Module for RecordingModule {
    fn name(&self) -> &'static str {
        "recording"
    }

    async fn deliver(&self, delivery: &Delivery) -> Result<(), DeliveryError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        if let Some(delay) = self.stall {
            tokio::time::sleep(delay).await;
        }
        if self.fail.load(Ordering::SeqCst) {
            return Err(DeliveryError::Unavailable {
                module: "recording",
                reason: "told to fail".into(),
            });
        }
        self.deliveries.lock().unwrap().push(delivery.clone());
        Ok(())
    }
}
