//! What clients may hold open on a collector (`[limits]`): agent streams in all and per
//! peer address, how long an unfinished profile may wait for its next chunk, and how
//! long an HTTP client may take to send a request's head ([`crate::http_serve`]). A
//! stream beyond a cap is refused with RESOURCE_EXHAUSTED before anything is read from
//! it, and counted in `holmes_ingest_refused_total` by reason. An agent that has no
//! token of its own service (the `"*"` token, or ingest without tokens) may bring new
//! services and instances only while the store holds fewer than `max_services` and
//! `max_instances_per_service` ([`check_new_identity`]); one refused meanwhile is
//! RESOURCE_EXHAUSTED too. (Several streams starting at once may pass a cap by a few.)
//! The memory all agent streams' tables hold is bounded by `max_stream_table_bytes`
//! ([`StreamTableBudget`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holmes_storage::Store;
use serde::Deserialize;
use tonic::Status;

use crate::error::store_status;

/// Agent streams one collector takes at once when nothing else is set.
pub const DEFAULT_MAX_STREAMS: usize = 10_000;
/// Agent streams one peer address (an IPv6 /64) may hold open when nothing else is set.
pub const DEFAULT_MAX_STREAMS_PER_PEER: usize = 512;
/// Services agents without a token of their own service may bring, when nothing else is
/// set.
pub const DEFAULT_MAX_SERVICES: usize = 1_000;
/// Instances one such service may hold, when nothing else is set.
pub const DEFAULT_MAX_INSTANCES_PER_SERVICE: usize = 10_000;
/// How long an HTTP client may take to send a request's head when nothing else is set.
pub const DEFAULT_HTTP_HEADER_TIMEOUT: Duration = Duration::from_secs(20);
/// How long an unfinished profile waits for its next chunk when nothing else is set.
pub const DEFAULT_PROFILE_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Bytes the agent streams' tables may hold on one collector, all streams together,
/// when nothing else is set.
pub const DEFAULT_MAX_STREAM_TABLE_BYTES: u64 = 1 << 30;
/// The smallest `[limits] max_stream_table_bytes` accepted: room for a few streams.
pub const MIN_STREAM_TABLE_BYTES: u64 = 1 << 20;

/// `[limits]`: bounds on what agents and HTTP clients hold open.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Agent streams open at once on this collector; more are refused.
    pub max_streams: usize,
    /// Agent streams open at once from one peer address (IPv6: one /64); more are
    /// refused.
    pub max_streams_per_peer: usize,
    /// How long an unfinished profile may wait for its next chunk, e.g. `"2m"`: then the
    /// stream ends with RESOURCE_EXHAUSTED and the chunks held are dropped (the agent
    /// sends the profile again from its spool).
    #[serde(with = "humantime_serde")]
    pub profile_idle_timeout: Duration,
    /// How long an HTTP client may take to send a request's line and headers (and an
    /// idle keep-alive connection may wait for its next request), e.g. `"20s"`; then the
    /// connection is closed. On the gRPC port, how long a new connection may stay
    /// silent before its first byte.
    #[serde(with = "humantime_serde")]
    pub http_header_timeout: Duration,
    /// Services the store may hold before an agent that has no token of its own service
    /// (the `"*"` token, or ingest without tokens) is refused for a new service.
    pub max_services: usize,
    /// Instances (within `retention_days`) a service may hold before such an agent is
    /// refused for a new instance of it.
    pub max_instances_per_service: usize,
    /// Bytes of memory the agent streams' tables (each stream's stacks defined once, see
    /// [`StreamTableBudget`]) may hold on this collector, all streams together.
    pub max_stream_table_bytes: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_streams: DEFAULT_MAX_STREAMS,
            max_streams_per_peer: DEFAULT_MAX_STREAMS_PER_PEER,
            profile_idle_timeout: DEFAULT_PROFILE_IDLE_TIMEOUT,
            http_header_timeout: DEFAULT_HTTP_HEADER_TIMEOUT,
            max_services: DEFAULT_MAX_SERVICES,
            max_instances_per_service: DEFAULT_MAX_INSTANCES_PER_SERVICE,
            max_stream_table_bytes: DEFAULT_MAX_STREAM_TABLE_BYTES,
        }
    }
}

/// A `[limits]` setting that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("[limits] {key} = {value} is too small; at least {min}")]
pub struct LimitsConfigError {
    key: &'static str,
    value: String,
    min: &'static str,
}

impl LimitsConfig {
    /// Checks that every bound lets at least something through.
    pub fn validate(&self) -> Result<(), LimitsConfigError> {
        let zero = |key, value: usize| {
            (value == 0).then(|| LimitsConfigError {
                key,
                value: value.to_string(),
                min: "1",
            })
        };
        if let Some(e) = zero("max_streams", self.max_streams)
            .or_else(|| zero("max_streams_per_peer", self.max_streams_per_peer))
            .or_else(|| zero("max_services", self.max_services))
            .or_else(|| zero("max_instances_per_service", self.max_instances_per_service))
        {
            return Err(e);
        }
        if self.max_stream_table_bytes < MIN_STREAM_TABLE_BYTES {
            return Err(LimitsConfigError {
                key: "max_stream_table_bytes",
                value: self.max_stream_table_bytes.to_string(),
                min: "1048576",
            });
        }
        for (key, value) in [
            ("profile_idle_timeout", self.profile_idle_timeout),
            ("http_header_timeout", self.http_header_timeout),
        ] {
            if value < Duration::from_secs(1) {
                return Err(LimitsConfigError {
                    key,
                    value: format!("\"{}\"", humantime::format_duration(value)),
                    min: "\"1s\"",
                });
            }
        }
        Ok(())
    }
}

/// The memory all agent streams' tables hold on this collector, against `[limits]
/// max_stream_table_bytes`.
///
/// A stream's tables grow as its agent defines stacks (each bounded by the stream form's
/// caps, `holmes_proto::native::stream`). A new stream is offered the stream form only
/// while the tables hold less than three quarters of the budget; otherwise its agent
/// sends self-contained profiles, which hold nothing between profiles. A stream whose
/// tables grow past the budget hands on the profile just read, then ends with
/// RESOURCE_EXHAUSTED once what it handed on is acknowledged, its tables dropped: its
/// agent reconnects at once and resends nothing but what was not acknowledged.
#[derive(Debug)]
pub struct StreamTableBudget {
    max: u64,
    held: AtomicU64,
}

impl StreamTableBudget {
    /// A budget of `config`'s `max_stream_table_bytes`.
    pub fn new(config: &LimitsConfig) -> Arc<Self> {
        Arc::new(StreamTableBudget {
            max: config.max_stream_table_bytes,
            held: AtomicU64::new(0),
        })
    }

    /// The budget, in bytes.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Bytes all streams' tables hold now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Whether a new stream is offered the stream form (see the type's docs).
    pub fn offers_stream_form(&self) -> bool {
        self.held() < self.max / 4 * 3
    }

    /// A stream's share, holding nothing yet.
    pub fn share(self: &Arc<Self>) -> TableShare {
        TableShare {
            budget: Arc::clone(self),
            held: 0,
        }
    }

    fn add(&self, bytes: u64) -> u64 {
        let held = self.held.fetch_add(bytes, Ordering::Relaxed) + bytes;
        crate::metrics::metrics()
            .ingest_stream_table_bytes
            .set(i64::try_from(held).unwrap_or(i64::MAX));
        held
    }

    fn remove(&self, bytes: u64) {
        let held = self
            .held
            .fetch_sub(bytes, Ordering::Relaxed)
            .saturating_sub(bytes);
        crate::metrics::metrics()
            .ingest_stream_table_bytes
            .set(i64::try_from(held).unwrap_or(i64::MAX));
    }
}

/// One stream's part of the [`StreamTableBudget`]; given back when dropped.
#[derive(Debug)]
pub struct TableShare {
    budget: Arc<StreamTableBudget>,
    held: u64,
}

impl TableShare {
    /// The budget it is a part of.
    pub fn budget(&self) -> &StreamTableBudget {
        &self.budget
    }

    /// Counts the stream's tables at `bytes` now; false when all streams' tables are
    /// then over the budget and this stream grew.
    pub fn set(&mut self, bytes: u64) -> bool {
        if bytes <= self.held {
            self.budget.remove(self.held - bytes);
            self.held = bytes;
            return true;
        }
        let total = self.budget.add(bytes - self.held);
        self.held = bytes;
        total <= self.budget.max
    }
}

impl Drop for TableShare {
    fn drop(&mut self) {
        self.budget.remove(self.held);
    }
}

/// The agent streams open now, in all and per peer.
#[derive(Debug)]
pub struct StreamSlots {
    max_streams: usize,
    max_per_peer: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    per_peer: HashMap<IpAddr, usize>,
}

/// One open stream's place; given back when dropped.
#[derive(Debug)]
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    peer: Option<IpAddr>,
}

/// The address a peer is counted under: an IPv6 address's /64 (one host usually has a
/// whole one), an IPv4 address (mapped or not) as itself.
fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
        v4 => v4,
    }
}

impl StreamSlots {
    /// Slots for `config`'s caps.
    pub fn new(config: &LimitsConfig) -> Arc<Self> {
        Arc::new(StreamSlots {
            max_streams: config.max_streams,
            max_per_peer: config.max_streams_per_peer,
            open: Mutex::new(Open::default()),
        })
    }

    /// A place for a new stream from `peer` (unknown: counted in the total only), or
    /// RESOURCE_EXHAUSTED naming the cap.
    pub fn take(self: &Arc<Self>, peer: Option<IpAddr>) -> Result<StreamSlot, Status> {
        let peer = peer.map(peer_key);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.total >= self.max_streams {
            crate::metrics::metrics().ingest_refused("too_many_streams");
            return Err(Status::resource_exhausted(format!(
                "this collector has {} agent streams open, the limit is {} ([limits] max_streams); retry later",
                open.total, self.max_streams
            )));
        }
        if let Some(peer) = peer {
            let held = open.per_peer.get(&peer).copied().unwrap_or(0);
            if held >= self.max_per_peer {
                crate::metrics::metrics().ingest_refused("too_many_streams_per_peer");
                return Err(Status::resource_exhausted(format!(
                    "{peer} has {held} agent streams open, the limit is {} ([limits] max_streams_per_peer); retry later",
                    self.max_per_peer
                )));
            }
            open.per_peer.insert(peer, held + 1);
        }
        open.total += 1;
        Ok(StreamSlot {
            slots: Arc::clone(self),
            peer,
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        if let Some(peer) = self.peer {
            if let Some(held) = open.per_peer.get_mut(&peer) {
                *held = held.saturating_sub(1);
                if *held == 0 {
                    open.per_peer.remove(&peer);
                }
            }
        }
    }
}

/// Refuses the instance `instance` of `service` when it is new and its service already
/// holds `max_instances_per_service` instances, or when the service is new and the
/// store already holds `max_services` services. For agents without a token of their own
/// service.
pub async fn check_new_identity(
    store: &dyn Store,
    config: &LimitsConfig,
    service: &str,
    instance: &str,
) -> Result<(), Status> {
    let instances = store
        .list_instances(service)
        .await
        .map_err(|e| store_status(&e))?;
    if instances.iter().any(|i| i.instance_id == instance) {
        return Ok(());
    }
    if instances.len() >= config.max_instances_per_service {
        crate::metrics::metrics().ingest_refused("too_many_instances");
        return Err(Status::resource_exhausted(format!(
            "instance {instance:?} is new and service {service:?} already has {} instances, the limit for a service without its own token ([limits] max_instances_per_service)",
            instances.len()
        )));
    }
    if instances.is_empty() {
        let services = store.list_services(0).await.map_err(|e| store_status(&e))?;
        if services.len() >= config.max_services {
            crate::metrics::metrics().ingest_refused("too_many_services");
            return Err(Status::resource_exhausted(format!(
                "service {service:?} is new and this collector already has {} services, the limit for services without their own token ([limits] max_services)",
                services.len()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_peer_and_in_all_and_given_back() {
        let slots = StreamSlots::new(&LimitsConfig {
            max_streams: 3,
            max_streams_per_peer: 2,
            ..LimitsConfig::default()
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let b_same_64: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        let a1 = slots.take(Some(a)).unwrap();
        let _a2 = slots.take(Some(a)).unwrap();
        let refused = slots.take(Some(a)).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert_eq!(refused.message(), "10.0.0.1 has 2 agent streams open, the limit is 2 ([limits] max_streams_per_peer); retry later");
        let _b1 = slots.take(Some(b)).unwrap();
        let refused = slots.take(Some(b_same_64)).unwrap_err();
        assert!(
            refused
                .message()
                .starts_with("this collector has 3 agent streams open, the limit is 3"),
            "{refused:?}"
        );
        drop(a1);
        let _b2 = slots.take(Some(b_same_64)).unwrap();
        assert!(slots.take(Some(b)).is_err());
    }

    #[test]
    fn zero_caps_are_refused() {
        let config = LimitsConfig {
            max_streams_per_peer: 0,
            ..LimitsConfig::default()
        };
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "[limits] max_streams_per_peer = 0 is too small; at least 1"
        );
        let config = LimitsConfig {
            max_stream_table_bytes: 1000,
            ..LimitsConfig::default()
        };
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "[limits] max_stream_table_bytes = 1000 is too small; at least 1048576"
        );
    }

    #[test]
    fn stream_table_shares_add_up_and_are_given_back() {
        let budget = StreamTableBudget::new(&LimitsConfig {
            max_stream_table_bytes: 4000 << 10,
            ..LimitsConfig::default()
        });
        let (mut a, mut b) = (budget.share(), budget.share());
        assert!(a.set(2000 << 10) && b.set(900 << 10));
        assert_eq!(budget.held(), 2900 << 10);
        assert!(budget.offers_stream_form(), "2900 KiB of 4000");
        assert!(b.set(1000 << 10));
        assert!(
            !budget.offers_stream_form(),
            "3000 KiB of 4000: three quarters"
        );
        // Growing past the budget says so; shrinking or standing still never does.
        assert!(!a.set(3001 << 10));
        assert!(a.set(3001 << 10) && a.set(100 << 10));
        assert_eq!(budget.held(), 1100 << 10);
        drop(b);
        assert_eq!(budget.held(), 100 << 10);
        drop(a);
        assert_eq!(budget.held(), 0);
    }
}
