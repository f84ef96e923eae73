//! What guerite keeps between runs: the state file and its journal of swaps in progress, the
//! lock that keeps two runs apart, and the atomic write behind both.

pub mod journal;
pub mod lock;
pub mod state;
