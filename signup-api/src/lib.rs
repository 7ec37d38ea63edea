//! The Surge signup API.
