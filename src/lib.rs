//! Switchyard: a read-only, etcd-driven webhook receiver and router.
//!
//! - [`settings`]: process settings (flags and environment).
//! - [`keys`]: validated names and the etcd key layout; [`clock`]: epoch milliseconds.
//! - [`config`]: the ground floor: secrets, config errors, `{$VAR}` substitution, sealed values,
//!   address lists, connection entries.
//! - [`webhook`]: a webhook entry and whether it is valid (its [`modules`] and [`verify`] checks).
//! - [`provider`]: how entries arrive (files or etcd) and reach the [`cache`].
//! - [`dispatch`]: a live route and how a delivery runs through its [`modules`], whose clients
//!   come from the [`connections`] pool.
//! - [`verify`]: per-webhook verification, limits and credential cleanup.
//! - [`spool`]: deliveries stored on local disk until a destination takes them; [`redelivery`]
//!   hands them to the live routes.
//! - [`connect`]: connector mode's channels (durable, numbered queues a connector pulls);
//!   [`connector`] is the private side that pulls one and delivers it with its own webhooks.
//! - [`tools`]: the `check`, `migrate`, `export`, `seal` and `spool` subcommands.
//! - [`admission`]: how many request bodies may be read at once, overall and per client, and how
//!   many of their bytes may be held.
//! - [`dedup`]: delivery ids seen within a webhook's window, answered as duplicates.
//! - [`http`]: the HTTP surface; [`startup`] wires everything into an `Application`.

pub mod admission;
pub mod cache;
pub mod clock;
pub mod condition;
pub mod config;
pub mod connect;
pub mod connections;
pub mod connector;
pub mod dedup;
pub mod dispatch;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod modules;
pub mod provider;
pub mod redelivery;
pub mod settings;
pub mod shutdown;
pub mod spool;
pub mod startup;
pub mod telemetry;
pub mod tools;
pub mod verify;
pub mod webhook;
