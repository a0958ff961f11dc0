//! An MPI task: one task of several ranks started by `mpirun` on a warm worker; each rank
//! reports itself and the ranks sum their numbers with an allreduce, so the output shows the
//! ranks saw each other.
//!
//! ```text
//! cargo run --release --example mpi            # 2 ranks
//! cargo run --release --example mpi -- 4       # 4 ranks
//! ```
//!
//! Needs Open MPI's `mpirun` and Debian's `python3-mpi4py` for `/usr/bin/python3`
//! (`scripts/infra/mpi-up.sh` installs both); it installs nothing itself. Exits non-zero if a
//! rank is missing or the sum is wrong.

use std::error::Error;
use std::time::Duration;

use funcx::{Args, Executor, MpiFunction, PythonRuntime, ShellResult};

const PROGRAM: &str = r#"
import os, socket
from mpi4py import MPI
comm = MPI.COMM_WORLD
total = comm.allreduce(comm.Get_rank() + 1)
# One write per line: mpirun interleaves the ranks' output write by write.
line = "rank %d of %d on %s: allreduce sum %d\n" % (comm.Get_rank(), comm.Get_size(), socket.gethostname(), total)
os.write(1, line.encode())
"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let ranks: u32 = match std::env::args().nth(1) {
        Some(n) => n.parse().map_err(|_| format!("not a rank count: {n}"))?,
        None => 2,
    };
    let executor = Executor::builder()
        .workers(1)
        .start(PythonRuntime::default());
    executor.ready().await?;

    // Debian's mpi4py is built for Debian's interpreter, whatever python3 is first on PATH.
    let hello = MpiFunction::new("/usr/bin/python3 -c {program}")
        .ranks(ranks)
        .oversubscribe()
        .shell(|s| s.walltime(Duration::from_secs(120)));
    let result: ShellResult = executor
        .submit(&hello.function(), Args::new().kwarg("program", PROGRAM))
        .result()
        .await?;
    println!("$ {}", result.command);
    print!("{}", result.stdout);
    if !result.stderr.is_empty() {
        eprint!("{}", result.stderr);
    }
    println!(
        "return code {} after {:.2} s",
        result.returncode, result.seconds
    );

    let sum = ranks * (ranks + 1) / 2;
    let reported = result
        .stdout
        .lines()
        .filter(|l| l.contains(&format!(" of {ranks} on ")) && l.ends_with(&format!("sum {sum}")))
        .count();
    if result.returncode != 0 || reported != ranks as usize {
        return Err(format!("expected {ranks} ranks reporting sum {sum}, got {reported}").into());
    }
    println!("all {ranks} ranks reported and agreed on the sum");
    Ok(())
}
