//! The collector against the ecosystem's real programs and libraries, one module per
//! protocol: Prometheus scraping `/metrics`, Grafana's Pyroscope clients pushing
//! profiles, OTLP profiles built with OpenTelemetry's own classes, and Alertmanager in
//! both directions. Each finds its program on the PATH (or its Python in
//! `HOLMES_TEST_PYTHON*`) and says it is skipped without it, unless the matching
//! `HOLMES_TEST_REQUIRE_*` variable is `1` (deploy/dev/test.sh sets them all).

mod alertmanager;
mod otlp;
mod prometheus;
mod pyroscope;
mod support;
