//! The EC2 provider against moto, the EC2 API emulator on 127.0.0.1
//! (`bash scripts/infra/moto-up.sh`). Nothing boots there: instances are records and their
//! user data is stored, so these tests check what EC2 was asked for, through the `aws` CLI
//! rather than through the provider's own code.
#![cfg(feature = "ec2")]

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use funcx_core::{BlockId, BlockRequest, BlockState, ManagerCommand, Provider};
use funcx_providers::{Ec2Config, Ec2Provider};

const IMAGE: &str = "ami-0123456789abcdef0";

fn moto_port() -> u16 {
    std::env::var("MOTO_PORT")
        .ok()
        .and_then(|port| port.parse().ok())
        .unwrap_or(5001)
}

fn moto_url() -> String {
    format!("http://127.0.0.1:{}", moto_port())
}

/// Fails (not skips) when moto is not there.
fn require_moto() {
    let address = SocketAddr::from(([127, 0, 0, 1], moto_port()));
    if TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_err() {
        panic!(
            "the EC2 emulator is not running on {address}: run bash scripts/infra/moto-up.sh \
             first"
        );
    }
}

fn config(instance_type: &str) -> Ec2Config {
    Ec2Config::new(IMAGE, instance_type)
        .region("us-east-1")
        .credentials("testing", "testing", None)
        .endpoint_url(moto_url())
        .endpoint_name("ec2-test-endpoint")
}

fn provider(config: Ec2Config) -> Ec2Provider {
    require_moto();
    Ec2Provider::new(config).expect("a provider for moto")
}

fn manager() -> ManagerCommand {
    ManagerCommand::new("/opt/funcx/bin/funcx-manager")
        .arg("--endpoint=10.0.0.1:9000")
        .arg("--label=it's a test")
        .env("FUNCX_TOKEN", "tok-123 $secret")
}

/// Runs `aws ec2 ...` against moto and returns its text output.
fn aws(args: &[&str]) -> String {
    let output = Command::new("aws")
        .arg("--endpoint-url")
        .arg(moto_url())
        .arg("--output")
        .arg("text")
        .arg("ec2")
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env_remove("AWS_PROFILE")
        .output()
        .expect("the aws CLI (in the machine image; moto-up.sh needs it too)");
    assert!(
        output.status.success(),
        "aws ec2 {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// One text line per instance of `block`: the fields `query` selects, tab-separated.
fn instances(block: &BlockId, query: &str) -> Vec<Vec<String>> {
    let filter = format!("Name=tag:funcx:block,Values={block}");
    let query = format!("Reservations[].Instances[].[{query}]");
    let mut lines: Vec<Vec<String>> = aws(&[
        "describe-instances",
        "--filters",
        &filter,
        "--query",
        &query,
    ])
    .lines()
    .map(|line| line.split('\t').map(str::to_owned).collect())
    .collect();
    lines.sort();
    lines
}

fn tags(instance: &str) -> Vec<(String, String)> {
    let filter = format!("Name=resource-id,Values={instance}");
    let mut tags: Vec<(String, String)> = aws(&[
        "describe-tags",
        "--filters",
        &filter,
        "--query",
        "Tags[].[Key,Value]",
    ])
    .lines()
    .filter_map(|line| {
        let (key, value) = line.split_once('\t')?;
        Some((key.to_owned(), value.to_owned()))
    })
    .collect();
    tags.sort();
    tags
}

fn user_data(instance: &str) -> String {
    let encoded = aws(&[
        "describe-instance-attribute",
        "--instance-id",
        instance,
        "--attribute",
        "userData",
        "--query",
        "UserData.Value",
    ]);
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .expect("user data in base64");
    String::from_utf8(decoded).unwrap()
}

async fn state(provider: &Ec2Provider, block: &BlockId) -> BlockState {
    let statuses = provider
        .status(std::slice::from_ref(block))
        .await
        .expect("status");
    assert_eq!(statuses.len(), 1);
    assert_eq!(&statuses[0].id, block);
    statuses[0].state.clone()
}

async fn wait_for(provider: &Ec2Provider, block: &BlockId, wanted: BlockState) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = state(provider, block).await;
        if state == wanted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "block {block} is {state}, not {wanted}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_two_node_block_runs_and_is_cancelled() {
    let provider = provider(config("t3.small").tag("team", "imaging"));
    let request = BlockRequest::new(manager())
        .nodes(2)
        .worker_init("export FROM_INIT=1");
    let block = provider.submit(&request).await.expect("submit");
    assert!(block.as_str().starts_with("ec2-"), "{block}");

    let found = instances(&block, "InstanceId,InstanceType,ImageId,AmiLaunchIndex");
    assert_eq!(found.len(), 2, "{found:?}");
    let mut launch_indexes: Vec<&str> = found.iter().map(|i| i[3].as_str()).collect();
    launch_indexes.sort();
    assert_eq!(launch_indexes, ["0", "1"]);
    for instance in &found {
        assert_eq!(instance[1], "t3.small");
        assert_eq!(instance[2], IMAGE);
        let tags = tags(&instance[0]);
        let expect = |key: &str, value: &str| (key.to_owned(), value.to_owned());
        assert_eq!(
            tags,
            [
                expect("Name", &format!("funcx-{block}")),
                expect("funcx:block", block.as_str()),
                expect("funcx:endpoint", "ec2-test-endpoint"),
                expect("team", "imaging"),
            ]
        );
        let script = user_data(&instance[0]);
        assert!(script.starts_with("#!/bin/sh\n"), "{script}");
        assert!(
            script.contains("export FUNCX_TOKEN='tok-123 $secret'\n"),
            "{script}"
        );
        assert!(
            script.contains(&format!("export FUNCX_BLOCK_ID={block}\n")),
            "{script}"
        );
        assert!(script.contains("ami-launch-index"), "{script}");
        assert!(
            script.ends_with(
                "export FROM_INIT=1\nexec /opt/funcx/bin/funcx-manager \
                 '--endpoint=10.0.0.1:9000' '--label=it'\\''s a test'\n"
            ),
            "{script}"
        );
    }

    // moto turns `pending` into `running` when the instances are described.
    wait_for(&provider, &block, BlockState::Running).await;

    provider.cancel(&block).await.expect("cancel");
    let states = instances(&block, "State.Name");
    assert!(
        states
            .iter()
            .all(|s| s[0] == "terminated" || s[0] == "shutting-down"),
        "{states:?}"
    );
    wait_for(&provider, &block, BlockState::Cancelled).await;

    // Another provider (the endpoint restarted) knows it was cancelled from the tag.
    let other = self::provider(config("t3.small"));
    assert_eq!(state(&other, &block).await, BlockState::Cancelled);
    // Cancelling a finished block is fine and changes nothing.
    other.cancel(&block).await.expect("cancel again");
    assert_eq!(state(&other, &block).await, BlockState::Cancelled);
}

#[tokio::test]
async fn a_block_whose_instances_end_otherwise_completed() {
    let provider = provider(config("t3.micro"));
    let block = provider
        .submit(&BlockRequest::new(manager()))
        .await
        .expect("submit");
    wait_for(&provider, &block, BlockState::Running).await;
    let found = instances(&block, "InstanceId");
    assert_eq!(found.len(), 1);
    aws(&["terminate-instances", "--instance-ids", &found[0][0]]);
    wait_for(&provider, &block, BlockState::Completed).await;
}

#[tokio::test]
async fn spot_blocks_ask_for_spot_instances() {
    let provider = provider(config("m5.large").spot_max_price("0.05"));
    let block = provider
        .submit(&BlockRequest::new(manager()).nodes(2))
        .await
        .expect("submit");
    // moto records the market options as the instances' lifecycle.
    let found = instances(&block, "InstanceId,InstanceLifecycle");
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().all(|i| i[1] == "spot"), "{found:?}");
    provider.cancel(&block).await.expect("cancel");

    let on_demand = self::provider(config("m5.large"));
    let block = on_demand
        .submit(&BlockRequest::new(manager()))
        .await
        .expect("submit");
    let found = instances(&block, "InstanceId,InstanceLifecycle");
    assert_eq!(found[0][1], "None", "{found:?}");
    on_demand.cancel(&block).await.expect("cancel");
}

#[tokio::test]
async fn api_errors_carry_the_aws_code_and_message() {
    let provider = provider(config("t3.micro").subnet_id("subnet-doesnotexist"));
    let error = provider
        .submit(&BlockRequest::new(manager()))
        .await
        .expect_err("no such subnet");
    let text = error.to_string();
    assert!(error.is_rejected(), "{text}");
    assert!(text.contains("InvalidSubnetID.NotFound"), "{text}");
    assert!(text.contains("subnet-doesnotexist"), "{text}");

    let provider = self::provider(config("t3.micro").security_group_id("sg-doesnotexist"));
    let error = provider
        .submit(&BlockRequest::new(manager()))
        .await
        .expect_err("no such security group");
    assert!(
        error.to_string().contains("InvalidGroup.NotFound"),
        "{error}"
    );
}

#[tokio::test]
async fn requests_for_zero_nodes_are_rejected() {
    let provider = provider(config("t3.micro"));
    let error = provider
        .submit(&BlockRequest::new(manager()).nodes(0))
        .await
        .expect_err("zero nodes");
    assert!(error.is_rejected(), "{error}");
}

#[tokio::test]
async fn an_unreachable_endpoint_is_an_io_error() {
    // Port 1 on loopback: nothing listens there.
    let provider = Ec2Provider::new(config("t3.micro").endpoint_url("http://127.0.0.1:1"))
        .expect("a provider");
    let error = provider
        .submit(&BlockRequest::new(manager()))
        .await
        .expect_err("nothing listens");
    assert!(error.is_io(), "{error}");
    assert!(
        error
            .to_string()
            .contains("could not reach the EC2 API at http://127.0.0.1:1/"),
        "{error}"
    );
    let error = provider
        .status(&[BlockId::new("ec2-abc")])
        .await
        .expect_err("nothing listens");
    assert!(error.is_io(), "{error}");
}

#[tokio::test]
async fn unknown_blocks() {
    let provider = provider(config("t3.micro"));
    let blocks = [
        BlockId::new("ec2-neverissued0"),
        BlockId::new("local-1"),
        BlockId::new("ec2-*"),
    ];
    let statuses = provider.status(&blocks).await.expect("status");
    assert_eq!(statuses.len(), 3);
    for (status, block) in statuses.iter().zip(&blocks) {
        assert_eq!(&status.id, block);
        assert!(
            matches!(status.state, BlockState::Unknown(_)),
            "{block}: {}",
            status.state
        );
    }
    // An id the provider could have issued may be one EC2 forgot: cancelling it is fine.
    provider
        .cancel(&BlockId::new("ec2-neverissued0"))
        .await
        .expect("cancel");
    let error = provider
        .cancel(&BlockId::new("local-1"))
        .await
        .expect_err("not an EC2 block");
    assert!(error.is_not_found(), "{error}");
}
