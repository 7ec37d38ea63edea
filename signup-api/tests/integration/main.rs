//! Integration tests of the API over real sockets, against SQLite, PostgreSQL and Redis.
//! One test binary (modules below) keeps link time down on a small machine.
#![allow(clippy::unwrap_used)]

mod common;

mod accounts;
mod bad_input;
mod calls;
mod client_addr;
mod contacts;
mod database_down;
mod housekeeping;
mod login_guessing;
mod participants;
mod presence;
mod presence_by_connection;
mod redis_cluster_failover;
mod redis_limits;
mod rooms;
mod streams;
