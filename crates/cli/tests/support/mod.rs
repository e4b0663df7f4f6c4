//! Shared helpers of the CLI's integration tests.

pub mod netns;
