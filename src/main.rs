//! `mongo-backup-agent`: the command line. Parses flags and hands over to the library; nothing else lives here.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
