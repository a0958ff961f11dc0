//! The API's bodies in both encodings, JSON and postcard.

use super::*;

#[test]
fn blobs_are_base64_in_json_and_bytes_in_postcard() {
    let blob = Blob(vec![0, 1, 255]);
    assert_eq!(serde_json::to_string(&blob).unwrap(), "\"AAH/\"");
    let back: Blob = serde_json::from_str("\"AAH/\"").unwrap();
    assert_eq!(back, blob);
    let err = serde_json::from_str::<Blob>("\"not base64!\"").unwrap_err();
    assert!(err.to_string().contains("invalid base64"), "{err}");
    let bytes = postcard::to_stdvec(&blob).unwrap();
    assert_eq!(bytes, [3, 0, 1, 255]);
    assert_eq!(postcard::from_bytes::<Blob>(&bytes).unwrap(), blob);
}

#[test]
fn task_views_round_trip_through_postcard() {
    let view = TaskView {
        id: 3,
        state: TaskState::Failed,
        timeline: Timeline::submitted_now(),
        result: None,
        error: Some(TaskError::cancelled()),
        error_message: Some("cancelled".into()),
        result_format: None,
    };
    let back: TaskView = postcard::from_bytes(&postcard::to_stdvec(&view).unwrap()).unwrap();
    assert_eq!(back.id, 3);
    assert!(back.error.unwrap().is_cancelled());
    let json = serde_json::to_value(&view).unwrap();
    assert_eq!(json["state"], "failed");
    assert_eq!(json["error"]["code"], "cancelled");
    assert!(json["result"].is_null());
}

#[test]
fn json_submissions_carry_plain_values_and_pickles_stay_base64() {
    let task: SubmitTask = serde_json::from_value(serde_json::json!({
        "function_id": "f",
        "format": "json",
        "args": [1, "x", {"k": [null, 2.5]}],
        "kwargs": {"n": true}
    }))
    .unwrap();
    assert_eq!(task.format, Format::Json);
    let args: Vec<String> = task
        .args
        .iter()
        .map(|blob| String::from_utf8(blob.0.clone()).unwrap())
        .collect();
    assert_eq!(args, ["1", "\"x\"", r#"{"k":[null,2.5]}"#]);
    assert_eq!(task.kwargs["n"].0, b"true");
    // Back to the same JSON, and through postcard unchanged.
    let json = serde_json::to_value(&task).unwrap();
    assert_eq!(json["args"][2]["k"][1], 2.5);
    let back: SubmitTask = postcard::from_bytes(&postcard::to_stdvec(&task).unwrap()).unwrap();
    assert_eq!((back.format, back.args.len()), (Format::Json, 3));

    // Without a format, arguments are base64 pickles, as before.
    let task: SubmitTask =
        serde_json::from_value(serde_json::json!({"function_id": "f", "args": ["AAH/"]})).unwrap();
    assert_eq!(
        (task.format, &task.args[0].0[..]),
        (Format::Pickle, &[0, 1, 255][..])
    );
    let error = serde_json::from_value::<SubmitTask>(serde_json::json!({
        "function_id": "f", "args": [1]
    }))
    .unwrap_err();
    assert!(
        error.to_string().contains("\"format\": \"json\""),
        "{error}"
    );
}

#[test]
fn resources_travel_only_when_a_task_asks_for_more_than_a_plain_one() {
    let parse = |resources| {
        serde_json::from_value::<SubmitTask>(serde_json::json!({
            "function_id": "f", "resources": resources
        }))
    };
    let task = parse(serde_json::json!({"gpus": 1})).unwrap();
    let one_gpu = Resources {
        gpus: 1,
        ..Resources::default()
    };
    assert_eq!(task.resources, Some(one_gpu), "cores default to 1");
    let json = serde_json::to_value(&task).unwrap();
    assert_eq!(
        json["resources"],
        serde_json::json!({"cores": 1, "gpus": 1})
    );
    let back: SubmitTask = postcard::from_bytes(&postcard::to_stdvec(&task).unwrap()).unwrap();
    assert_eq!(back.resources, Some(one_gpu));
    // Asking for one core or nothing is a plain task, and says nothing.
    for plain in [serde_json::json!({}), serde_json::json!({"cores": 1})] {
        let task = parse(plain).unwrap();
        assert_eq!(task.resources, None);
        assert!(serde_json::to_value(&task)
            .unwrap()
            .get("resources")
            .is_none());
    }
    assert!(
        parse(serde_json::json!({"gpu": 1})).is_err(),
        "a typo is refused"
    );
}

#[test]
fn json_results_show_as_values() {
    let view = TaskView {
        id: 1,
        state: TaskState::Succeeded,
        timeline: Timeline::submitted_now(),
        result: Some(Blob(br#"{"a":[1,null]}"#.to_vec())),
        error: None,
        error_message: None,
        result_format: Some(Format::Json),
    };
    let json = serde_json::to_value(&view).unwrap();
    assert_eq!(json["result"], serde_json::json!({"a": [1, null]}));
    assert_eq!(json["result_format"], "json");
    let back: TaskView = serde_json::from_value(json).unwrap();
    assert_eq!(back.result, view.result);
    let back: TaskView = postcard::from_bytes(&postcard::to_stdvec(&view).unwrap()).unwrap();
    assert_eq!(
        (back.result, back.result_format),
        (view.result, view.result_format)
    );
}

#[test]
fn a_registration_names_its_image_in_json_only_when_it_has_one() {
    let plain = RegisterFunction {
        name: "f".into(),
        source: Some("def f():\n    pass\n".into()),
        pickle: None,
        public: false,
        shared_with: vec![],
        image: None,
    };
    // A gateway from before images refuses fields it does not know.
    assert!(serde_json::to_value(&plain).unwrap().get("image").is_none());
    let boxed = RegisterFunction {
        image: Some("localhost/funcx-image-a:latest".into()),
        ..plain.clone()
    };
    let json = serde_json::to_value(&boxed).unwrap();
    assert_eq!(json["image"], "localhost/funcx-image-a:latest");
    let back: RegisterFunction = serde_json::from_value(json).unwrap();
    assert_eq!(back.image, boxed.image);
    // Postcard writes every field, so both decode.
    for body in [plain, boxed] {
        let back: RegisterFunction =
            postcard::from_bytes(&postcard::to_stdvec(&body).unwrap()).unwrap();
        assert_eq!(back.image, body.image);
    }
}

#[test]
fn whole_nodes_travel_in_json_and_postcard_and_only_when_asked_for() {
    let task = serde_json::from_value::<SubmitTask>(serde_json::json!({
        "function_id": "f", "resources": {"nodes": 2}
    }))
    .unwrap();
    let two_nodes = Resources {
        nodes: 2,
        ..Resources::default()
    };
    assert_eq!(task.resources, Some(two_nodes));
    let json = serde_json::to_value(&task).unwrap();
    assert_eq!(
        json["resources"],
        serde_json::json!({"cores": 1, "nodes": 2})
    );
    // In postcard, a request's node counts follow its tasks; alone, and beside other
    // resources, beside a plain task.
    let both = SubmitTask {
        resources: Some(Resources {
            cores: 2,
            memory: 1 << 20,
            ..two_nodes
        }),
        ..task.clone()
    };
    let plain = SubmitTask {
        resources: None,
        ..task.clone()
    };
    let request = SubmitRequest {
        tasks: vec![task.clone(), plain.clone(), both.clone()],
    };
    let bytes = postcard::to_stdvec(&request).unwrap();
    let back: SubmitRequest = postcard::from_bytes(&bytes).unwrap();
    let asked: Vec<_> = back.tasks.iter().map(|task| task.resources).collect();
    assert_eq!(asked, vec![Some(two_nodes), None, both.resources]);
    // A task without nodes says nothing of them in JSON, for gateways that predate them.
    let one_gpu = SubmitTask {
        resources: Some(Resources {
            gpus: 1,
            ..Resources::default()
        }),
        ..task
    };
    let json = serde_json::to_value(&one_gpu).unwrap();
    assert!(json["resources"].get("nodes").is_none(), "{json}");
}

/// The postcard request of a gateway or client from before tasks could hold nodes: the
/// tasks alone, each in the form tasks still have.
#[derive(serde::Serialize, serde::Deserialize)]
struct RequestBeforeNodes {
    tasks: Vec<SubmitTask>,
}

#[test]
fn postcard_requests_stay_readable_across_the_versions_before_and_after_nodes() {
    let task = |nodes: u32| SubmitTask {
        function_id: "f".into(),
        args: vec![Blob(vec![1, 2, 3])],
        kwargs: BTreeMap::new(),
        timeout_ms: Some(5),
        format: Format::Pickle,
        resources: (nodes > 0).then_some(Resources {
            nodes,
            ..Resources::default()
        }),
    };
    // Without nodes, a request has exactly the bytes it had before them, both ways.
    let plain = SubmitRequest {
        tasks: vec![task(0), task(0)],
    };
    let old = RequestBeforeNodes {
        tasks: plain.tasks.clone(),
    };
    let bytes = postcard::to_stdvec(&plain).unwrap();
    assert_eq!(bytes, postcard::to_stdvec(&old).unwrap());
    let back: SubmitRequest = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back.tasks.len(), 2);
    // An older gateway reads a request with nodes as its tasks (the counts trail them).
    let with_nodes = SubmitRequest {
        tasks: vec![task(2), task(0)],
    };
    let read_before: RequestBeforeNodes =
        postcard::from_bytes(&postcard::to_stdvec(&with_nodes).unwrap()).unwrap();
    assert_eq!(read_before.tasks.len(), 2);
    assert_eq!(read_before.tasks[0].function_id, "f");
    // Counts that do not match the tasks are refused, not guessed at.
    let mut bytes = postcard::to_stdvec(&RequestBeforeNodes {
        tasks: vec![task(0), task(0)],
    })
    .unwrap();
    bytes.extend(postcard::to_stdvec(&vec![2u32]).unwrap());
    assert!(postcard::from_bytes::<SubmitRequest>(&bytes).is_err());
}
