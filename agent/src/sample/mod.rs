//! Sampling, the first stage: the process's vital signs, read on the agent thread every
//! interval and handed to the rules.
//!
//! - [`sampler`]: one round of readings — CPU % of the cores the process may use, memory
//!   % of its limit, RSS, threads, open descriptors, CPU throttling — and the cheap reads
//!   the fast path takes between two rounds;
//! - [`procfs`]: the `/proc` readers;
//! - [`cgroup`]: the container's CPU and memory limits;
//! - [`runtimes`]: the tokio runtimes whose alive tasks are the `tasks` metric.

pub(crate) mod cgroup;
pub(crate) mod procfs;
pub(crate) mod runtimes;
mod sampler;

pub(crate) use sampler::Sampler;
