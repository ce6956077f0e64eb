//! The operating-system surface the domain modules share, written once: pidfds ([`pidfd`]),
//! process scans over `/proc` ([`proc`]) and the account files ([`accounts`]). No HTTP, no domain
//! types: plain values in, plain values (or `std::io::Error`) out.

pub mod accounts;
pub mod pidfd;
pub mod proc;
