//! `tools`: the local cluster, the chaos suite, the scaling experiment and the benchmark, as
//! subcommands of one binary (see `local_cluster::tools`).

fn main() -> std::process::ExitCode {
    local_cluster::tools::main(std::env::args_os().skip(1))
}
