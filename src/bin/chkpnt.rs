//! `chkpnt -p <PID> [-od <DIR>] [-k]`: see `cairn::cmd::chkpnt`.
#![deny(unsafe_code)]
fn main() -> std::process::ExitCode {
    cairn::cmd::chkpnt::chkpnt_main()
}
