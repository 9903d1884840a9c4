//! `chkpnt -p <PID> [-od <DIR>] [-k]`: see `cairn::chkpnt`.
fn main() -> std::process::ExitCode {
    cairn::chkpnt::chkpnt_main()
}
