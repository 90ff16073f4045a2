//! The state the layers share, below all of them: the cross-core state ([`shared`]: the active
//! config generation, per-upstream atomics, the listener set and discovery), a worker's own view
//! of it ([`worker`]: [`worker::Worker`], [`worker::Snapshot`]), the drain [`latch`], and the set
//! of listen addresses ([`listeners`]). Plain data and its methods: threads, sockets being
//! served and signals belong to `runtime`, which, like `server`, `pipeline` and `admin`, builds
//! on this module; it imports none of them.

pub mod latch;
pub mod listeners;
pub mod shared;
pub mod worker;
