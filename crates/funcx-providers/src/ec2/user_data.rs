//! The user data of a block's instances: the script that starts its manager.

use funcx_core::{BlockId, BlockRequest, ProviderError, BLOCK_ID_ENV, NODE_INDEX_ENV};

use crate::toolkit::options::whole_seconds;
use crate::toolkit::shell::{self, quote_bytes, Encoding};

/// The user data of every instance of block `id`: a `/bin/sh` script that sets up the
/// manager's environment, runs the `worker_init` lines and `exec`s the manager.
pub(super) fn render_user_data(
    request: &BlockRequest,
    id: &BlockId,
) -> Result<Vec<u8>, ProviderError> {
    let manager = request.command();
    let mut script: Vec<u8> = Vec::with_capacity(1024);
    script.extend_from_slice(
        format!(
            "#!/bin/sh\n\
             # funcx block {id}: starts one manager on this instance (funcx-providers Ec2Provider).\n\
             funcx_metadata() {{\n\
             \x20 for _ in 1 2 3 4 5 6 7 8 9 10; do\n\
             \x20   if command -v curl >/dev/null 2>&1; then\n\
             \x20     token=$(curl -fsS -m 5 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' http://169.254.169.254/latest/api/token 2>/dev/null)\n\
             \x20     curl -fsS -m 5 ${{token:+-H \"X-aws-ec2-metadata-token: $token\"}} \"http://169.254.169.254/latest/meta-data/$1\" && return 0\n\
             \x20   else\n\
             \x20     token=$(wget -q -O - -T 5 --method=PUT --header='X-aws-ec2-metadata-token-ttl-seconds: 300' http://169.254.169.254/latest/api/token 2>/dev/null)\n\
             \x20     wget -q -O - -T 5 ${{token:+--header=\"X-aws-ec2-metadata-token: $token\"}} \"http://169.254.169.254/latest/meta-data/$1\" && return 0\n\
             \x20   fi\n\
             \x20   sleep 1\n\
             \x20 done\n\
             \x20 return 1\n\
             }}\n"
        )
        .as_bytes(),
    );
    script.extend_from_slice(&shell::exports(manager, Encoding::Bytes)?);
    // Set after the manager's environment, so a manager command cannot claim to be another
    // block.
    script.extend_from_slice(format!("export {BLOCK_ID_ENV}=").as_bytes());
    script.extend_from_slice(&quote_bytes(id.as_str().as_bytes()));
    script.push(b'\n');
    script.extend_from_slice(
        format!(
            "{NODE_INDEX_ENV}=$(funcx_metadata ami-launch-index) || {{\n\
             \x20 echo 'funcx: could not read ami-launch-index from the instance metadata service' >&2\n\
             \x20 exit 1\n\
             }}\n\
             export {NODE_INDEX_ENV}\n"
        )
        .as_bytes(),
    );
    if let Some(walltime) = request.walltime_limit() {
        let minutes = whole_seconds(walltime).div_ceil(60);
        script.extend_from_slice(
            format!(
                "# The block's walltime: the instance terminates (InstanceInitiatedShutdownBehavior).\n\
                 shutdown -h +{minutes} 'funcx: walltime of block {id} expired' || \
                 echo 'funcx: could not schedule the walltime shutdown' >&2\n"
            )
            .as_bytes(),
        );
    }
    if let Some(init) = request.worker_init_lines() {
        script.extend_from_slice(init.as_bytes());
        if !init.ends_with('\n') {
            script.push(b'\n');
        }
    }
    script.extend_from_slice(b"exec ");
    script.extend_from_slice(&shell::command_words(manager, Encoding::Bytes)?);
    script.push(b'\n');
    Ok(script)
}
