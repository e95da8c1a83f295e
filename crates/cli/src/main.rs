//! `stampline`: one binary for the server, the client commands, the verifier and the demo.
//! It parses flags, calls the library crates and prints; nothing here is worth testing alone —
//! the integration tests run this binary for real.

/// mimalloc instead of the C library's allocator (measured in docs/BENCHMARKS.md:
/// `malloc`/`free` were about a fifth of the ledger writer's instructions).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod admin;
mod args;
mod batch;
mod bench;
mod bench_links;
mod buy;
mod client_cmds;
mod demo;
mod external;
mod flood;
mod funding_cmds;
mod gateway_cmds;
mod output;
mod print_cmd;
mod server_cmd;
mod value_cmds;
mod verify;

use clap::Parser as _;

use crate::args::{Cli, Command};
use crate::output::{CliError, Out};

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if std::env::args().any(|a| a == "--json") && e.use_stderr() => {
            Out { json: true }.fail(&CliError::new("bad_usage", e.to_string().trim().to_owned()))
        }
        Err(e) => e.exit(),
    };
    let out = Out { json: cli.json };
    let filter = tracing_subscriber::EnvFilter::try_from_env("STAMPLINE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,stampline_server=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => out.fail(&CliError::new(
            "internal",
            format!("cannot start the runtime: {e}"),
        )),
    };
    let result = runtime.block_on(run(cli.command, &cli.global, out));
    if let Err(e) = result {
        out.fail(&e);
    }
}

async fn run(command: Command, global: &args::Global, out: Out) -> Result<(), CliError> {
    match command {
        Command::Server(a) => server_cmd::server(a, out).await,
        Command::Demo(a) => demo::demo(a, out).await,
        Command::Register(a) => client_cmds::register(global, a, out).await,
        Command::Fund(a) => client_cmds::fund(global, a, out).await,
        Command::Balance => client_cmds::balance(global, out).await,
        Command::Quote(a) => client_cmds::quote(global, a, out).await,
        Command::History(a) => client_cmds::history(global, a, out).await,
        Command::Buy(a) => match a.batch.clone() {
            Some(file) => batch::buy_batch(global, &a, &file, out).await,
            None => buy::buy(global, a, out).await,
        },
        Command::Issue(c) => value_cmds::issue(global, c, out).await,
        Command::Redeem(a) => value_cmds::redeem(global, a, out).await,
        Command::Redeemers(a) => value_cmds::redeemers(global, a, out).await,
        Command::Checks(c) => value_cmds::checks(global, c, out).await,
        Command::Refund(a) => value_cmds::refund(global, a, out).await,
        Command::Void(a) => value_cmds::void(global, a, out).await,
        Command::Print(a) => print_cmd::print(global, a, out).await,
        Command::Printers(a) => print_cmd::printers(a, out).await,
        Command::Verify(a) => verify::verify_cmd(global, a, out).await,
        Command::Audit(a) => server_cmd::audit(a, out).await,
        Command::Bench(a) => match a.other {
            Some(args::BenchCommand::Flood(f)) => flood::flood(global, f, out).await,
            Some(args::BenchCommand::Links(l)) => bench_links::bench_links(global, l, out).await,
            None => bench::bench(global, a, out).await,
        },
        Command::PaymentOptions => funding_cmds::payment_options(global, out).await,
        Command::AutoRefill(a) => funding_cmds::auto_refill(global, a, out).await,
        Command::CloseAccount(a) => funding_cmds::close_account(global, a, out).await,
        Command::Sandbox(a) => external::sandbox(a, out).await,
        Command::Admin(a) => admin::admin(global, a, out).await,
    }
}
