//! `stratus agent`: scrape targets anywhere (behind NAT, firewalls) and
//! push them out by remote write, losing nothing across outages.
//!
//! The two halves meet at [`sink::Sink`]:
//!
//! - scrape side: Prometheus-format configuration, service discovery,
//!   relabeling, the scrape loops and the exposition-format parser produce
//!   [`sink::Batch`]es of samples (with staleness markers and the
//!   synthesized `up`/`scrape_*` series);
//! - push side: a durable on-disk queue behind the sink, and sharded
//!   remote-write senders with retries that drain it.

pub mod config;
pub mod discovery;
pub mod httpclient;
pub mod queue;
pub mod relabel;
pub mod remote;
pub mod run;
pub mod scrape;
pub mod sink;
pub mod targets_api;
pub mod textparse;
