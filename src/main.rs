//! `cairn`: parses the command line and runs the command ([`cairn::cmd`]);
//! run as `chkpnt` or `resume` (links to it), the DMTCP-style front ends.
#![deny(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

use cairn::cmd::Cli;
use cairn::error::exit;

fn main() -> ExitCode {
    // chkpnt and resume are this binary under another name (a link).
    let argv0 = std::env::args_os().next().unwrap_or_default();
    match std::path::Path::new(&argv0)
        .file_name()
        .and_then(|n| n.to_str())
    {
        Some("chkpnt") => return cairn::cmd::chkpnt::chkpnt_main(),
        Some("resume") => return cairn::cmd::chkpnt::resume_main(),
        _ => {}
    }
    // `cairn demo` re-executes this binary as its workload.
    let mut argv = std::env::args_os().skip(1);
    if argv
        .next()
        .is_some_and(|a| a == cairn::cmd::demo::WORKLOAD_ARG)
    {
        let Some(path) = argv.next() else {
            return ExitCode::from(exit::USAGE);
        };
        return match cairn::cmd::demo::workload(std::path::Path::new(&path)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("cairn: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // The guardian and the tracking keeper (cairn re-executes itself).
    if let Some(code) = cairn::guard::run_hidden() {
        return ExitCode::from(code);
    }
    let cli = Cli::parse();
    cairn::log::set_json(cli.log_format == "json");
    if let Err(e) = cairn::log::init(cli.verbose, cli.log_file.as_deref()) {
        cairn::log::error(&format!("log file (-o): {e}"));
        return ExitCode::from(exit::USAGE);
    }
    cairn::stats::set_display(cli.display_stats);
    let (result, phase) = cairn::cmd::run(&cli.cmd);
    cairn::progress::finish();
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            cairn::log::error(&e.to_string());
            ExitCode::from(e.exit_code(phase))
        }
    }
}
