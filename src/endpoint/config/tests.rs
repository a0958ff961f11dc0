use super::*;
use funcx_core::ManagerCommand;

#[test]
fn every_template_parses_and_names_its_provider() {
    for provider in PROVIDERS {
        let text = template("t", provider, Some(("http://127.0.0.1:1", "abc")));
        let config = EndpointConfig::parse(&text, Path::new("config.toml"))
            .unwrap_or_else(|e| panic!("{provider}: {e}\n{text}"));
        assert_eq!(config.provider, provider);
        assert_eq!(config.gateway.map(|g| g.endpoint_id), Some("abc".into()));
    }
    let text = template("t", "slurm", None);
    let config = EndpointConfig::parse(&text, Path::new("c.toml")).unwrap();
    assert!(config.gateway.is_none());
}

#[test]
fn errors_name_the_file_and_the_key() {
    let path = Path::new("/home/u/.funcx/endpoints/x/config.toml");
    let error = |text: &str| EndpointConfig::parse(text, path).unwrap_err().to_string();
    let e = error("provider = \"local\"\n[blocks]\nmax_blocks = 3\n");
    assert!(
        e.starts_with("/home/u/.funcx/endpoints/x/config.toml: "),
        "{e}"
    );
    assert!(e.contains("unknown key `max_blocks`"), "{e}");
    let e = error("provider = \"lsf\"\n");
    assert!(e.contains("key `provider`") && e.contains("\"lsf\""), "{e}");
    let e = error("provider = \"local\"\n[blocks]\nmin = 3\nmax = 2\n");
    assert!(e.contains("key `blocks.min`"), "{e}");
    let e = error("provider = \"local\"\n[slurm]\npartition = \"x\"\n");
    assert!(e.contains("table `[slurm]`"), "{e}");
    let e = error("provider = \"local\"\n[managers]\nworkers_per_node = \"two\"\n");
    assert!(e.contains("line 3 (`workers_per_node = \"two\"`)"), "{e}");
    let e = error("provider = \"slurm\"\n[slurm]\nlauncher = \"pdsh\"\n");
    assert!(e.contains("key `slurm.launcher`"), "{e}");
    let e = error("provider = \"local\"\n[gateway]\nurl = \"gw:1\"\nendpoint_id = \"e\"\n");
    assert!(e.contains("key `gateway.url`"), "{e}");
    let e = error(
        "provider = \"local\"\n[gateway]\nurl = \"http://gw:1\"\nendpoint_id = \"e\"\nfailover = [\"gw:2\"]\n",
    );
    assert!(
        e.contains("key `gateway.failover`") && e.contains("\"gw:2\""),
        "{e}"
    );
}

#[test]
fn the_gateway_failover_list_is_read_in_order() {
    let text = "provider = \"local\"\n[gateway]\nurl = \"http://a:1\"\nendpoint_id = \"e\"\nfailover = [\"http://b:1\", \"https://c:1\"]\n";
    let config = EndpointConfig::parse(text, Path::new("c.toml")).expect("parses");
    let failover = config.gateway.map(|g| g.failover).unwrap_or_default();
    assert_eq!(failover, ["http://b:1", "https://c:1"]);
}

#[test]
fn memory_per_node_is_bytes_and_unset_by_default() {
    let parse = |text: &str| EndpointConfig::parse(text, Path::new("c.toml"));
    let config = parse("provider = \"local\"\n[managers]\nmemory_per_node = 1073741824\n");
    assert_eq!(
        config.expect("parses").managers.memory_per_node,
        Some(1 << 30)
    );
    let config = parse("provider = \"local\"\n").expect("parses");
    assert_eq!(config.managers.memory_per_node, None);
    let error = parse("provider = \"local\"\n[managers]\nmemory_per_node = \"1G\"\n");
    assert!(error.is_err(), "bytes, as a number");
}

#[test]
fn allowed_formats_are_named_formats() {
    let path = Path::new("c.toml");
    let config =
        EndpointConfig::parse("provider = \"local\"\nallowed_formats = [\"json\"]\n", path)
            .unwrap();
    assert_eq!(config.allowed_formats, Some(vec![funcx_core::Format::Json]));
    let config = EndpointConfig::parse("provider = \"local\"\n", path).unwrap();
    assert_eq!(config.allowed_formats, None);
    let e = EndpointConfig::parse("provider = \"local\"\nallowed_formats = [\"yaml\"]\n", path)
        .unwrap_err()
        .to_string();
    assert!(e.contains("allowed_formats"), "{e}");

    let id = funcx_core::Function::from_source("def f(): pass", "f").id();
    let text = format!("provider = \"local\"\nallowed_functions = [\"{id}\"]\n");
    let config = EndpointConfig::parse(&text, path).unwrap();
    assert_eq!(config.allowed_functions, Some(vec![id.to_string()]));
    let text = "provider = \"local\"\nallowed_functions = [\"abc\"]\n";
    let config = EndpointConfig::parse(text, path).unwrap();
    let manager = ManagerCommand::new("funcx-manager");
    let e = config
        .builder("e", Path::new("/tmp"), path, manager)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("allowed_functions") && e.contains("\"abc\""),
        "{e}"
    );
}

#[test]
fn every_provider_table_builds_its_provider() {
    let manager = || ManagerCommand::new("funcx-manager");
    for provider in PROVIDERS {
        let text = template("t", provider, None);
        let config = EndpointConfig::parse(&text, Path::new("c.toml")).unwrap();
        let built = config.builder("t", Path::new("/tmp"), Path::new("c.toml"), manager());
        match provider {
            // Its client needs the feature (and, with it, credentials this test has none of).
            "ec2" if !cfg!(feature = "ec2") => {
                let e = built.err().map(|e| e.to_string()).unwrap_or_default();
                assert!(
                    e.contains("needs funcx built with the `ec2` feature"),
                    "{e}"
                );
            }
            "ec2" => {}
            _ => assert!(built.is_ok(), "{provider}: {:?}", built.err()),
        }
    }
}

#[test]
fn provider_tables_check_their_own_keys() {
    let error = |text: &str| {
        EndpointConfig::parse(text, Path::new("c.toml"))
            .unwrap_err()
            .to_string()
    };
    let e = error("provider = \"pbs\"\n[pbs]\nflavor = \"lsf\"\n");
    assert!(
        e.contains("key `pbs.flavor`") && e.contains("\"lsf\""),
        "{e}"
    );
    let e = error("provider = \"pbs\"\n[pbs]\nlauncher = \"pdsh\"\n");
    assert!(e.contains("key `pbs.launcher`"), "{e}");
    let e = error("provider = \"ec2\"\n[ec2]\nimage_id = \"ami-1\"\n");
    assert!(
        e.contains("keys `ec2.image_id` and `ec2.instance_type`"),
        "{e}"
    );
    // A provider without a table is its table's defaults, which must pass their own checks.
    let e = error("provider = \"ec2\"\n");
    assert!(e.contains("both are required"), "{e}");
    for provider in ["local", "slurm", "pbs", "gridengine"] {
        let text = format!("provider = \"{provider}\"\n");
        EndpointConfig::parse(&text, Path::new("c.toml")).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn the_manager_layout_is_per_node_unless_the_file_says_per_block() {
    let parse = |text: &str| EndpointConfig::parse(text, Path::new("c.toml"));
    let config = parse("provider = \"slurm\"\n").expect("parses");
    assert_eq!(config.managers.layout, funcx_core::ManagerLayout::PerNode);
    let config =
        parse("provider = \"slurm\"\n[managers]\nlayout = \"per-block\"\n").expect("parses");
    assert_eq!(config.managers.layout, funcx_core::ManagerLayout::PerBlock);
    let e = parse("provider = \"slurm\"\n[managers]\nlayout = \"perblock\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("layout = \"perblock\"") && e.contains("per-node") && e.contains("per-block"),
        "{e}"
    );
    for provider in ["slurm", "pbs"] {
        let text = format!("provider = \"{provider}\"\n[managers]\nlayout = \"per-block\"\n");
        let config = parse(&text).expect("parses");
        let built = config.builder(
            "t",
            Path::new("/tmp"),
            Path::new("c.toml"),
            ManagerCommand::new("funcx-manager"),
        );
        assert!(built.is_ok(), "{provider}: {:?}", built.err());
    }
}

#[test]
fn per_block_combinations_that_cannot_work_are_refused_naming_the_key() {
    let error = |text: &str| {
        EndpointConfig::parse(text, Path::new("c.toml"))
            .unwrap_err()
            .to_string()
    };
    let per_block = "[managers]\nlayout = \"per-block\"\n";
    for text in [
        format!("provider = \"local\"\n{per_block}"),
        format!("provider = \"ec2\"\n{per_block}[ec2]\nimage_id = \"ami-1\"\ninstance_type = \"t3.micro\"\n"),
    ] {
        let e = error(&text);
        assert!(
            e.contains("key `managers.layout`") && e.contains("batch scheduler"),
            "{e}"
        );
    }
    for provider in ["slurm", "pbs"] {
        let e = error(&format!(
            "provider = \"{provider}\"\n{per_block}[{provider}]\nlauncher = \"single\"\n"
        ));
        assert!(
            e.contains(&format!("key `{provider}.launcher`")) && e.contains("per-block"),
            "{e}"
        );
    }
    let e = error(&format!("provider = \"gridengine\"\n{per_block}"));
    assert!(
        e.contains("key `gridengine.parallel_environment`") && e.contains("PE_HOSTFILE"),
        "{e}"
    );
    let text = format!(
        "provider = \"gridengine\"\n{per_block}[gridengine]\nparallel_environment = \"mpi\"\n"
    );
    EndpointConfig::parse(&text, Path::new("c.toml")).unwrap_or_else(|e| panic!("{e}"));
}
