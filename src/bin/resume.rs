//! `resume -od <DIR> [-bp <DIR1>]`: see `cairn::cmd::chkpnt`.
#![deny(unsafe_code)]
fn main() -> std::process::ExitCode {
    cairn::cmd::chkpnt::resume_main()
}
