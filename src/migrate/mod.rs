//! Live migration of a process tree to another machine (issue 16):
//! `cairn migrate` on the source, `cairn receive` on the destination.
//!
//! - [`channel`]: one TCP connection, Noise `NNpsk0` with the pre-shared
//!   key of `--key FILE`: mutually authenticated and encrypted; bounded
//!   frames.
//! - [`wire`]: the messages, and the image file names a receiver accepts.
//! - [`source`]: pre-copy. Rounds of `pre-dump` while the tree runs
//!   (dirty tracking, `crate::track`), each layer staged in a private
//!   directory and sent at once, until the last round's size fits
//!   `--max-downtime` at the measured bandwidth (or a round limit); then
//!   the final dump, frozen, whose layer is sent while the tree stays
//!   frozen (`dump::dump_then`).
//! - [`receiver`]: writes each layer under its number (`1`, `2`, ...),
//!   verifies the chain, decides the hand-over mode, restores.
//! - [`pageserver`]: the CRIU-style building blocks on the same channel:
//!   `cairn page-server`, `dump --page-server`, `restore --lazy-pages`.
//! - [`postcopy`] (`--lazy`): the source's page server and the
//!   destination's pager; [`guardian`]: the process that holds the
//!   pager's userfaultfds so that a killed receiver kills the tree
//!   instead of leaving it reading zeros.
//!
//! The hand-over (docs/ARCHITECTURE.md "Live migration"): when the tree's
//! pids are free on the destination (another machine), the source stays
//! frozen until the destination runs the tree, and is thawed if anything
//! fails before ("frozen" mode). When the destination shares the source's
//! pid space and the pids are held by the source tree itself (same boot
//! id and start times: one kernel, as in the tests), the source is killed
//! once the destination has verified every image, and restored here from
//! its own images if the destination then fails ("hand-over" mode).
//!
//! Exit codes of `cairn migrate` besides 0 and the usual ones: [`exit`].

pub mod channel;
pub mod guardian;
pub mod pageserver;
pub mod postcopy;
pub mod receiver;
pub mod source;
pub mod wire;

/// Exit codes of `cairn migrate` that say what became of the source tree.
pub mod exit {
    /// The migration failed; the source tree runs on as before (it was
    /// never stopped for long, or it was thawed).
    pub const RUNS_ON: u8 = 7;
    /// Hand-over mode: the destination failed after the source tree was
    /// killed; the tree was restored on the source from its own images.
    pub const RESTORED_LOCALLY: u8 = 8;
    /// Hand-over mode: the destination failed and so did the local
    /// restore; the images are kept (the error names the directory).
    pub const LOST: u8 = 9;
}
