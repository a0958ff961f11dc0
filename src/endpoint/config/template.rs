//! The commented file `funcx-endpoint configure` writes.

/// The commented configuration `funcx-endpoint configure` writes: every key for
/// `provider`, with the given gateway settings filled in.
pub fn template(name: &str, provider: &str, gateway: Option<(&str, &str)>) -> String {
    let mut text = format!(
        r#"# funcx-endpoint configuration of endpoint "{name}".
# Every key is listed; a commented key shows its default. Unknown keys are refused.
# Start it with `funcx-endpoint start {name}`; see `funcx-endpoint --help`.

# Where blocks of managers come from: local, slurm, pbs, gridengine or ec2.
provider = "{provider}"
# The only data formats tasks may use: ["json"] refuses every pickled argument and pickled
# function before anything is unpickled (source-text functions always run). Default: all.
# allowed_formats = ["json"]
# The only functions tasks may call, by id; checked here whatever the gateway checked.
# allowed_functions = ["<64 hex digits>"]

"#
    );
    match gateway {
        Some((url, endpoint_id)) => text.push_str(&format!(
            r#"# Where tasks come from: the gateway this endpoint dials out to.
[gateway]
url = "{url}"
endpoint_id = "{endpoint_id}"
# The endpoint's token, in a file only its owner may read (relative to this folder).
token_file = "token"
# A CA certificate (PEM) to trust for an https:// gateway with a private CA.
# ca_file = "/etc/funcx/gateway-ca.pem"
# Other gateways on the same database, dialled in order when the one before is down.
# failover = ["https://gateway-2.example.org:8470"]

"#
        )),
        None => text.push_str(
            r#"# Where tasks come from: the gateway this endpoint dials out to (required to start).
# [gateway]
# url = "https://gateway.example.org:8470"
# endpoint_id = "the id POST /v1/endpoints answered"
# token_file = "token"          # the endpoint's token, mode 0600, relative to this folder
# ca_file = "/etc/funcx/gateway-ca.pem"
# failover = ["https://gateway-2.example.org:8470"]  # same database, tried in order

"#,
        ),
    }
    text.push_str(
        r#"[managers]
# Where managers dial in: an address the compute nodes reach.
listen = "127.0.0.1:0"
# What managers are told to dial, when not `listen` (listening on 0.0.0.0, NAT).
# advertise = "login1.cluster:7070"
# The manager program; default: this funcx-endpoint, run as `funcx-endpoint manager`.
# program = "/usr/local/bin/funcx-manager"
nodes_per_block = 1
# Where a block's managers run: "per-node" (one on each node; a task holds at most one node)
# or "per-block" (one manager, started in the batch job with `--block-nodes auto`, holds all
# the block's nodes, so multi-node MPI tasks launch ranks across them; each node also gets
# workers_per_node task slots for the ranks; slurm, pbs and gridengine only).
# layout = "per-node"
workers_per_node = 1
# Bytes of memory tasks may reserve on each node; default: each node's MemTotal (or its
# cgroup's memory.max when lower). Set, the gateway fails at once a task asking for more.
# memory_per_node = 68719476736
# How often a task whose manager was lost is re-run before it fails.
# retries = 2
# TLS between managers and the endpoint (all three, or none).
# tls_cert = "endpoint.crt"
# tls_key = "endpoint.key"
# tls_ca = "ca.crt"
# tls_name = "login1.cluster"   # the name in the certificate; default: the host dialled

[python]
# interpreter = "python3"
# worker_init = "module load python/3.12; source ~/venv/bin/activate"
# accelerators = ["0", "1"]    # worker i gets device i mod n (CUDA_VISIBLE_DEVICES, ...)
# working_dir = "/scratch/me"

[python.env]
# OMP_NUM_THREADS = "1"

[blocks]
init = 1
min = 0
max = 1
# parallelism = 1.0             # worker slots per outstanding task, 0 to 1
# max_idle_secs = 120           # an idle block is released after this
# walltime_secs = 3600          # asked for each block; blocks drain before it ends
# drain_margin_secs = 120       # default: a tenth of the walltime, at most 120
# period_secs = 5               # how often the strategy looks
# pending_timeout_secs = 3600   # a block pending longer is cancelled
# connect_timeout_secs = 120    # a running block whose managers never dial in is cancelled

"#,
    );
    text.push_str(match provider {
        "local" => {
            r#"[local]
# grace_secs = 10               # SIGTERM, then SIGKILL after this, when a block ends
"#
        }
        "slurm" => {
            r#"[slurm]
# partition = "debug"
# account = "project42"
# qos = "normal"
# constraint = "haswell"
# exclusive = false
# cpus_per_task = 8             # each node's CPUs (--mincpus with layout = "per-block")
# mem = "16G"
# job_name = "funcx-NAME"
# directives = ["--gres=gpu:1"]  # extra #SBATCH lines
# launcher = "srun"             # srun (one manager per node) or single; not with per-block
# scripts_dir = "blocks"        # job scripts and logs (relative to this folder)
"#
        }
        "pbs" => {
            r#"[pbs]
# flavor = "pbspro"             # pbspro or torque
# queue = "workq"
# account = "project42"
# cpus_per_node = 8
# job_name = "funcx-NAME"
# directives = ["-l place=scatter"]  # extra #PBS lines
# launcher = "single"           # single, mpiexec or aprun; not with per-block
# scripts_dir = "blocks"
"#
        }
        "gridengine" => {
            r#"[gridengine]
# queue = "all.q"
# parallel_environment = "mpi"  # for blocks of more than one node, and per-block ones
# slots_per_node = 1
# directives = ["-l h_vmem=4G"]
# job_name = "funcx-NAME"
# scripts_dir = "blocks"
"#
        }
        _ => {
            r#"[ec2]
image_id = "ami-..."
instance_type = "t3.medium"
# region = "us-east-1"
# subnet_id = "subnet-..."
# key_name = "my-key"
# security_group_ids = ["sg-..."]
# spot = false
# spot_max_price = "0.05"
# iam_instance_profile = "funcx-endpoint"
# endpoint_url = "https://ec2.us-east-1.amazonaws.com"

[ec2.tags]
# project = "p42"
"#
        }
    });
    text
}
