//! Redis's own count of the commands it ran (`INFO stats`, `INFO commandstats`), read at
//! both ends of the steady window: what the API cost Redis while it held users online.

use std::collections::BTreeMap;

use redis::aio::MultiplexedConnection;

/// Errors reading Redis's counters.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisInfoError {
    #[error("--redis-url: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("INFO stats has no total_commands_processed")]
    NoTotal,
}

/// The counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisCounters {
    /// `total_commands_processed`.
    pub total: u64,
    /// `calls` of each command (`cmdstat_<name>`), commands run by scripts included.
    pub calls: BTreeMap<String, u64>,
}

/// The command this probe itself sends, left out of the deltas.
const OWN_COMMAND: &str = "info";

impl RedisCounters {
    /// Parses the text of `INFO stats` followed by `INFO commandstats`.
    pub fn parse(info: &str) -> Result<Self, RedisInfoError> {
        let mut counters = Self::default();
        let mut total = None;
        for line in info.lines().map(str::trim) {
            if let Some(v) = line.strip_prefix("total_commands_processed:") {
                total = v.parse().ok();
            } else if let Some(rest) = line.strip_prefix("cmdstat_") {
                let Some((name, fields)) = rest.split_once(':') else {
                    continue;
                };
                let calls = fields
                    .split(',')
                    .find_map(|f| f.strip_prefix("calls="))
                    .and_then(|v| v.parse().ok());
                if let Some(calls) = calls {
                    counters.calls.insert(name.to_owned(), calls);
                }
            }
        }
        counters.total = total.ok_or(RedisInfoError::NoTotal)?;
        Ok(counters)
    }

    /// What happened between `earlier` and `self`, the probe's own INFO calls left out.
    pub fn since(&self, earlier: &RedisCounters) -> RedisDelta {
        let mut by_command = BTreeMap::new();
        for (name, calls) in &self.calls {
            let before = earlier.calls.get(name).copied().unwrap_or(0);
            let delta = calls.saturating_sub(before);
            if delta > 0 && name != OWN_COMMAND {
                by_command.insert(name.clone(), delta);
            }
        }
        let own = self
            .calls
            .get(OWN_COMMAND)
            .copied()
            .unwrap_or(0)
            .saturating_sub(earlier.calls.get(OWN_COMMAND).copied().unwrap_or(0));
        RedisDelta {
            processed: self.total.saturating_sub(earlier.total).saturating_sub(own),
            by_command,
        }
    }
}

/// Commands between two readings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedisDelta {
    /// `total_commands_processed` grew by this (the probe's INFO calls taken off).
    pub processed: u64,
    /// Calls per command; a script counts as its `evalsha` plus each command it ran.
    pub by_command: BTreeMap<String, u64>,
}

/// A connection that reads the counters.
pub struct RedisProbe {
    conn: MultiplexedConnection,
}

impl RedisProbe {
    pub async fn connect(url: &str) -> Result<Self, RedisInfoError> {
        let client = redis::Client::open(url)?;
        let conn = client.get_multiplexed_async_connection().await?;
        Ok(Self { conn })
    }

    pub async fn read(&mut self) -> Result<RedisCounters, RedisInfoError> {
        // Two commands rather than `INFO stats commandstats`, which older servers refuse.
        let stats: String = redis::cmd("INFO")
            .arg("stats")
            .query_async(&mut self.conn)
            .await?;
        let commands: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut self.conn)
            .await?;
        RedisCounters::parse(&format!("{stats}\n{commands}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# Stats\r\ntotal_connections_received:3\r\ntotal_commands_processed:100\r\n\
        # Commandstats\r\ncmdstat_evalsha:calls=10,usec=50,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_info:calls=4,usec=40,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n";
    const AFTER: &str = "# Stats\r\ntotal_commands_processed:160\r\n\
        # Commandstats\r\ncmdstat_evalsha:calls=50,usec=250,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_set:calls=40,usec=80,usec_per_call=2.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_info:calls=6,usec=60,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n";

    #[test]
    fn deltas_leave_out_the_probes_own_info_calls() {
        let before = RedisCounters::parse(BEFORE).unwrap();
        let after = RedisCounters::parse(AFTER).unwrap();
        assert_eq!(before.total, 100);
        let d = after.since(&before);
        assert_eq!(d.processed, 58);
        assert_eq!(
            d.by_command.into_iter().collect::<Vec<_>>(),
            [("evalsha".to_owned(), 40), ("set".to_owned(), 40)]
        );
    }

    #[test]
    fn info_without_the_total_is_an_error() {
        assert!(matches!(
            RedisCounters::parse("cmdstat_get:calls=1"),
            Err(RedisInfoError::NoTotal)
        ));
    }
}
