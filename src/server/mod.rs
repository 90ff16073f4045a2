//! The client side: the accept loop on each listening socket ([`listener`], handed to the
//! runtime at start) and the connection loop of each client connection ([`conn`]).

pub mod conn;
pub mod listener;
