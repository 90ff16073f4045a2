//! Request policies: authentication (more policies live beside it).
pub mod auth;
