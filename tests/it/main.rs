//! One integration binary: every end-to-end test against the real application and real services.

mod support;

mod connector;
mod dedup;
mod delivery_http;
mod delivery_https;
mod delivery_kafka;
mod delivery_redis;
mod etcd_cluster;
mod etcd_recovery;
mod etcd_scale;
mod etcd_security;
mod etcd_watch;
mod file_backend;
mod handshakes;
mod hardening;
mod http_api;
mod instances;
mod large_bodies;
mod observability;
mod openapi;
mod providers;
mod routing;
mod sealed;
mod settings;
mod shutdown;
mod spool;
mod spool_damage;
mod spool_disk;
mod tenant_attacks;
mod tools;
mod traces;
mod verification;
