//! The Surge load generator: open-loop signup floods (with logins and presence heartbeats),
//! calls with headless participants, a rival's outage (both at once, the new users holding
//! their presence streams), and the cost of holding users online, with live progress and a
//! report people can read.
//!
//! The binary is a thin shell over [`run`]; tests call the modes directly
//! ([`signup::run`]) against an in-process Surge.

pub mod account;
pub mod calls;
pub mod client;
pub mod duration;
pub mod hash_rate;
pub mod identity;
pub mod janus;
pub mod join_breakdown;
pub mod network_change;
pub mod online;
pub mod outage;
pub mod presence;
pub mod presence_stream;
pub mod proc_stats;
mod progress;
pub mod report;
pub mod schedule;
pub mod signup;
pub mod sse;
pub mod stats;

/// Locks `m`, also when a panic elsewhere poisoned it: the loadgen's shared counts stay
/// usable (such a panic is a bug, reported by its task).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Command-line interface of `surge-loadgen`.
#[derive(Debug, Parser)]
#[command(
    name = "surge-loadgen",
    version,
    about = "Load generator for Surge: signup floods, calls and presence, with a report"
)]
pub struct Cli {
    /// Write result.json and report.html into this directory.
    #[arg(long, global = true, env = "SURGE_LOADGEN_OUT")]
    pub out: Option<PathBuf>,
    /// No progress output (the verdict line is still printed).
    #[arg(long, short, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// The modes.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open-loop signup flood (optionally with logins and presence heartbeats).
    Signup(signup::SignupArgs),
    /// Rooms of headless participants over real UDP, joined through the API.
    Calls(calls::CallsArgs),
    /// A rival's outage: the signup flood (outage profile, every new user logging in), the
    /// new users holding their presence streams, and the first of them calling each other.
    #[command(
        mut_arg("profile", |a| a.default_value("outage")),
        mut_arg("time_scale", |a| a.default_value("60")),
        mut_arg("duration", |a| a.default_value("3m")),
        mut_arg("login_share", |a| a.default_value("1"))
    )]
    Outage(outage::OutageArgs),
    /// Users held online (presence streams or heartbeats) and what that costs the API.
    Presence(presence::PresenceArgs),
    /// Raw Argon2id hashes/s on this machine (the ceiling for signups/s).
    HashRate(hash_rate::HashRateArgs),
}

/// Runs a mode; returns whether its verdict passed.
pub async fn run(cli: Cli) -> anyhow::Result<bool> {
    match cli.command {
        Command::Signup(args) => {
            let result = signup::run(&args, cli.quiet).await?;
            println!("{}", result.verdict.line);
            if let Some(dir) = &cli.out {
                let written = report::write(dir, &result, &report::signup_page(&result))
                    .context("writing the report")?;
                println!("report: {}", written.html.display());
            }
            Ok(result.verdict.pass)
        }
        Command::Calls(args) => {
            let result = calls::run(&args, cli.quiet).await?;
            print!("{}", result.join_phases.table());
            if let Some(n) = &result.network_changes {
                print!("{}", n.table());
            }
            println!("{}", result.verdict.line);
            if let Some(dir) = &cli.out {
                let written = report::write(dir, &result, &report::calls_page(&result))
                    .context("writing the report")?;
                println!("report: {}", written.html.display());
            }
            Ok(result.verdict.pass)
        }
        Command::Outage(args) => {
            let result = outage::run(&args, cli.quiet).await?;
            if let Some(calls) = &result.calls {
                print!("{}", calls.join_phases.table());
            }
            println!("{}", result.verdict.line);
            if let Some(dir) = &cli.out {
                let written = report::write(dir, &result, &report::outage_page(&result))
                    .context("writing the report")?;
                println!("report: {}", written.html.display());
            }
            Ok(result.verdict.pass)
        }
        Command::Presence(args) => {
            let result = presence::run(&args, cli.quiet).await?;
            print!("{}", result.table());
            println!("{}", result.verdict.line);
            if let Some(dir) = &cli.out {
                let written = report::write(dir, &result, &report::presence_page(&result))
                    .context("writing the report")?;
                println!("report: {}", written.html.display());
            }
            Ok(result.verdict.pass)
        }
        Command::HashRate(args) => {
            let rate = tokio::task::spawn_blocking(move || hash_rate::measure(&args))
                .await
                .context("hash-rate thread")??;
            println!(
                "argon2id m={} KiB t={}: {:.1} hashes/s on {} threads ({:.1} ms per hash)",
                rate.m_kib, rate.t, rate.hashes_per_s, rate.threads, rate.ms_per_hash
            );
            if let Some(dir) = &cli.out {
                std::fs::create_dir_all(dir).context("creating --out")?;
                std::fs::write(
                    dir.join("hash-rate.json"),
                    serde_json::to_vec_pretty(&rate)?,
                )
                .context("writing hash-rate.json")?;
            }
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command};
    use crate::calls::IceTransportArg;

    fn ice_transport(args: &[&str]) -> Result<IceTransportArg, clap::Error> {
        let cli = Cli::try_parse_from(["surge-loadgen", "calls"].iter().chain(args))?;
        match cli.command {
            Command::Calls(calls) => Ok(calls.ice_transport),
            _ => panic!("not the calls command"),
        }
    }

    #[test]
    fn outage_defaults_to_the_outage_profile_with_every_new_user_logging_in() {
        let cli =
            Cli::try_parse_from(["surge-loadgen", "outage"]).unwrap_or_else(|e| panic!("{e}"));
        let Command::Outage(args) = cli.command else {
            panic!("not the outage command")
        };
        let defaults = crate::outage::OutageArgs::new("http://127.0.0.1:8080");
        assert_eq!(args.signup.profile, defaults.signup.profile);
        assert_eq!(args.signup.time_scale, defaults.signup.time_scale);
        assert_eq!(args.signup.duration, defaults.signup.duration);
        assert_eq!(args.signup.login_share, defaults.signup.login_share);
        assert_eq!((args.rooms, args.room_size), (6, 3));
        // The signup command keeps its own defaults.
        let cli =
            Cli::try_parse_from(["surge-loadgen", "signup"]).unwrap_or_else(|e| panic!("{e}"));
        let Command::Signup(signup) = cli.command else {
            panic!("not the signup command")
        };
        assert_eq!(signup.login_share, 0.0);
        assert!(signup.duration.is_none());
    }

    #[test]
    fn ice_transport_is_all_unless_relay_is_asked_for() {
        assert_eq!(ice_transport(&[]).ok(), Some(IceTransportArg::All));
        assert_eq!(
            ice_transport(&["--ice-transport", "relay"]).ok(),
            Some(IceTransportArg::Relay)
        );
        assert!(ice_transport(&["--ice-transport", "tcp"]).is_err());
    }
}
