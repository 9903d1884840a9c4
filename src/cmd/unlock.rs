//! `cairn unlock`: removes a network lock that a `--tcp-established` dump
//! kept for a restore that will not come ([`crate::netlock`]). CRIU has
//! no such command (its restore, or a reboot, lifts the lock); `cairn
//! check` lists cairn's lock tables and says which are abandoned.
//!
//! - `cairn unlock -D DIR`: the lock the dump in DIR kept (the images
//!   name the table). That dump's connections are given up: their peers'
//!   next packets are answered with resets.
//! - `cairn unlock --table NAME`: a table of cairn's whose images are
//!   gone, hold another dump, or were restored.
//! - `cairn unlock --abandoned`: every such table.
//!
//! Only tables cairn made are touched (named `cairn_...` and labelled
//! with their owner, or named by the images), never one a running dump or
//! restore holds, and each by its handle: a table made again under the
//! same name since it was listed stays.

use std::path::PathBuf;

use clap::Args;

use crate::error::{Error, Result};
use crate::netlock::{self, State, Table};
use crate::warn;

#[derive(Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["dir", "table", "abandoned"])))]
pub struct UnlockArgs {
    /// The image directory of the dump whose lock goes (its connections
    /// are given up).
    #[arg(short = 'D', long = "images-dir")]
    pub dir: Option<PathBuf>,
    /// A lock table (as `cairn check` lists it) whose images are gone,
    /// hold another dump, or were restored.
    #[arg(long, value_name = "NAME")]
    pub table: Option<String>,
    /// Every abandoned lock table of this network namespace.
    #[arg(long)]
    pub abandoned: bool,
}

fn nft_err(what: &str, e: std::io::Error) -> Error {
    Error::Usage(format!("{what}: {e}"))
}

fn removed(t: &Table, why: &str) {
    println!("removed nft table inet {} ({why})", t.name);
}

/// `cairn unlock`.
pub fn run(a: &UnlockArgs) -> Result<i32> {
    if netlock::nft_path().is_none() {
        return Err(Error::Usage(
            "the nft command is not installed: there is no lock table of cairn's to remove".into(),
        ));
    }
    if let Some(dir) = &a.dir {
        return unlock_dir(dir);
    }
    if let Some(name) = &a.table {
        let t = netlock::table(name)
            .map_err(|e| nft_err(name, e))?
            .ok_or_else(|| Error::Usage(format!("no nft table inet {name} here")))?;
        if !name.starts_with("cairn_") || t.owner.is_none() {
            return Err(Error::Usage(format!(
                "nft table inet {name} records no cairn owner: not removed ({}). If it is the \
                 lock of a dump whose images you have, `cairn unlock -D DIR` removes it",
                t.state.detail()
            )));
        }
        return match &t.state {
            State::Abandoned { why } => {
                netlock::delete(&t).map_err(|e| nft_err(name, e))?;
                removed(&t, why);
                Ok(0)
            }
            s => Err(Error::Usage(format!(
                "nft table inet {name} is not abandoned: {}; not removed{}",
                s.detail(),
                match s {
                    State::Kept { dir } => format!(
                        " (`cairn unlock -D {}` gives that dump's connections up)",
                        dir.display()
                    ),
                    _ => String::new(),
                }
            ))),
        };
    }
    let mut n = 0;
    for t in netlock::tables().map_err(|e| nft_err("nft list tables", e))? {
        if let (State::Abandoned { why }, Some(_)) = (&t.state, &t.owner) {
            match netlock::delete(&t) {
                Ok(()) => {
                    removed(&t, why);
                    n += 1;
                }
                Err(e) => warn!("{e}"),
            }
        }
    }
    if n == 0 {
        println!("no abandoned lock table of cairn's here");
    }
    Ok(0)
}

/// The lock of the dump in `dir`.
fn unlock_dir(dir: &std::path::Path) -> Result<i32> {
    let Some(name) = netlock::images_lock(dir)? else {
        println!(
            "the dump in {} kept no network lock (no --tcp-established connection, or \
             --network-lock=skip)",
            dir.display()
        );
        return Ok(0);
    };
    let Some(t) = netlock::table(&name).map_err(|e| nft_err(&name, e))? else {
        println!(
            "nft table inet {name}, the lock of {}, is not here (lifted by a restore, a reboot, \
             or in another network namespace)",
            dir.display()
        );
        return Ok(0);
    };
    if let State::Held { pid } = t.state {
        return Err(Error::Usage(format!(
            "nft table inet {name} is held by cairn pid {pid}, which runs (a dump or restore \
             of {}): not removed",
            dir.display()
        )));
    }
    netlock::delete(&t).map_err(|e| nft_err(&name, e))?;
    removed(
        &t,
        &format!(
            "the lock of {}: its connections are given up",
            dir.display()
        ),
    );
    Ok(0)
}
