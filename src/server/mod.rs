//! The client side: listening sockets ([`listener`]) and client connections ([`conn`]).

pub mod conn;
pub mod listener;
