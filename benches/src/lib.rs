//! Criterion benchmarks live in `benches/`; this library only hosts shared fixtures.
