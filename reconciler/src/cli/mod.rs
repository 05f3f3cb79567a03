//! The command line: arguments, output and progress. The only layer that prints.

pub mod progress;
