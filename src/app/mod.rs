//! The command-line front ends: each takes its command's flags
//! ([`crate::cli`]) and runs it. Nothing below this module reads the flags.

pub mod demo;
pub mod owners;
pub mod process;
pub mod publish;
pub mod publish_ownership;
pub mod run;
