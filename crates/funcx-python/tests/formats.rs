//! The JSON data format and an executor's `allowed_formats`, on real `python3` workers.

use std::path::PathBuf;
use std::time::Duration;

use funcx_core::{Args, Executor, Format, Function, Payload, TaskError};
use funcx_python::{PythonConfig, PythonRuntime};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(60);

fn executor(allowed: Option<Vec<Format>>) -> Executor {
    let config = match std::env::var_os("FUNCX_TEST_PYTHON") {
        Some(python) => PythonConfig::new().python(python),
        None => PythonConfig::new(),
    };
    let builder = Executor::builder().workers(1);
    let builder = match allowed {
        Some(formats) => builder.allowed_formats(formats),
        None => builder,
    };
    builder.start(PythonRuntime::new(config))
}

async fn run(executor: &Executor, function: &Function, args: Args) -> Result<Payload, TaskError> {
    tokio::time::timeout(TIMEOUT, executor.submit(function, args))
        .await
        .expect("the task finishes in time")
}

/// Returns its argument and the Python type it arrived as, so the test sees what
/// `json.loads` built.
const DESCRIBE: &str = "def describe(x):\n    return {'value': x, 'type': type(x).__name__}\n";

#[tokio::test(flavor = "multi_thread")]
async fn json_arguments_and_results_round_trip() {
    let executor = executor(None);
    let describe = Function::from_source(DESCRIBE, "describe");
    let cases = [
        (json!(42), "int"),
        (json!(-2.5), "float"),
        (json!("héllo \"quoted\""), "str"),
        (json!(null), "NoneType"),
        (json!(true), "bool"),
        (json!([1, "two", [3.5, null]]), "list"),
        (json!({"a": {"b": [1, 2, {"c": null}]}, "d": "e"}), "dict"),
        (json!(1_i64 << 60), "int"),
    ];
    for (value, python_type) in cases {
        let payload = Payload::json(&value).expect("json");
        let result = run(&executor, &describe, Args::new().payload(payload))
            .await
            .expect("the task succeeds");
        assert_eq!(result.format(), Format::Json, "a JSON task answers in JSON");
        let back: Value = result.decode().expect("decodes");
        assert_eq!(back, json!({"value": value, "type": python_type}));
    }

    // Several positional and keyword arguments, all JSON.
    let add = Function::from_source(
        "def add(a, b, scale=1):\n    return (a + b) * scale\n",
        "add",
    );
    let args = Args::new()
        .payload(Payload::json(&2).expect("json"))
        .payload(Payload::json(&3).expect("json"))
        .kwarg_payload("scale", Payload::json(&10).expect("json"));
    let result = run(&executor, &add, args).await.expect("adds");
    assert_eq!(result.format(), Format::Json);
    assert_eq!(result.decode::<i64>().expect("an int"), 50);

    // The same worker still speaks pickle to pickle tasks.
    let result = run(&executor, &add, Args::new().arg(&2).arg(&3))
        .await
        .expect("adds");
    assert_eq!(result.format(), Format::Pickle);
    assert_eq!(result.decode::<i64>().expect("an int"), 5);
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_result_with_no_json_form_fails_the_task_with_a_serialization_error() {
    let executor = executor(None);
    let cases = [
        ("def f(x):\n    return {1, 2}\n", "set"),
        ("def f(x):\n    return float('nan')\n", "NaN"),
        ("def f(x):\n    return object()\n", "object"),
    ];
    for (source, what) in cases {
        let function = Function::from_source(source, "f");
        let error = run(
            &executor,
            &function,
            Args::new().payload(Payload::json(&1).expect("json")),
        )
        .await
        .expect_err("no JSON form");
        assert!(error.is_serialization(), "{what}: {error}");
        assert!(!error.is_system(), "{what}: {error}");
    }
    // The worker survived: the next task runs.
    let describe = Function::from_source(DESCRIBE, "describe");
    let ok = run(
        &executor,
        &describe,
        Args::new().payload(Payload::json(&7).expect("json")),
    )
    .await
    .expect("still serving");
    assert_eq!(ok.decode::<Value>().expect("json")["value"], 7);
    executor.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_json_or_mixed_formats_are_argument_errors() {
    let executor = executor(None);
    let describe = Function::from_source(DESCRIBE, "describe");
    let error = run(
        &executor,
        &describe,
        Args::new().payload(Payload::from_json(&b"{oops"[..])),
    )
    .await
    .expect_err("not JSON");
    assert!(error.is_serialization(), "{error}");

    let args = Args::new()
        .payload(Payload::json(&1).expect("json"))
        .arg(&2);
    let error = run(&executor, &describe, args).await.expect_err("mixed");
    assert!(error.is_serialization(), "{error}");
    assert!(error.to_string().contains("mix data formats"), "{error}");
    executor.shutdown().await;
}

/// A pickle whose loading creates `marker`: if the worker ever unpickles it, the file exists.
fn booby_trapped_pickle(marker: &std::path::Path) -> Vec<u8> {
    let script = format!(
        "import pickle, sys\nclass Trap:\n    def __reduce__(self):\n        return (open, ({:?}, 'w'))\nsys.stdout.buffer.write(pickle.dumps(Trap()))\n",
        marker.to_str().expect("a UTF-8 path")
    );
    let python = std::env::var_os("FUNCX_TEST_PYTHON").unwrap_or_else(|| "python3".into());
    let output = std::process::Command::new(python)
        .args(["-c", &script])
        .output()
        .expect("python3 runs");
    assert!(output.status.success(), "{output:?}");
    output.stdout
}

fn marker(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("funcx-formats-{}-{name}", std::process::id()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_json_only_executor_refuses_pickles_before_any_worker_sees_them() {
    let executor = executor(Some(vec![Format::Json]));
    let describe = Function::from_source(DESCRIBE, "describe");

    // A pickled argument that would create a file when loaded.
    let argument_marker = marker("argument");
    let trap = Payload::from_pickled(booby_trapped_pickle(&argument_marker));
    let error = run(&executor, &describe, Args::new().payload(trap.clone()))
        .await
        .expect_err("refused");
    assert!(error.is_format_refused(), "{error}");
    assert_eq!(error.code(), funcx_core::ErrorCode::FormatRefused);
    assert!(
        error.to_string().contains("argument 0 is pickle"),
        "{error}"
    );
    // As a keyword argument too, and next to JSON ones.
    let args = Args::new()
        .payload(Payload::json(&1).expect("json"))
        .kwarg_payload("x", trap);
    let error = run(&executor, &describe, args).await.expect_err("refused");
    assert!(error.is_format_refused(), "{error}");

    // A pickled function that would create a file when loaded.
    let function_marker = marker("function");
    let pickled = Function::from_pickle(booby_trapped_pickle(&function_marker), "trap");
    let error = run(
        &executor,
        &pickled,
        Args::new().payload(Payload::json(&1).expect("json")),
    )
    .await
    .expect_err("refused");
    assert!(error.is_format_refused(), "{error}");
    assert!(error.to_string().contains("pickled"), "{error}");

    // JSON and source text still run, on the same worker, and it never loaded a trap.
    let ok = run(
        &executor,
        &describe,
        Args::new().payload(Payload::json(&[1, 2]).expect("json")),
    )
    .await
    .expect("JSON runs");
    assert_eq!(ok.decode::<Value>().expect("json")["value"], json!([1, 2]));
    assert!(!argument_marker.exists(), "the pickled argument was loaded");
    assert!(!function_marker.exists(), "the pickled function was loaded");
    executor.shutdown().await;

    // The same traps do run where pickles are allowed: the test would notice a loaded one.
    let executor = executor_allowing_everything();
    let trap = Payload::from_pickled(booby_trapped_pickle(&argument_marker));
    let _ = run(&executor, &describe, Args::new().payload(trap)).await;
    assert!(argument_marker.exists(), "an allowed pickle is loaded");
    let _ = std::fs::remove_file(&argument_marker);
    executor.shutdown().await;
}

fn executor_allowing_everything() -> Executor {
    executor(Some(vec![Format::Pickle, Format::Json]))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_executor_with_an_allow_list_runs_only_its_functions() {
    let describe = Function::from_source(DESCRIBE, "describe");
    // Writes a file when run: the test sees whether a refused function ever ran.
    let marker = marker("refused-function");
    let other = Function::from_source(
        format!(
            "def other(x):\n    open({:?}, 'w').close()\n    return x\n",
            marker.to_str().expect("a UTF-8 path")
        ),
        "other",
    );
    let executor = Executor::builder()
        .workers(1)
        .allowed_functions([describe.id()])
        .start(PythonRuntime::new(PythonConfig::new()));
    let error = run(&executor, &other, Args::new().arg(&1))
        .await
        .expect_err("not on the list");
    assert!(error.is_function_refused(), "{error}");
    assert_eq!(error.code(), funcx_core::ErrorCode::FunctionRefused);
    assert!(
        error.to_string().contains(&other.id().to_string()),
        "{error}"
    );
    let ok = run(&executor, &describe, Args::new().arg(&1))
        .await
        .expect("on the list");
    assert_eq!(ok.format(), Format::Pickle);
    assert!(!marker.exists(), "the refused function ran");
    executor.shutdown().await;
}
