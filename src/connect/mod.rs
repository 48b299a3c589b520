//! Connector mode: a public instance keeps webhooks for private networks in channels, and a
//! connector inside the network pulls them over one outbound connection, resuming where it
//! left off.
//!
//! [`wire`] is the message format, [`store`] the channels' durable queues.

pub mod store;
pub mod wire;

pub use store::{Channel, ChannelError, ChannelReport, Channels, Counts, Stored};
pub use wire::Header;
