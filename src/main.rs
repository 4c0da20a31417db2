//! `netfence`: the command line on top of the library, for operators, demos and tests.
//!
//! `netfence --help` lists the commands; [`cli`] holds them. The binary starts no
//! process: every kernel access goes through the library's netlink code.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
