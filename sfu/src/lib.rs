//! The Surge SFU shard.
