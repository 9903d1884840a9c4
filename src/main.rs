use std::process::ExitCode;

use clap::Parser;

use cairn::cli::{Cli, Command};
use cairn::error::{exit, Phase};

fn main() -> ExitCode {
    // `cairn demo` re-executes this binary as its workload.
    let mut argv = std::env::args_os().skip(1);
    if argv.next().is_some_and(|a| a == cairn::demo::WORKLOAD_ARG) {
        let Some(path) = argv.next() else {
            return ExitCode::from(exit::USAGE);
        };
        return match cairn::demo::workload(std::path::Path::new(&path)) {
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
    if let Err(e) = cairn::log::init(cli.verbose, cli.log_file.as_deref()) {
        eprintln!("cairn: log file: {e}");
        return ExitCode::from(exit::USAGE);
    }
    if let Command::Show(a) = &cli.cmd {
        cairn::image::allow_foreign_images(a.allow_foreign_images);
    }
    let (result, phase) = match &cli.cmd {
        Command::Dump(a) => (cairn::dump::dump(a).map(|_| 0), Phase::Dump),
        Command::PreDump(a) => (cairn::dump::pre_dump(a).map(|_| 0), Phase::Dump),
        Command::Restore(a) => (cairn::restore::restore(a), Phase::Restore),
        Command::Show(a) if a.verify => (
            cairn::verify::run(&a.path, a.json).map(|()| 0),
            Phase::Other,
        ),
        Command::Show(a) => (cairn::show::show(&a.path, a.json).map(|()| 0), Phase::Other),
        Command::Check(a) => (cairn::check::check(a.json).map(|()| 0), Phase::Other),
        Command::Demo(a) => (cairn::demo::run(a).map(|()| 0), Phase::Other),
        Command::Prune(a) => (cairn::prune::prune(a).map(|()| 0), Phase::Other),
        Command::Inventory(a) => (cairn::inventory::command(a).map(|()| 0), Phase::Other),
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("cairn: {e}");
            ExitCode::from(e.exit_code(phase))
        }
    }
}
