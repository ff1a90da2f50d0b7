//! Nothing here: this crate holds tests (see its README).
