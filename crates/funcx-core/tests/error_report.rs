//! The stored and wire form of a task error (`TaskErrorReport`), pinned byte for byte: a
//! change here breaks every stored task and every API client, so it must be deliberate.

use std::time::Duration;

use funcx_core::{ErrorCode, PythonException, TaskError, TaskErrorReport, WorkerExit};

fn exception() -> PythonException {
    PythonException {
        type_name: "ValueError".into(),
        message: "bad input".into(),
        traceback: "Traceback (most recent call last):\nValueError: bad input\n".into(),
        line: None,
    }
}

/// One error of every code, with the exact JSON a gateway stores and shows for it.
fn golden() -> Vec<(TaskError, &'static str)> {
    let mut syntax = exception();
    syntax.type_name = "SyntaxError".into();
    syntax.message = "invalid syntax".into();
    syntax.line = Some(3);
    vec![
        (
            TaskError::python(exception()),
            r#"{"code":"python","message":"function raised ValueError: bad input","python":{"type_name":"ValueError","message":"bad input","traceback":"Traceback (most recent call last):\nValueError: bad input\n","line":null},"worker_exit":null,"reason":null,"size":null,"limit":null,"timeout":null}"#,
        ),
        (
            TaskError::load(syntax),
            r#"{"code":"load","message":"function failed to load: SyntaxError: invalid syntax (line 3)","python":{"type_name":"SyntaxError","message":"invalid syntax","traceback":"Traceback (most recent call last):\nValueError: bad input\n","line":3},"worker_exit":null,"reason":null,"size":null,"limit":null,"timeout":null}"#,
        ),
        (
            TaskError::arguments_unpickle(exception()),
            r#"{"code":"arguments_unpickle","message":"worker could not unpickle the arguments: ValueError: bad input","python":{"type_name":"ValueError","message":"bad input","traceback":"Traceback (most recent call last):\nValueError: bad input\n","line":null},"worker_exit":null,"reason":null,"size":null,"limit":null,"timeout":null}"#,
        ),
        (
            TaskError::result_pickle(exception()),
            r#"{"code":"result_pickle","message":"worker could not pickle the result: ValueError: bad input","python":{"type_name":"ValueError","message":"bad input","traceback":"Traceback (most recent call last):\nValueError: bad input\n","line":null},"worker_exit":null,"reason":null,"size":null,"limit":null,"timeout":null}"#,
        ),
        (
            TaskError::serialize("a set is not picklable here"),
            r#"{"code":"serialize","message":"could not serialize an argument: a set is not picklable here","python":null,"worker_exit":null,"reason":"a set is not picklable here","size":null,"limit":null,"timeout":null}"#,
        ),
        (
            TaskError::decode("expected i64, got str"),
            r#"{"code":"decode","message":"could not decode the result: expected i64, got str","python":null,"worker_exit":null,"reason":"expected i64, got str","size":null,"limit":null,"timeout":null}"#,
        ),
        (
            TaskError::result_too_large(2048, 1024),
            r#"{"code":"result_too_large","message":"result of 2048 bytes is over the limit of 1024 bytes","python":null,"worker_exit":null,"reason":null,"size":2048,"limit":1024,"timeout":null}"#,
        ),
        (
            TaskError::arguments_too_large(4096, 1024),
            r#"{"code":"arguments_too_large","message":"arguments of 4096 bytes are over the limit of 1024 bytes; the task was not sent","python":null,"worker_exit":null,"reason":null,"size":4096,"limit":1024,"timeout":null}"#,
        ),
        (
            TaskError::worker_died(WorkerExit::Signal(9)),
            r#"{"code":"worker_died","message":"worker died while running the task (signal 9 (SIGKILL, e.g. the out-of-memory killer))","python":null,"worker_exit":{"signal":9},"reason":null,"size":null,"limit":null,"timeout":null}"#,
        ),
        (
            TaskError::worker_died(WorkerExit::Code(3)),
            r#"{"code":"worker_died","message":"worker died while running the task (exit code 3)","python":null,"worker_exit":{"code":3},"reason":null,"size":null,"limit":null,"timeout":null}"#,
        ),
        (
            TaskError::worker_died(WorkerExit::Unknown),
            r#"{"code":"worker_died","message":"worker died while running the task (unknown status)","python":null,"worker_exit":"unknown","reason":null,"size":null,"limit":null,"timeout":null}"#,
        ),
        (
            TaskError::timeout(Duration::from_millis(1500)),
            r#"{"code":"timeout","message":"task timed out after 1.5s; its worker was replaced","python":null,"worker_exit":null,"reason":null,"size":null,"limit":null,"timeout":{"secs":1,"nanos":500000000}}"#,
        ),
        (
            TaskError::cancelled(),
            r#"{"code":"cancelled","message":"task was cancelled","python":null,"worker_exit":null,"reason":null,"size":null,"limit":null,"timeout":null}"#,
        ),
        (
            TaskError::shutdown(),
            r#"{"code":"shutdown","message":"executor was shut down before the task ran","python":null,"worker_exit":null,"reason":null,"size":null,"limit":null,"timeout":null}"#,
        ),
        (
            TaskError::no_workers("python3: not found"),
            r#"{"code":"no_workers","message":"no worker could be started: python3: not found","python":null,"worker_exit":null,"reason":"python3: not found","size":null,"limit":null,"timeout":null}"#,
        ),
        (
            TaskError::manager_lost("no heartbeat for 10s"),
            r#"{"code":"manager_lost","message":"the manager running the task was lost: no heartbeat for 10s","python":null,"worker_exit":null,"reason":"no heartbeat for 10s","size":null,"limit":null,"timeout":null}"#,
        ),
        (
            TaskError::protocol("unexpected frame"),
            r#"{"code":"protocol","message":"protocol error: unexpected frame","python":null,"worker_exit":null,"reason":"unexpected frame","size":null,"limit":null,"timeout":null}"#,
        ),
        (
            TaskError::function_refused("function 'f' is not on this endpoint's allow-list"),
            r#"{"code":"function_refused","message":"the endpoint refused the task: function 'f' is not on this endpoint's allow-list","python":null,"worker_exit":null,"reason":"function 'f' is not on this endpoint's allow-list","size":null,"limit":null,"timeout":null}"#,
        ),
        (
            TaskError::format_refused("argument 0 is a pickle; this endpoint allows json"),
            r#"{"code":"format_refused","message":"the endpoint refused the task: argument 0 is a pickle; this endpoint allows json","python":null,"worker_exit":null,"reason":"argument 0 is a pickle; this endpoint allows json","size":null,"limit":null,"timeout":null}"#,
        ),
        (
            TaskError::unsatisfiable("the task asks for 5 cores (the node has 4)"),
            r#"{"code":"unsatisfiable","message":"the task cannot be placed: the task asks for 5 cores (the node has 4)","python":null,"worker_exit":null,"reason":"the task asks for 5 cores (the node has 4)","size":null,"limit":null,"timeout":null}"#,
        ),
    ]
}

#[test]
fn every_code_has_its_golden_json() {
    let errors = golden();
    for (error, json) in &errors {
        assert_eq!(
            serde_json::to_string(error).expect("to json"),
            *json,
            "{error}"
        );
        assert_eq!(
            serde_json::to_string(&error.report()).expect("to json"),
            *json
        );
    }
    // Every code is pinned by at least one golden.
    for code in ErrorCode::ALL {
        assert!(
            errors.iter().any(|(error, _)| error.code() == code),
            "no golden JSON for {code}"
        );
    }
}

#[test]
fn golden_json_reads_back_as_the_same_error() {
    for (error, json) in golden() {
        let back: TaskError = serde_json::from_str(json).expect("from json");
        assert_eq!(back.code(), error.code());
        assert_eq!(back.to_string(), error.to_string());
        assert_eq!(back.report(), error.report());
        assert_eq!(back.is_system(), error.is_system());
        assert_eq!(back.worker_exit(), error.worker_exit());
        assert_eq!(back.python_exception(), error.python_exception());
    }
}

/// Stored tasks (redb) and the binary result stream are postcard: the code is stored as its
/// string there too, so no variant order can change what old records mean.
#[test]
fn postcard_keeps_the_code_as_a_string() {
    for (error, _) in golden() {
        let bytes = postcard::to_stdvec(&error).expect("to postcard");
        let code = error.code().as_str().as_bytes();
        assert_eq!(
            bytes[0] as usize,
            code.len(),
            "{error}: a length-prefixed string first"
        );
        assert_eq!(&bytes[1..1 + code.len()], code, "{error}");
        let back: TaskError = postcard::from_bytes(&bytes).expect("from postcard");
        assert_eq!(back.report(), error.report());
    }
}

#[test]
fn codes_are_their_strings() {
    for code in ErrorCode::ALL {
        assert_eq!(ErrorCode::from_code(code.as_str()), Some(code));
        assert_eq!(
            serde_json::to_string(&code).expect("json"),
            format!("\"{}\"", code.as_str())
        );
    }
    let unknown = serde_json::from_str::<ErrorCode>("\"exploded\"").unwrap_err();
    assert!(
        unknown
            .to_string()
            .contains("unknown task error code `exploded`"),
        "{unknown}"
    );
}

/// A report written by hand (another client, an older tool) with only a code and a message
/// still reads as that kind of error.
#[test]
fn a_minimal_report_is_still_an_error_of_its_code() {
    let json = r#"{"code":"worker_died","message":"gone","python":null,"worker_exit":null,"reason":null,"size":null,"limit":null,"timeout":null}"#;
    let report: TaskErrorReport = serde_json::from_str(json).expect("report");
    let error = TaskError::from(report);
    assert!(error.is_worker_died() && error.is_system());
    assert_eq!(error.worker_exit(), Some(WorkerExit::Unknown));
    let json = r#"{"code":"manager_lost","message":"node 7 died","python":null,"worker_exit":null,"reason":null,"size":null,"limit":null,"timeout":null}"#;
    let error: TaskError = serde_json::from_str(json).expect("error");
    assert!(error.is_manager_lost());
    assert!(error.to_string().contains("node 7 died"), "{error}");
}
