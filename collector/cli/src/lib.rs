//! The `holmes` command line and the client it speaks the collector's HTTP API with.
//!
//! [`api_client`] asks a collector (`http://` or `https://`, with a bearer token) and
//! decodes its answers into `holmes-api`'s documents; the `holmes` binary prints them for
//! a person (tables fitted to the terminal, local and relative times, colour on a
//! terminal, agents' text with its control characters escaped, a progress bar on
//! downloads), or as the API's JSON with `--json`. Tests, benchmarks and the load
//! generator use the same client.

pub mod api_client;
