//! bookrelay: a std-only HTTP/1.1 load balancer and node simulator for a
//! travel-booking service.
//!
//! A **relay** accepts client connections and forwards each request to one of
//! several **nodes**, chosen by a [`balancer`]. A node serves the booking API
//! from its own LRU [`cache`] over one shared SQLite [`store`].
//!
//! One request, end to end:
//!
//! ```text
//! client ──TCP──▶ http::conn (framing, keep-alive) ──▶ node::routes
//!                                                       ├─ GET /bookings/{id}: cache HIT ─▶ JSON
//!                                                       │                      MISS ─▶ store ─▶ cache
//!                                                       └─ POST/PATCH/DELETE: store (commit) ─▶ invalidate
//! ```
//!
//! | module | owns |
//! |---|---|
//! | [`cli`] | argv to configuration, help text |
//! | [`client`] | a small keep-alive HTTP client for examples and benchmarks |
//! | [`http`] | request parsing, response writing, one connection's loop |
//! | [`relay`] | accept, forward over pooled connections, health, `/_relay/*` |
//! | [`node`] | the node server and its booking routes |
//! | [`sim`] | the node simulator: node threads the relay can kill, revive, make sick and add |
//! | [`booking`] | the booking record and its field rules (pure) |
//! | [`store`] | SQLite: schema, CRUD, paging, idempotency, change log, group commit |
//! | [`cache`] | the per-node LRU with TTL and invalidation |
//! | [`balancer`] | the node-selection strategies, one table of them (pure) |
//! | [`dashboard`] | the live HTML page at `/_relay/` |
//! | [`json`], [`rand`], [`names`], [`sample`] | small pure helpers |
//! | [`limits`] | how many clients the open-files limit allows |
//! | [`temp_dir`] | self-removing directories for tests and examples |

pub mod balancer;
pub mod booking;
pub mod cache;
pub mod cli;
pub mod client;
pub mod dashboard;
pub mod http;
pub mod json;
pub mod launch;
pub mod limits;
pub mod names;
pub mod node;
pub mod rand;
pub mod relay;
pub mod sample;
pub mod sim;
pub mod store;
pub mod temp_dir;
