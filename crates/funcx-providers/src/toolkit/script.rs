//! The batch script of a block, shared by the scheduler providers.
//!
//! Every scheduler runs the same shape of script; only the directive lines and the variable
//! that holds the job id differ:
//!
//! ```text
//! #!/bin/bash
//! #SBATCH ...                       directives, from the provider
//! module load python                the request's worker_init lines
//! export FUNCX_BLOCK_ID="$SLURM_JOB_ID"
//! export FUNCX_TOKEN='...'          the manager command's environment
//! srun ... '/opt/funcx-manager' '--endpoint' '10.0.0.1:9000'   the launcher line
//! ```
//!
//! The last line fans the manager out to every node ([`Launcher::launch_line`]), or, for a
//! block of [`ManagerLayout::PerBlock`], runs it once in the script ([`Launcher::block_line`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use funcx_core::{BlockRequest, ManagerLayout, ProviderError, BLOCK_ID_ENV};

use super::launcher::Launcher;
use super::shell;

/// The parts of a block's batch script that differ between schedulers.
#[derive(Clone, Debug)]
pub(crate) struct ScriptParts<'a> {
    /// The scheduler's directive lines, complete (`#SBATCH --nodes=2`).
    pub directives: Vec<String>,
    /// A shell expression for the job id inside the job (`$SLURM_JOB_ID`), which becomes the
    /// block id: the id is only known once the scheduler accepted the script.
    pub job_id_expr: &'a str,
    /// How the managers are started.
    pub launcher: &'a Launcher,
}

/// Renders the batch script that runs `request` as one job.
pub(crate) fn render(
    request: &BlockRequest,
    parts: &ScriptParts<'_>,
) -> Result<String, ProviderError> {
    let command = request.command();
    let words = shell::command_text(command)?;
    let mut script = String::from("#!/bin/bash\n");
    for directive in &parts.directives {
        script.push_str(directive);
        script.push('\n');
    }
    script.push('\n');
    if let Some(init) = request.worker_init_lines() {
        script.push_str("# worker_init\n");
        script.push_str(init);
        if !init.ends_with('\n') {
            script.push('\n');
        }
        script.push('\n');
    }
    // Double quotes: the expression is the scheduler's variable and must expand.
    script.push_str(&format!(
        "export {BLOCK_ID_ENV}=\"{}\"\n",
        parts.job_id_expr
    ));
    script.push_str(&shell::export_text(command)?);
    script.push_str(&match request.manager_layout() {
        ManagerLayout::PerNode => parts.launcher.launch_line(request.node_count(), &words),
        ManagerLayout::PerBlock => parts.launcher.block_line(&words),
    });
    script.push('\n');
    Ok(script)
}

/// Checks `request` (and, for one manager per node, that `launcher` can start one on each
/// node), renders the batch script of job `name`, whose directives `directives` gives and
/// whose id the scheduler exports as `job_id_expr`, and writes it into `dir`; returns the
/// script's path.
/// Slurm and PBS submit their blocks this way.
pub(crate) fn write_batch_job(
    request: &BlockRequest,
    launcher: &Launcher,
    name: &str,
    dir: &Path,
    job_id_expr: &str,
    directives: impl FnOnce(&str) -> Result<Vec<String>, ProviderError>,
) -> Result<PathBuf, ProviderError> {
    request.check()?;
    if request.manager_layout() == ManagerLayout::PerNode {
        launcher.check(request.node_count())?;
    }
    let text = render(
        request,
        &ScriptParts {
            directives: directives(name)?,
            job_id_expr,
            launcher,
        },
    )?;
    let path = script_path(dir, name);
    write_script(&path, &text)?;
    Ok(path)
}

/// A path in `dir` for a script of a job named `stem`, which no other block of any provider
/// in any process uses: `<dir>/<stem>-<pid>-<nanos>-<n>.sh`.
pub(crate) fn script_path(dir: &Path, stem: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    dir.join(format!(
        "{stem}-{}-{nanos}-{}.sh",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Writes `script` at `path`, creating its directory if missing.
pub(crate) fn write_script(path: &Path, script: &str) -> Result<(), ProviderError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|error| {
            ProviderError::io(
                format!("could not create the scripts directory {}", dir.display()),
                error,
            )
        })?;
    }
    std::fs::write(path, script).map_err(|error| {
        ProviderError::io(
            format!("could not write the batch script {}", path.display()),
            error,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use funcx_core::ManagerCommand;

    fn parts(launcher: &Launcher) -> ScriptParts<'_> {
        ScriptParts {
            directives: vec![
                "#SBATCH --nodes=1".into(),
                "#SBATCH --partition=debug".into(),
            ],
            job_id_expr: "$SLURM_JOB_ID",
            launcher,
        }
    }

    #[test]
    fn renders_directives_init_exports_and_the_launch_line_in_order() {
        let command = ManagerCommand::new("/opt/funcx manager")
            .args(["--endpoint", "10.0.0.1:9000", "it's"])
            .env("FUNCX_TOKEN", "s3cr3t $x");
        let request =
            BlockRequest::new(command).worker_init("module load python\nsource env/bin/activate");
        let launcher = Launcher::SingleNode;
        let script = render(&request, &parts(&launcher)).expect("render");
        assert_eq!(
            script,
            "#!/bin/bash\n\
             #SBATCH --nodes=1\n\
             #SBATCH --partition=debug\n\
             \n\
             # worker_init\n\
             module load python\n\
             source env/bin/activate\n\
             \n\
             export FUNCX_BLOCK_ID=\"$SLURM_JOB_ID\"\n\
             export FUNCX_TOKEN='s3cr3t $x'\n\
             FUNCX_NODE_INDEX=0 '/opt/funcx manager' --endpoint 10.0.0.1:9000 'it'\\''s'\n"
        );
    }

    #[test]
    fn the_rendered_script_runs_the_command_with_its_environment() {
        let command = ManagerCommand::new("/bin/sh")
            .args([
                "-c",
                "printf '%s|%s|%s|%s' \"$FUNCX_BLOCK_ID\" \"$FUNCX_NODE_INDEX\" \"$GREETING\" \"$1\"",
                "sh",
                "a 'b' $c",
            ])
            .env("GREETING", "hello; world");
        let request = BlockRequest::new(command).worker_init("JOB=42");
        let launcher = Launcher::SingleNode;
        let script = render(
            &request,
            &ScriptParts {
                directives: vec!["#SBATCH --ignored".into()],
                job_id_expr: "$JOB",
                launcher: &launcher,
            },
        )
        .expect("render");
        let output = std::process::Command::new("/bin/bash")
            .arg("-c")
            .arg(&script)
            .output()
            .expect("run bash");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "42|0|hello; world|a 'b' $c"
        );
    }

    #[test]
    fn bad_environment_names_are_rejected() {
        let request = BlockRequest::new(ManagerCommand::new("x").env("NOT A NAME", "1"));
        let launcher = Launcher::SingleNode;
        let error = render(&request, &parts(&launcher)).unwrap_err();
        assert!(error.is_rejected(), "{error}");
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_arguments_are_rejected() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let request = BlockRequest::new(ManagerCommand::new("x").arg(OsStr::from_bytes(b"\xff")));
        let launcher = Launcher::SingleNode;
        let error = render(&request, &parts(&launcher)).unwrap_err();
        assert!(error.to_string().contains("not UTF-8"), "{error}");
    }
}
