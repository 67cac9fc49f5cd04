//! Ownership: who owns the code a finding points at, and why.
//!
//! - [`codeowners`]: CODEOWNERS files with GitHub's semantics (and GitLab's
//!   sections as an option), compiled into a fast matcher.
//! - [`explain_codeowners`]: `custody owners explain --codeowners`.
//! - [`catalog`]: Backstage catalog entities linked to repositories.
//! - [`config`]: the ownership configuration (teams, aliases, repositories,
//!   mappings, fallbacks), validated.
//! - [`resolver`]: the attribution order, with an explanation per answer.

pub mod catalog;
pub mod codeowners;
pub mod config;
pub mod explain_codeowners;
pub mod resolver;

pub use config::{Ownership, OwnershipError};
pub use resolver::{Reloadable, Resolver};
