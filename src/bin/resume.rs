//! `resume -od <DIR> [-bp <DIR1>]`: see `cairn::chkpnt`.
fn main() -> std::process::ExitCode {
    cairn::chkpnt::resume_main()
}
