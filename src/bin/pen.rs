//! `pen`: parse C Pen's command line, then run the daemon. Errors are one line on stderr and
//! exit status 1, reported before pen detaches from the terminal. `--help` prints the usage
//! text and `--version` / `-V` the version on stdout, exit status 0.

use std::process::ExitCode;

use pen::{cli, daemon};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprint!("{}", cli::USAGE);
        return ExitCode::FAILURE;
    }
    let parsed = match cli::invocation(args) {
        Ok(cli::Invocation::Run(c)) => *c,
        Ok(cli::Invocation::Help) => {
            print!("{}\n{}", cli::VERSION, cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(cli::Invocation::Version) => {
            println!("{}", cli::VERSION);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{e}");
            if e.show_usage() {
                eprint!("{}", cli::USAGE);
            }
            return ExitCode::FAILURE;
        }
    };
    for n in &parsed.notices {
        eprintln!("pen: {n}");
    }
    match daemon::run(parsed) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
