//! The server's state: sessions and streams ([`registry`], pure state that returns the
//! media effects of each change) and the one door into it ([`hub`]).

pub mod hub;
pub mod registry;
