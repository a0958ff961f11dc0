//! The C API's remote executor, called as C would call it, against a real gateway on
//! loopback with an endpoint of real Python workers dialling in. (`examples/c/run.sh` covers
//! the local executor from a real C program.)
#![allow(unsafe_code)] // calling the C API is unsafe by definition

use std::ffi::{CStr, CString};
use std::ptr;

use funcx_c::*;
use funcx_client::EndpointDial;
use funcx_core::Executor;
use funcx_gateway::{Gateway, GatewayConfig, UserConfig};
use funcx_python::PythonRuntime;
use funcx_transport::remote::{run_manager, ExecutorRunner, ManagerConfig, ManagerId, ManagerInfo};

const HANG_MS: i64 = 30_000;

/// A gateway with one user and one endpoint of 2 Python workers: (url, user token, endpoint
/// id), and the runtime that serves them (dropping it stops them).
fn gateway() -> (tokio::runtime::Runtime, String, String, String) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (url, token, endpoint) = runtime.block_on(async {
        let token = funcx_gateway::new_token().unwrap();
        let config = GatewayConfig {
            users: vec![UserConfig {
                name: "alice".into(),
                token: token.clone(),
            }],
            ..GatewayConfig::default()
        };
        let gateway = Gateway::start(config).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { gateway.serve(listener).await });
        let url = format!("http://{address}");
        let registered: serde_json::Value = reqwest::Client::new()
            .post(format!("{url}/v1/endpoints"))
            .bearer_auth(&token)
            .json(&serde_json::json!({ "name": "c-test" }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let endpoint = registered["endpoint_id"].as_str().unwrap().to_owned();
        let endpoint_token = registered["endpoint_token"].as_str().unwrap().to_owned();
        let local = Executor::builder()
            .workers(2)
            .start(PythonRuntime::default());
        let info = ManagerInfo {
            id: ManagerId(1),
            block: None,
            host: "localhost".into(),
            pid: std::process::id(),
            slots: 2,
            gpus: vec![],
            cores: None,
            memory: None,
            nodes: Vec::new(),
        };
        tokio::spawn(run_manager(
            EndpointDial::new(address.to_string(), &endpoint, &endpoint_token),
            ExecutorRunner::new(local, 2),
            ManagerConfig::new(info),
        ));
        (url, token, endpoint)
    });
    (runtime, url, token, endpoint)
}

fn c(text: &str) -> CString {
    CString::new(text).unwrap()
}

/// The message of `error`, then frees it.
fn take(error: *mut FuncxError) -> (FuncxErrorKind, String) {
    assert!(!error.is_null(), "an error was expected");
    // SAFETY: a live error from the API, freed once here.
    unsafe {
        let kind = funcx_error_kind(error);
        let message = CStr::from_ptr(funcx_error_message(error))
            .to_string_lossy()
            .into_owned();
        funcx_error_free(error);
        (kind, message)
    }
}

#[test]
fn a_remote_executor_runs_json_calls_through_the_gateway() {
    let (_runtime, url, token, endpoint) = gateway();
    let (url, token, endpoint) = (c(&url), c(&token), c(&endpoint));
    // SAFETY: every pointer below is a live CString or an object from the API, freed once.
    unsafe {
        let mut error = ptr::null_mut();
        let executor =
            funcx_executor_new_remote(url.as_ptr(), token.as_ptr(), endpoint.as_ptr(), &mut error);
        assert!(!executor.is_null(), "{:?}", take(error));
        let scale = funcx_function_new(
            c("def scale(x, factor=2):\n    return [x * factor, str(x)]\n").as_ptr(),
            c("scale").as_ptr(),
            ptr::null_mut(),
        );
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let args = c(&format!(
                    "{{\"args\": [{i}], \"kwargs\": {{\"factor\": 3}}}}"
                ));
                funcx_submit_json(executor, scale, args.as_ptr(), ptr::null_mut())
            })
            .collect();
        for (i, &task) in tasks.iter().enumerate() {
            let mut json = ptr::null_mut();
            let mut error = ptr::null_mut();
            let status = funcx_task_wait_json(task, HANG_MS, &mut json, &mut error);
            assert_eq!(status, FuncxStatus::Ok, "{:?}", take(error));
            let text = CStr::from_ptr(json).to_str().unwrap().to_owned();
            assert_eq!(text, format!("[{},\"{i}\"]", i * 3));
            funcx_string_free(json);
            funcx_task_free(task);
        }
        // A Python error keeps its kind across the gateway.
        let task = funcx_submit_json(executor, scale, c("[]").as_ptr(), ptr::null_mut());
        let mut error = ptr::null_mut();
        let status = funcx_task_wait_json(task, HANG_MS, ptr::null_mut(), &mut error);
        assert_eq!(status, FuncxStatus::Failed);
        let (kind, message) = take(error);
        assert_eq!(kind, FuncxErrorKind::Python, "{message}");
        assert!(message.contains("TypeError"), "{message}");
        funcx_task_free(task);
        funcx_function_free(scale);
        funcx_executor_free(executor);
    }
}

#[test]
fn a_wrong_token_or_endpoint_is_a_remote_error_with_the_reason() {
    let (_runtime, url, token, _endpoint) = gateway();
    let (url, token) = (c(&url), c(&token));
    // SAFETY: live CStrings; errors freed by `take`.
    unsafe {
        let mut error = ptr::null_mut();
        let bad = c("not-the-token");
        let executor =
            funcx_executor_new_remote(url.as_ptr(), bad.as_ptr(), c("x").as_ptr(), &mut error);
        assert!(executor.is_null());
        let (kind, message) = take(error);
        assert_eq!(kind, FuncxErrorKind::Remote, "{message}");
        assert!(message.contains("401"), "{message}");

        let mut error = ptr::null_mut();
        let executor = funcx_executor_new_remote(
            url.as_ptr(),
            token.as_ptr(),
            c("no-such-endpoint").as_ptr(),
            &mut error,
        );
        assert!(executor.is_null());
        let (kind, message) = take(error);
        assert_eq!(kind, FuncxErrorKind::Remote, "{message}");
        assert!(message.contains("404"), "{message}");

        // NULL text is an invalid argument, not a crash.
        let mut error = ptr::null_mut();
        let executor =
            funcx_executor_new_remote(ptr::null(), token.as_ptr(), ptr::null(), &mut error);
        assert!(executor.is_null());
        assert_eq!(take(error).0, FuncxErrorKind::InvalidArgument);
    }
}

#[test]
fn null_handles_are_refused_or_ignored_never_a_crash() {
    // SAFETY: NULL is allowed everywhere and must be harmless.
    unsafe {
        let mut error = ptr::null_mut();
        let status = funcx_task_wait_json(ptr::null(), 0, ptr::null_mut(), &mut error);
        assert_eq!(status, FuncxStatus::Failed);
        assert_eq!(take(error).0, FuncxErrorKind::InvalidArgument);
        funcx_task_cancel(ptr::null());
        assert_eq!(funcx_task_id(ptr::null()), 0);
        funcx_task_free(ptr::null_mut());
        funcx_function_free(ptr::null_mut());
        funcx_executor_shutdown(ptr::null());
        funcx_executor_free(ptr::null_mut());
        funcx_error_free(ptr::null_mut());
        funcx_string_free(ptr::null_mut());
        funcx_bytes_free(ptr::null_mut(), 0);
        assert_eq!(funcx_error_kind(ptr::null()), FuncxErrorKind::Internal);
        assert!(funcx_error_message(ptr::null()).is_null());
        // Errors are optional: a failing call without an error pointer just fails.
        let task = funcx_submit_json(ptr::null(), ptr::null(), ptr::null(), ptr::null_mut());
        assert!(task.is_null());
    }
}
