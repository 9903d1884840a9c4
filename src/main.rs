use std::process::ExitCode;

use clap::Parser;

use cairn::cli::{Cli, Command};
use cairn::error::{exit, Error};

fn exit_code_for(e: &Error, dumping: bool) -> u8 {
    match e {
        Error::Usage(_) => exit::USAGE,
        Error::Image { .. } => exit::IMAGE_INVALID,
        Error::Unsupported { .. } => exit::UNSUPPORTED,
        _ if dumping => exit::DUMP_FAILED,
        _ => exit::RESTORE_FAILED,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = cairn::log::init(cli.verbose, cli.log_file.as_deref()) {
        eprintln!("cairn: log file: {e}");
        return ExitCode::from(exit::USAGE);
    }
    let (result, dumping) = match &cli.cmd {
        Command::Dump(a) => (cairn::dump::dump(a).map(|_| 0), true),
        Command::Restore(a) => (cairn::restore::restore(a), false),
        Command::Show(_) | Command::Check(_) | Command::Demo(_) => (Err(Error::Usage("not wired yet".into())), false),
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("cairn: {e}");
            ExitCode::from(exit_code_for(&e, dumping))
        }
    }
}
