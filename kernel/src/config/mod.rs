//! The config file: its validated model ([`model`]) and the parser that reports every problem
//! at once with line and column ([`parse`]).

pub mod model;
pub mod parse;

mod graph;
mod service;
mod values;

#[cfg(test)]
mod tests;

pub use model::*;
pub use parse::{parse, parse_in, ConfigError, ConfigErrors, MAX_REPORTED_ERRORS};
