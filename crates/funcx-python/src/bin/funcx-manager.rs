//! `funcx-manager`: runs an endpoint's tasks on this node's Python workers.
//!
//! Exit status: 0 when the endpoint drained or stopped the manager, 2 when the endpoint could
//! not be reached for `--give-up-after` seconds, 3 when the Python workers could not start, 64
//! for a bad command line.

use std::process::ExitCode;

fn main() -> ExitCode {
    funcx_python::manager::main_with_args(std::env::args_os().skip(1))
}
