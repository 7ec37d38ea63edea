//! A headless participant (placeholder while it is written).
