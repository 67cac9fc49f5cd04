//! The `custody` binary: parses flags and hands over to the library.

use clap::Parser;
use custody::cli::{Cli, Command, OwnersCommand};
use std::process::ExitCode;

custody::allocator!();

fn main() -> ExitCode {
    let cli = Cli::parse();
    custody::logging::init(cli.log_format);
    match cli.command {
        Command::Process(args) => {
            let stdin = std::io::stdin();
            let stdout = std::io::stdout();
            let stderr = std::io::stderr();
            let code =
                custody::app::process::command(args, stdin.lock(), stdout.lock(), stderr.lock());
            ExitCode::from(code)
        }
        Command::Owners { command } => {
            let stdout = std::io::stdout();
            let stderr = std::io::stderr();
            let code = match command {
                OwnersCommand::Explain(args) => custody::app::owners::explain(
                    args,
                    std::io::stdin().lock(),
                    stdout.lock(),
                    stderr.lock(),
                ),
                OwnersCommand::Check(args) => {
                    custody::app::owners::check(args, stdout.lock(), stderr.lock())
                }
            };
            ExitCode::from(code)
        }
        Command::Run { config } => {
            custody::app::reserve_heap();
            ExitCode::from(custody::app::run::command(config.as_deref()))
        }
        Command::Publish(args) => ExitCode::from(custody::app::publish::command(args)),
        Command::PublishOwnership(args) => {
            ExitCode::from(custody::app::publish_ownership::command(args))
        }
        Command::Demo(args) => ExitCode::from(custody::app::demo::command(args)),
        Command::Schemas { out } => match write_schemas(out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("custody: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}

fn write_schemas(out: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    use anyhow::Context;
    for (name, text) in custody::schema::all() {
        match &out {
            Some(dir) => {
                let path = dir.join(name);
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            None => print!("{text}"),
        }
    }
    Ok(())
}
