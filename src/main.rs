use std::process::ExitCode;

fn main() -> ExitCode {
    stemcell_builder::cli::main()
}
