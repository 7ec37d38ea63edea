//! The Surge load generator.
