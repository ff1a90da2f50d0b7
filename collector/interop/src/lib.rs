//! No library: this crate holds the collector's interoperability tests
//! (`tests/interop/`), against real third-party programs and libraries. See
//! `collector/README.md`, "Speaking the ecosystem's protocols".
