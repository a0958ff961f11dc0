//! The job script of a Grid Engine block and the node script each of its hosts runs.

use std::path::Path;

use funcx_core::{BlockRequest, ManagerLayout, ProviderError, BLOCK_ID_ENV, NODE_INDEX_ENV};

use super::GridEngineConfig;
use crate::toolkit::options::walltime_hms;
use crate::toolkit::shell::{self, shell_quote};

/// The line that ends the node script in the job script's here-documents. A request whose
/// node script contains it as a line is rejected (it would end the here-document early).
pub(super) const NODE_SCRIPT_END: &str = "FUNCX_NODE_SCRIPT_END";

/// A value that goes into a `#$` directive: one line, no spaces (Grid Engine splits
/// directives at white space).
fn directive_word<'a>(what: &str, text: &'a str) -> Result<&'a str, ProviderError> {
    if text.is_empty() || text.contains(char::is_whitespace) {
        return Err(ProviderError::rejected(format!(
            "{what} {text:?} cannot be used in a `#$` directive: it must be one word"
        )));
    }
    Ok(text)
}

/// The script that runs on each node: `worker_init`, the manager's environment, the block's
/// identity (`$1` the job id, `$2` the node index), and the manager. It is fed to
/// `/bin/sh -s JOB_ID INDEX` on stdin, so a command in it must not read stdin: the whole
/// script is one `{ ... } </dev/null` group, parsed before it runs.
pub(super) fn render_node_script(request: &BlockRequest) -> Result<String, ProviderError> {
    let manager = request.command();
    let mut script = String::from("{\n");
    // Taken before worker_init runs, which may `set --`.
    script.push_str("funcx_block=$1\nfuncx_node=$2\n");
    if let Some(init) = request.worker_init_lines() {
        script.push_str(init);
        if !init.ends_with('\n') {
            script.push('\n');
        }
    }
    script.push_str(&shell::export_text(manager)?);
    // After the manager's environment, so a manager command cannot claim to be another block.
    script.push_str(&format!(
        "export {BLOCK_ID_ENV}=\"$funcx_block\" {NODE_INDEX_ENV}=\"$funcx_node\"\n"
    ));
    let exec = format!("exec {}", shell::command_text(manager)?);
    script.push_str(&exec);
    script.push_str("\n} </dev/null\n");
    if script.lines().any(|line| line == NODE_SCRIPT_END) {
        return Err(ProviderError::rejected(format!(
            "the manager command or worker_init contains the line {NODE_SCRIPT_END}, which the \
             job script uses to end the node script"
        )));
    }
    Ok(script)
}

/// The job script for `request`, whose logs go to `<dir>/<stem>.<job id>.out` / `.err`.
pub(super) fn render_script(
    config: &GridEngineConfig,
    request: &BlockRequest,
    dir: &Path,
    stem: &str,
) -> Result<String, ProviderError> {
    let name = &config.batch.job_name;
    let name_ok = name.chars().next().is_some_and(|c| !c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !name_ok {
        return Err(ProviderError::rejected(format!(
            "job name {name:?}: use letters, digits, `_`, `.` and `-`, not starting with a digit"
        )));
    }
    let nodes = request.node_count();
    let per_block = request.manager_layout() == ManagerLayout::PerBlock;
    let dir_text = directive_word(
        "the scripts directory",
        dir.to_str().ok_or_else(|| {
            ProviderError::rejected(format!("the scripts directory {dir:?} is not UTF-8"))
        })?,
    )?;
    let managers = if per_block {
        "one manager for all"
    } else {
        "one manager on each"
    };
    let mut script = format!(
        "#!/bin/sh\n# funcx block: {nodes} node(s), {managers}.\n#$ -N {name}-{}\n",
        stem.rsplit('-').next().unwrap_or(stem)
    );
    // The queue's shell may be csh: the script is POSIX sh.
    script.push_str("#$ -S /bin/sh\n");
    // Grid Engine expands $JOB_ID in these paths itself.
    script.push_str(&format!("#$ -o {dir_text}/{stem}.$JOB_ID.out\n"));
    script.push_str(&format!("#$ -e {dir_text}/{stem}.$JOB_ID.err\n"));
    if let Some(queue) = &config.queue {
        script.push_str(&format!("#$ -q {}\n", directive_word("queue", queue)?));
    }
    match &config.parallel_environment {
        Some((pe, slots)) => {
            // A block with one manager for all its nodes launches ranks in these slots, so
            // each host has at least one per rank.
            let per_host = if per_block {
                (*slots).max(request.per_node_rank_slots())
            } else {
                *slots
            };
            let total = per_host.max(1) * nodes;
            script.push_str(&format!(
                "#$ -pe {} {total}\n",
                directive_word("parallel environment", pe)?
            ));
        }
        None if per_block => {
            return Err(ProviderError::rejected(
                "a Grid Engine block with one manager for all its nodes needs a parallel \
                 environment (GridEngineConfig::parallel_environment): its manager takes the \
                 block's hosts from the environment's host file (PE_HOSTFILE)",
            ));
        }
        None if nodes > 1 => {
            return Err(ProviderError::rejected(format!(
                "a Grid Engine block of {nodes} nodes needs a parallel environment \
                 (GridEngineConfig::parallel_environment) to spread its slots over hosts"
            )));
        }
        None => {}
    }
    if let Some(walltime) = request.walltime_limit() {
        script.push_str(&format!("#$ -l h_rt={}\n", walltime_hms(walltime)));
    }
    for line in config.batch.directive_lines("#$", &[])? {
        script.push_str(&line);
        script.push('\n');
    }
    let node_script = render_node_script(request)?;
    // One manager runs here, on the master host, for a one-node block or one whose manager
    // holds every host.
    if nodes == 1 || per_block {
        script.push_str(&format!(
            "\nexec /bin/sh -s \"$JOB_ID\" 0 <<'{NODE_SCRIPT_END}'\n{node_script}{NODE_SCRIPT_END}\n"
        ));
        return Ok(script);
    }
    let qrsh = shell_quote(&config.batch.program("qrsh"));
    script.push_str(&format!(
        r#"
funcx_node_script() {{
cat <<'{NODE_SCRIPT_END}'
{node_script}{NODE_SCRIPT_END}
}}

# One manager per host of the parallel environment: node 0 here, the others through
# `qrsh -inherit`, so Grid Engine accounts for them and kills them with the job.
funcx_nodes={nodes}
funcx_self=${{HOSTNAME:-$(hostname)}}
funcx_node_script | /bin/sh -s "$JOB_ID" 0 &
funcx_pids=$!
funcx_index=1
for funcx_host in $(awk '!seen[$1]++ {{ print $1 }}' "$PE_HOSTFILE"); do
    [ "$funcx_host" = "$funcx_self" ] && continue
    [ "$funcx_index" -lt "$funcx_nodes" ] || break
    funcx_node_script | {qrsh} -inherit "$funcx_host" /bin/sh -s "$JOB_ID" "$funcx_index" &
    funcx_pids="$funcx_pids $!"
    funcx_index=$((funcx_index + 1))
done
if [ "$funcx_index" -lt "$funcx_nodes" ]; then
    echo "funcx: block $JOB_ID asked for $funcx_nodes nodes but its parallel environment gave $funcx_index host(s) ($PE_HOSTFILE); running $funcx_index manager(s)" >&2
fi
funcx_status=0
for funcx_pid in $funcx_pids; do
    wait "$funcx_pid" || funcx_status=$?
done
exit "$funcx_status"
"#
    ));
    Ok(script)
}
