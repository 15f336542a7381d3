//! Errors raised while building model values from untrusted input.

use snafu::Snafu;

/// Errors from validating labels, matchers and tenant ids.
#[derive(Debug, Snafu)]
#[snafu(visibility(pub(crate)))]
pub enum Error {
    #[snafu(display(
        "invalid regular expression {pattern:?} in matcher for label {name:?}: {source}"
    ))]
    InvalidRegex {
        name: String,
        pattern: String,
        source: Box<regex::Error>,
    },

    #[snafu(display("invalid tenant id {id:?}: {reason}"))]
    InvalidTenant { id: String, reason: &'static str },

    #[snafu(display("duplicate label name {name:?} in label set"))]
    DuplicateLabel { name: String },
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
