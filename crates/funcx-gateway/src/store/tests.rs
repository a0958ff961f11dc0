//! The contract every store keeps, run against each implementation.

use super::*;

#[test]
fn a_page_stops_at_its_count_or_its_bytes() {
    let record = |id| {
        let mut record = new_record(
            id,
            NewTask {
                owner: "alice".into(),
                endpoint: "e".into(),
                function: funcx_core::Function::from_source("", "f").id(),
                args: Args::new(),
                timeout: None,
                resources: None,
            },
            SystemTime::now(),
        )
        .unwrap();
        record.id = id;
        record
    };
    let records = |size: usize| (0..5u64).rev().map(move |id| Ok((record(id), size)));
    let ids = |page: &TaskPage| page.tasks.iter().map(|t| t.id).collect::<Vec<_>>();
    let by_count = page(records(10), 2).unwrap();
    assert_eq!((ids(&by_count), by_count.next), (vec![4, 3], Some(3)));
    let everything = page(records(10), 5).unwrap();
    assert_eq!(
        (ids(&everything), everything.next),
        (vec![4, 3, 2, 1, 0], None)
    );
    // Large records: a page holds what fits in PAGE_BYTES, and always at least one.
    let by_bytes = page(records(PAGE_BYTES / 2), 5).unwrap();
    assert_eq!((ids(&by_bytes), by_bytes.next), (vec![4, 3], Some(3)));
    let huge = page(records(PAGE_BYTES * 2), 5).unwrap();
    assert_eq!((ids(&huge), huge.next), (vec![4], Some(4)));
}

#[test]
fn function_records_from_before_images_decode_and_plain_ones_keep_their_bytes() {
    let f = funcx_core::Function::from_source("def f(x):\n    return x\n", "f");
    let plain = FunctionRecord {
        id: f.id(),
        owner: "alice".into(),
        name: "f".into(),
        body: f.body().clone(),
        public: true,
        shared_with: vec!["bob".into()],
        image: None,
    };
    // The derived encoding is what a store wrote before functions had images.
    let older = encode(&plain).unwrap();
    assert_eq!(encode_function(&plain).unwrap(), older);
    assert_eq!(decode_function(&older).unwrap(), plain);
    let boxed = f.in_image("localhost/funcx-image-a:latest");
    let record = FunctionRecord {
        id: boxed.id(),
        image: boxed.image().map(str::to_owned),
        ..plain
    };
    let back = decode_function(&encode_function(&record).unwrap()).unwrap();
    assert_eq!(back, record);
    assert_eq!(back.function().id(), boxed.id());
}

pub(crate) async fn contract(store: &dyn TaskStore) {
    // Whole microseconds: what PostgreSQL keeps of a time.
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    let now = SystemTime::UNIX_EPOCH + Duration::from_micros(since.as_micros() as u64);
    let alice = UserRecord {
        name: "alice".into(),
        token_hash: hash_token("a"),
    };
    store.put_user(alice.clone()).await.unwrap();
    assert_eq!(
        store.user_by_token(hash_token("a")).await.unwrap(),
        Some(alice)
    );
    assert_eq!(store.user_by_token(hash_token("b")).await.unwrap(), None);
    let carol = UserRecord {
        name: "carol".into(),
        token_hash: hash_token("c"),
    };
    store.put_user(carol.clone()).await.unwrap();
    let mut names: Vec<String> = store
        .users()
        .await
        .unwrap()
        .into_iter()
        .map(|u| u.name)
        .collect();
    names.sort();
    assert_eq!(names, ["alice", "carol"]);
    assert!(store.delete_user("carol").await.unwrap());
    assert!(!store.delete_user("carol").await.unwrap());
    assert_eq!(store.user_by_token(hash_token("c")).await.unwrap(), None);
    assert_eq!(store.users().await.unwrap().len(), 1);

    let f = funcx_core::Function::from_source("def f(x):\n    return x\n", "f");
    for owner in ["alice", "bob"] {
        store
            .put_function(FunctionRecord {
                id: f.id(),
                owner: owner.into(),
                name: "f".into(),
                body: f.body().clone(),
                public: false,
                shared_with: vec![],
                image: None,
            })
            .await
            .unwrap();
    }
    assert_eq!(store.function(f.id()).await.unwrap().len(), 2);
    // A function in an image: its record keeps the image, and rebuilds the same function.
    let boxed = f.clone().in_image("localhost/funcx-image-a:latest");
    store
        .put_function(FunctionRecord {
            id: boxed.id(),
            owner: "alice".into(),
            name: "f".into(),
            body: boxed.body().clone(),
            public: false,
            shared_with: vec![],
            image: Some("localhost/funcx-image-a:latest".into()),
        })
        .await
        .unwrap();
    let stored = store.function(boxed.id()).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        stored[0].image.as_deref(),
        Some("localhost/funcx-image-a:latest")
    );
    let rebuilt = stored[0].function();
    assert_eq!(rebuilt.id(), boxed.id());
    assert_eq!(rebuilt.image(), Some("localhost/funcx-image-a:latest"));
    assert_eq!(store.function(f.id()).await.unwrap()[0].image, None);
    assert!(store.delete_function(f.id(), "bob").await.unwrap());
    assert!(!store.delete_function(f.id(), "bob").await.unwrap());
    let left = store.function(f.id()).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].owner, "alice");
    assert_eq!(left[0].function().id(), f.id());

    let endpoint = EndpointRecord {
        id: "e1".into(),
        owner: "alice".into(),
        name: "laptop".into(),
        token_hash: hash_token("e"),
        allowed_functions: None,
        allowed_users: Some(vec!["bob".into()]),
        created: now,
    };
    store.put_endpoint(endpoint.clone()).await.unwrap();
    let endpoint_copy = endpoint.clone();
    assert_eq!(store.endpoint("e1").await.unwrap(), Some(endpoint));
    assert_eq!(store.endpoints().await.unwrap().len(), 1);
    assert_eq!(store.endpoint("e2").await.unwrap(), None);
    let gone = EndpointRecord {
        id: "e9".into(),
        ..endpoint_copy.clone()
    };
    store.put_endpoint(gone).await.unwrap();
    assert!(store.delete_endpoint("e9").await.unwrap());
    assert!(!store.delete_endpoint("e9").await.unwrap());
    assert_eq!(store.endpoints().await.unwrap().len(), 1);

    let new = |x: i64| NewTask {
        owner: "alice".into(),
        endpoint: "e1".into(),
        function: f.id(),
        args: Args::new().arg(&x),
        timeout: None,
        resources: None,
    };
    let ids = store
        .insert_tasks(vec![new(1), new(2), new(3)], now)
        .await
        .unwrap();
    assert_eq!(ids.len(), 3);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    let more = store.insert_tasks(vec![new(4)], now).await.unwrap();
    assert!(more[0] > ids[2]);

    let record = store.task(ids[0]).await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Queued);
    assert_eq!(
        record.decode_args().unwrap().positional()[0]
            .decode::<i64>()
            .unwrap(),
        1
    );
    assert_eq!(store.unfinished_tasks().await.unwrap().len(), 4);

    let outcome = |id, value: i64| Finished {
        id,
        result: Ok(Payload::pickle(&value).unwrap()),
        timeline: Timeline::submitted_now(),
    };
    let done = store
        .finish(vec![outcome(ids[0], 10), outcome(9999, 0)], now)
        .await
        .unwrap();
    assert_eq!(done.len(), 1);
    // A second result for a finished task is ignored.
    assert!(store
        .finish(vec![outcome(ids[0], 11)], now)
        .await
        .unwrap()
        .is_empty());
    let record = store.task(ids[0]).await.unwrap().unwrap();
    assert_eq!(record.state, TaskState::Succeeded);
    assert_eq!(record.timeline.submitted, now);
    let value: i64 = record.result.unwrap().unwrap().decode().unwrap();
    assert_eq!(value, 10);
    let unfinished: Vec<u64> = store
        .unfinished_tasks()
        .await
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(unfinished, vec![ids[1], ids[2], more[0]]);

    store
        .finish(
            vec![Finished {
                id: ids[1],
                result: Err(TaskError::cancelled()),
                timeline: Timeline::submitted_now(),
            }],
            now,
        )
        .await
        .unwrap();
    assert_eq!(
        store.task(ids[1]).await.unwrap().unwrap().state,
        TaskState::Failed
    );

    assert!(store.delete_task(ids[2]).await.unwrap());
    assert!(!store.delete_task(ids[2]).await.unwrap());
    assert!(store.task(ids[2]).await.unwrap().is_none());

    // A user's tasks, newest first, a page at a time; a deleted one is not listed.
    let listed = |page: &TaskPage| page.tasks.iter().map(|t| t.id).collect::<Vec<_>>();
    let first_page = store.tasks_of("alice", None, 2).await.unwrap();
    assert_eq!(listed(&first_page), vec![more[0], ids[1]]);
    assert_eq!(first_page.next, Some(ids[1]));
    let second_page = store.tasks_of("alice", first_page.next, 2).await.unwrap();
    assert_eq!(listed(&second_page), vec![ids[0]]);
    assert_eq!(second_page.next, None);
    assert_eq!(second_page.tasks[0].state, TaskState::Succeeded);
    assert!(store
        .tasks_of("bob", None, 10)
        .await
        .unwrap()
        .tasks
        .is_empty());

    // Idempotent submission: a resend answers the same ids and stores nothing; another
    // body under the same key is refused; keys are per user.
    let key = |owner: &str, name: &str, tasks: &[NewTask]| IdempotencyKey {
        owner: owner.into(),
        key: name.into(),
        fingerprint: fingerprint(tasks).unwrap(),
    };
    let batch = vec![new(7), new(8)];
    let Insertion::Created(first) = store
        .insert_tasks_once(key("alice", "k1", &batch), batch.clone(), now)
        .await
        .unwrap()
    else {
        panic!("a new key creates")
    };
    assert_eq!(first.len(), 2);
    assert_eq!(
        store
            .insert_tasks_once(key("alice", "k1", &batch), batch.clone(), now)
            .await
            .unwrap(),
        Insertion::Replayed(first.clone())
    );
    let other = vec![new(9)];
    assert_eq!(
        store
            .insert_tasks_once(key("alice", "k1", &other), other.clone(), now)
            .await
            .unwrap(),
        Insertion::Conflict
    );
    let Insertion::Created(bobs) = store
        .insert_tasks_once(key("bob", "k1", &batch), batch.clone(), now)
        .await
        .unwrap()
    else {
        panic!("another user's key is another key")
    };
    assert!(bobs.iter().all(|id| !first.contains(id)));
    assert_eq!(store.unfinished_tasks().await.unwrap().len(), 5);
    assert_ne!(fingerprint(&batch).unwrap(), fingerprint(&other).unwrap());
    for id in first.iter().chain(&bobs) {
        assert!(store.delete_task(*id).await.unwrap());
    }

    // Expiry removes finished tasks older than the TTL, and nothing unfinished.
    let ttl = Duration::from_secs(60);
    assert_eq!(
        store
            .expire(now + Duration::from_secs(30), ttl)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .expire(now + Duration::from_secs(61), ttl)
            .await
            .unwrap(),
        2
    );
    assert!(store.task(ids[0]).await.unwrap().is_none());
    assert!(store.task(more[0]).await.unwrap().is_some());
    let left = store.tasks_of("alice", None, 10).await.unwrap();
    assert_eq!(listed(&left), vec![more[0]], "expired tasks are not listed");
    // ... and keys older than the TTL: the key is free again.
    assert!(matches!(
        store
            .insert_tasks_once(key("alice", "k1", &other), other.clone(), now)
            .await
            .unwrap(),
        Insertion::Created(_)
    ));

    // What a task asks for is kept with it, through every read, and a result; plain tasks
    // beside it keep none. In a key's fingerprint it makes another submission.
    let big = funcx_core::Resources {
        cores: 4,
        gpus: 1,
        memory: 1 << 30,
        nodes: 0,
    };
    let special = NewTask {
        resources: Some(big),
        ..new(5)
    };
    assert_ne!(
        fingerprint(&[new(5)]).unwrap(),
        fingerprint(std::slice::from_ref(&special)).unwrap()
    );
    let mixed = store
        .insert_tasks(vec![new(6), special], now)
        .await
        .unwrap();
    let (plain, asking) = (mixed[0], mixed[1]);
    let resources_of = |records: &[TaskRecord], id| {
        records
            .iter()
            .find(|record| record.id == id)
            .map(|record| record.resources)
    };
    let record = store.task(asking).await.unwrap().unwrap();
    assert_eq!(record.resources, Some(big));
    assert_eq!(store.task(plain).await.unwrap().unwrap().resources, None);
    let unfinished = store.unfinished_tasks().await.unwrap();
    assert_eq!(resources_of(&unfinished, asking), Some(Some(big)));
    assert_eq!(resources_of(&unfinished, plain), Some(None));
    let listed_tasks = store.tasks_of("alice", None, 10).await.unwrap().tasks;
    assert_eq!(resources_of(&listed_tasks, asking), Some(Some(big)));
    let done = store.finish(vec![outcome(asking, 1)], now).await.unwrap();
    assert_eq!(resources_of(&done, asking), Some(Some(big)));
    let record = store.task(asking).await.unwrap().unwrap();
    assert_eq!(
        (record.state, record.resources),
        (TaskState::Succeeded, Some(big))
    );
    for id in mixed {
        assert!(store.delete_task(id).await.unwrap());
    }

    // Whole nodes are kept with what else a task asks for, through every read and a
    // result, alone or beside other resources; in a key's fingerprint they make another
    // submission.
    let two_nodes = funcx_core::Resources {
        nodes: 2,
        ..funcx_core::Resources::default()
    };
    let big_on_nodes = funcx_core::Resources { nodes: 3, ..big };
    let asking = |id, resources| NewTask {
        resources: Some(resources),
        ..new(id)
    };
    assert_ne!(
        fingerprint(&[asking(7, big)]).unwrap(),
        fingerprint(&[asking(7, big_on_nodes)]).unwrap()
    );
    let multi = store
        .insert_tasks(
            vec![asking(7, two_nodes), asking(8, big_on_nodes), new(9)],
            now,
        )
        .await
        .unwrap();
    let expected = [Some(two_nodes), Some(big_on_nodes), None];
    let read = |records: &[TaskRecord]| {
        multi
            .iter()
            .map(|&id| resources_of(records, id).flatten())
            .collect::<Vec<_>>()
    };
    let mut each = Vec::new();
    for &id in &multi {
        each.push(store.task(id).await.unwrap().unwrap());
    }
    assert_eq!(read(&each), expected);
    assert_eq!(read(&store.unfinished_tasks().await.unwrap()), expected);
    let listed_tasks = store.tasks_of("alice", None, 10).await.unwrap().tasks;
    assert_eq!(read(&listed_tasks), expected);
    let done = store
        .finish(multi.iter().map(|&id| outcome(id, 1)).collect(), now)
        .await
        .unwrap();
    assert_eq!(read(&done), expected);
    for id in multi {
        assert!(store.delete_task(id).await.unwrap());
    }
}

#[test]
fn records_written_before_tasks_had_resources_still_decode() {
    let mut record = new_record(
        7,
        NewTask {
            owner: "alice".into(),
            endpoint: "e".into(),
            function: funcx_core::Function::from_source("", "f").id(),
            args: Args::new(),
            timeout: None,
            resources: None,
        },
        SystemTime::now(),
    )
    .unwrap();
    // A plain task is encoded as every record was before: the derived encoding alone.
    let plain = encode_task(&record).unwrap();
    assert_eq!(plain, encode(&record).unwrap());
    assert_eq!(decode_task(&plain).unwrap().resources, None);
    record.resources = Some(funcx_core::Resources {
        cores: 2,
        gpus: 0,
        memory: 10,
        nodes: 0,
    });
    let back = decode_task(&encode_task(&record).unwrap()).unwrap();
    assert_eq!((back.id, back.resources), (7, record.resources));
    // A task without nodes is encoded as it was before tasks had nodes: the derived
    // encoding, then its resources' (which leaves nodes out).
    let asked = record.resources.expect("set above");
    let older = [encode(&record).unwrap(), encode(&asked).unwrap()].concat();
    assert_eq!(encode_task(&record).unwrap(), older);
    assert_eq!(decode_task(&older).unwrap().resources, record.resources);
    // One with nodes has them after, and decodes whole.
    let resources = record.resources.map(|resources| funcx_core::Resources {
        nodes: 2,
        ..resources
    });
    record.resources = resources;
    let back = decode_task(&encode_task(&record).unwrap()).unwrap();
    assert_eq!(back.resources, resources);
}

#[test]
fn fingerprints_of_tasks_without_nodes_are_what_they_were() {
    let task = |resources| NewTask {
        owner: "alice".into(),
        endpoint: "e".into(),
        function: funcx_core::Function::from_source("", "f").id(),
        args: Args::new().arg(&1),
        timeout: Some(std::time::Duration::from_secs(3)),
        resources,
    };
    let gpu = funcx_core::Resources {
        gpus: 1,
        ..funcx_core::Resources::default()
    };
    // Computed before tasks could hold nodes: keys stored then still match their resends.
    let hex = |tasks: &[NewTask]| blake3::Hash::from(fingerprint(tasks).unwrap()).to_hex();
    assert_eq!(
        hex(&[task(None)]).as_str(),
        "907b2513be3153185f05dacfc329fc444e5cb06468385778438f716a6992b31a"
    );
    assert_eq!(
        hex(&[task(Some(gpu))]).as_str(),
        "1cff3ca2b878ec5532c1616a881b197942c3984380cc7db61f5e5e18b902422c"
    );
    assert_ne!(
        hex(&[task(Some(gpu))]),
        hex(&[task(Some(funcx_core::Resources { nodes: 1, ..gpu }))])
    );
}
