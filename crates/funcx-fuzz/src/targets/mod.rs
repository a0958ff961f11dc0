//! The fuzz targets: one per parser of outside input, each with the seeds its corpus starts
//! from (the checked-in files of `corpus/<name>/` and the valid inputs made here).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::BytesMut;
use funcx_client::model::ResultFrame;
use funcx_core::worker::{FunctionKey, ToWorker, WorkItem};
use funcx_core::{Args, Function, Payload, TaskId};
use funcx_python::protocol::{build, from_worker, status};
use funcx_transport::frame::FrameCodec;
use funcx_transport::remote::{ManagerId, ManagerInfo, ToEndpoint, ToManager};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::codec::Decoder;

mod http;

/// Runs one input; must not panic, hang or allocate without bound, whatever the bytes.
pub type Runner = Box<dyn FnMut(&[u8])>;

/// One fuzz target: a parser of outside input and where its corpus starts.
pub struct Target {
    /// The name `funcx-fuzz` and `corpus/` know it by.
    pub name: &'static str,
    /// What it reads, for reports.
    pub reads: &'static str,
    /// The longest input the mutator makes for it.
    pub max_len: usize,
    make: fn() -> Runner,
    seeds: fn() -> Vec<Vec<u8>>,
}

impl Target {
    /// A fresh runner (targets with state, such as a gateway, build it here).
    pub fn runner(&self) -> Runner {
        (self.make)()
    }

    /// The seeds: the checked-in corpus, then the inputs made in code.
    pub fn corpus(&self) -> Vec<Vec<u8>> {
        let mut corpus = read_dir(&corpus_dir(self.name));
        corpus.extend((self.seeds)());
        corpus
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").field("name", &self.name).finish()
    }
}

/// Where the checked-in corpus of target `name` lives.
pub fn corpus_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(name)
}

/// A path in the repository.
fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn read_dir(dir: &Path) -> Vec<Vec<u8>> {
    read_dir_with(dir, |_| true)
}

fn read_dir_with(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<Vec<u8>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&keep))
        .collect();
    paths.sort();
    paths.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

/// The real scheduler outputs the provider tests read (`tests/data/<prefix>*`).
fn scheduler_outputs(prefix: &str) -> Vec<Vec<u8>> {
    read_dir_with(&repo("crates/funcx-providers/tests/data"), |name| {
        name.starts_with(prefix) && !name.ends_with(".md")
    })
}

/// Every target.
pub fn all() -> Vec<Target> {
    vec![
        Target {
            name: "frames",
            reads: "transport frames between an endpoint and its managers, both directions",
            max_len: 4096,
            make: || Box::new(frames),
            seeds: frame_seeds,
        },
        Target {
            name: "handshake",
            reads: "the transport handshake, server and client side",
            max_len: 512,
            make: || Box::new(funcx_transport::fuzzing::handshake),
            seeds: handshake_seeds,
        },
        Target {
            name: "worker-output",
            reads: "what a Python worker writes on its pipe (READY, RESULTS, STARTED frames)",
            max_len: 4096,
            make: || Box::new(worker_output),
            seeds: worker_output_seeds,
        },
        Target {
            name: "result-stream",
            reads: "the gateway's binary result stream, as the remote executor reads it",
            max_len: 4096,
            make: || Box::new(result_stream),
            seeds: result_stream_seeds,
        },
        Target {
            name: "payload",
            reads: "task results and arguments as pickle and JSON",
            max_len: 4096,
            make: || Box::new(payload),
            seeds: payload_seeds,
        },
        Target {
            name: "plain-pickle",
            reads: "pickles of plain values through Payload::decode's own decoder, checked \
                    against serde-pickle",
            max_len: 4096,
            make: || Box::new(funcx_core::fuzzing::plain_pickle),
            seeds: plain_pickle_seeds,
        },
        Target {
            name: "gateway-http",
            reads:
                "HTTP requests to the gateway: methods, paths, headers, JSON and postcard bodies",
            max_len: 4096,
            make: http::runner,
            seeds: http::seeds,
        },
        Target {
            name: "gateway-config",
            reads: "the gateway's TOML configuration file",
            max_len: 8192,
            make: || Box::new(gateway_config),
            seeds: || read_dir(&repo("crates/funcx-gateway/examples")),
        },
        Target {
            name: "endpoint-config",
            reads: "funcx-endpoint's TOML configuration file",
            max_len: 8192,
            make: || Box::new(endpoint_config),
            seeds: endpoint_config_seeds,
        },
        Target {
            name: "slurm",
            reads: "squeue, sacct and sbatch output",
            max_len: 4096,
            make: || Box::new(slurm),
            seeds: || scheduler_outputs("slurm_"),
        },
        Target {
            name: "pbs",
            reads: "qstat (JSON and text) and qsub output of PBS Pro and Torque",
            max_len: 8192,
            make: || Box::new(funcx_providers::fuzzing::pbs_qstat),
            seeds: || scheduler_outputs("pbs_"),
        },
        Target {
            name: "gridengine",
            reads: "Grid Engine's qstat -xml, qacct -j, qsub and error output",
            max_len: 8192,
            make: || Box::new(funcx_providers::fuzzing::sge_qstat),
            seeds: || scheduler_outputs("sge_"),
        },
        Target {
            name: "ec2-xml",
            reads: "EC2 Query API answers (DescribeInstances, RunInstances, errors)",
            max_len: 8192,
            make: || Box::new(funcx_providers::fuzzing::ec2_xml),
            seeds: Vec::new,
        },
    ]
}

/// Decodes `data` with a fresh codec: first whole, then in 7-byte pieces (a frame split
/// across reads), then at the end of the stream.
fn decode_all<T: DeserializeOwned>(codec: impl Fn() -> FrameCodec<T>, data: &[u8]) {
    let mut whole = codec();
    let mut buffer = BytesMut::from(data);
    while let Ok(Some(_)) = whole.decode(&mut buffer) {}
    let _ = whole.decode_eof(&mut buffer);

    let mut pieces = codec();
    let mut buffer = BytesMut::new();
    'feed: for piece in data.chunks(7) {
        buffer.extend_from_slice(piece);
        loop {
            match pieces.decode(&mut buffer) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }
}

fn encode<T, S: Serialize>(codec: &FrameCodec<T>, message: S) -> Vec<u8> {
    let mut out = BytesMut::new();
    // Our own small messages always encode in one frame; a seed that did not would only be
    // missing.
    let _ = codec.encode_frame(&message, &mut out);
    out.to_vec()
}

fn frames(data: &[u8]) {
    decode_all(FrameCodec::<ToManager>::new, data);
    decode_all(FrameCodec::<ToEndpoint>::new, data);
}

fn frame_seeds() -> Vec<Vec<u8>> {
    let to_manager = FrameCodec::<ToManager>::new();
    let to_endpoint = FrameCodec::<ToEndpoint>::new();
    let function = Function::from_source("def double(x):\n    return 2 * x\n", "double");
    let item = WorkItem {
        id: TaskId::from_u64(7),
        function: FunctionKey(1),
        isolate: false,
        args: Args::new().arg(&21).kwarg("scale", &[1.5, 2.5]),
        timeout: Some(Duration::from_secs(3)),
        trace: Some(7),
        env: Vec::new(),
        resources: None,
    };
    vec![
        encode(
            &to_manager,
            ToManager::Welcome {
                session: 42,
                resumed: true,
                heartbeat_period: Duration::from_millis(500),
                heartbeat_threshold: Duration::from_secs(5),
            },
        ),
        encode(
            &to_manager,
            ToManager::Work(ToWorker::Function {
                key: FunctionKey(1),
                function,
            }),
        ),
        encode(&to_manager, ToManager::Work(ToWorker::Tasks(vec![item]))),
        encode(
            &to_manager,
            ToManager::Work(ToWorker::Cancel(vec![TaskId::from_u64(7)])),
        ),
        encode(&to_manager, ToManager::Ack { seq: 9 }),
        encode(&to_manager, ToManager::Stop),
        encode(
            &to_endpoint,
            ToEndpoint::Hello {
                info: ManagerInfo {
                    id: ManagerId(3),
                    block: Some("block-1".into()),
                    host: "node01".into(),
                    pid: 4242,
                    slots: 8,
                    gpus: vec!["0".into(), "1".into()],
                    cores: None,
                    memory: None,
                    nodes: Vec::new(),
                },
                session: Some(42),
                held: vec![TaskId::from_u64(7)],
            },
        ),
        encode(&to_endpoint, ToEndpoint::Heartbeat),
        encode(&to_endpoint, ToEndpoint::Goodbye),
        encode(
            &to_endpoint,
            ToEndpoint::Results {
                seq: 1,
                results: Vec::new(),
            },
        ),
    ]
}

fn handshake_seeds() -> Vec<Vec<u8>> {
    use funcx_transport::fuzzing::{TOKEN, VERSION};
    let preamble = |version: u16, token: &[u8]| {
        let mut out = b"FUNCX".to_vec();
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&(token.len() as u16).to_be_bytes());
        out.extend_from_slice(token);
        out
    };
    vec![
        preamble(VERSION, TOKEN),
        preamble(VERSION + 1, TOKEN),
        preamble(VERSION, b"wrong"),
        [b"FUNCX".as_slice(), &VERSION.to_be_bytes(), &[0]].concat(),
    ]
}

fn worker_output(data: &[u8]) {
    let decoder = funcx_python::protocol::Decoder::new(1 << 20, 1 << 16);
    let mut buffer = BytesMut::from(data);
    while let Ok(Some(_)) = decoder.decode(&mut buffer) {}
}

fn worker_output_seeds() -> Vec<Vec<u8>> {
    let ready = {
        let mut body = 4242u32.to_le_bytes().to_vec();
        let version = b"cpython 3.11.7";
        body.extend_from_slice(&(version.len() as u16).to_le_bytes());
        body.extend_from_slice(version);
        build::frame(from_worker::READY, &body)
    };
    let pickled = Payload::pickle(&vec![1, 2, 3]).map(|p| p.as_bytes().to_vec());
    let exception = build::exception("ValueError", "bad x", "Traceback ...", 3);
    vec![
        ready,
        build::results(&[
            build::result(1, status::OK, &pickled.unwrap_or_default()),
            build::result(2, status::EXCEPTION, &exception),
            build::result(3, status::OK_JSON, b"[1, 2.5, \"x\"]"),
            build::result(4, status::TOO_LARGE, &(1u64 << 40).to_le_bytes()),
            build::result(5, status::UNKNOWN_FUNCTION, &9u32.to_le_bytes()),
        ]),
        build::frame(from_worker::STARTED, &7u64.to_le_bytes()),
    ]
}

fn result_stream(data: &[u8]) {
    decode_all(ResultFrame::codec, data);
}

fn result_stream_seeds() -> Vec<Vec<u8>> {
    let codec = ResultFrame::codec();
    vec![
        encode(
            &codec,
            ResultFrame {
                lagged: 0,
                results: Vec::new(),
            },
        ),
        encode(
            &codec,
            ResultFrame {
                lagged: 3,
                results: Vec::new(),
            },
        ),
    ]
}

fn payload(data: &[u8]) {
    let _ = Payload::from_pickled(data.to_vec()).decode::<serde_json::Value>();
    let _ = Payload::from_json(data.to_vec()).decode::<serde_json::Value>();
    let _ = Payload::from_pickled(data.to_vec()).decode::<Args>();
}

fn payload_seeds() -> Vec<Vec<u8>> {
    let value = serde_json::json!({
        "n": 3, "xs": [1.5, -2, null, true], "name": "run-7", "nested": {"a": [[1], [2, 3]]}
    });
    let mut seeds = Vec::new();
    if let Ok(p) = Payload::pickle(&value) {
        seeds.push(p.as_bytes().to_vec());
    }
    if let Ok(p) = Payload::json(&value) {
        seeds.push(p.as_bytes().to_vec());
    }
    if let Ok(p) = Payload::pickle(&Args::new().arg(&1).kwarg("k", "v")) {
        seeds.push(p.as_bytes().to_vec());
    }
    seeds
}

/// Pickles of every plain opcode: serde-pickle's own, and what Python's protocol 4 writes
/// (frames, MARK ... TUPLE, memoized values, a list built by APPENDS).
fn plain_pickle_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    let value = (
        None::<i64>,
        true,
        -70_000_i64,
        2.5_f64,
        "snowman ☃",
        vec![vec![1_u8; 300], vec![2; 3]],
        vec![(1_i64, "x"); 20],
    );
    if let Ok(p) = Payload::pickle(&value) {
        seeds.push(p.as_bytes().to_vec());
    }
    // pickle.dumps([1, 2.5, None, True, 'abc', b'\x09\x09', ()], 4)
    seeds.push(
        b"\x80\x04\x95\x1e\x00\x00\x00\x00\x00\x00\x00]\x94(K\x01G@\x04\x00\x00\x00\x00\x00\x00N\x88\x8c\x03abc\x94C\x02\t\t\x94)e."
            .to_vec(),
    );
    // What the plain decoder once took for a sequence: an item appended to a tuple.
    seeds.push(b"\x80\x04)\x94C\x03abca.".to_vec());
    seeds
}

fn gateway_config(data: &[u8]) {
    let _ = funcx_gateway::GatewayConfig::from_toml(&String::from_utf8_lossy(data));
}

fn endpoint_config(data: &[u8]) {
    let _ = funcx::endpoint::config::EndpointConfig::parse(
        &String::from_utf8_lossy(data),
        Path::new("fuzz.toml"),
    );
}

fn endpoint_config_seeds() -> Vec<Vec<u8>> {
    use funcx::endpoint::config::template;
    let mut seeds = Vec::new();
    for provider in ["local", "slurm", "pbs", "gridengine", "ec2"] {
        let text = template("fuzz", provider, Some(("http://127.0.0.1:1", "token")));
        // The same file with every commented key switched on reaches the checks of each.
        let all_keys: String = text
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest) if rest.contains(" = ") => rest,
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n");
        seeds.push(text.into_bytes());
        seeds.push(all_keys.into_bytes());
    }
    seeds
}

fn slurm(data: &[u8]) {
    funcx_providers::fuzzing::slurm_squeue(data);
    funcx_providers::fuzzing::slurm_sacct(data);
    funcx_providers::fuzzing::slurm_sbatch(data);
}
