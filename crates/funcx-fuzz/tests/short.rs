//! The short pass of every fuzz target that the test command runs: the corpus and 20,000
//! mutated inputs each, from a fixed seed (`FUNCX_FUZZ_SEED` picks another). The long
//! campaigns are in FUZZING.md.

#[global_allocator]
static ALLOCATOR: funcx_fuzz::alloc::Counting = funcx_fuzz::alloc::Counting;

use std::time::Duration;

use funcx_fuzz::campaign::{run, Options};
use funcx_fuzz::targets;

fn seed() -> u64 {
    // Fixed, so that the test command gives the same verdict on every run; set
    // FUNCX_FUZZ_SEED to explore other inputs (the long campaigns are in FUZZING.md).
    std::env::var("FUNCX_FUZZ_SEED")
        .map(|seed| seed.parse().expect("FUNCX_FUZZ_SEED is a number"))
        .unwrap_or(20_261_202)
}

fn short(name: &str) {
    let target = targets::all()
        .into_iter()
        .find(|t| t.name == name)
        .expect("a target of that name");
    let options = Options {
        inputs: 20_000,
        seed: seed(),
        hang_after: Duration::from_secs(30),
        ..Options::default()
    };
    eprintln!("{name}: seed {} (FUNCX_FUZZ_SEED to repeat)", options.seed);
    let report = run(&target, &options).unwrap_or_else(|finding| panic!("{finding}"));
    assert_eq!(report.inputs, 20_000);
    assert!(report.corpus > 0, "{name} has no corpus");
    assert!(
        funcx_fuzz::alloc::is_installed(),
        "the counting allocator measures the campaign"
    );
}

#[test]
fn every_target_is_tested_here() {
    let here = include_str!("short.rs");
    for target in targets::all() {
        assert!(
            here.contains(&format!("short(\"{}\")", target.name)),
            "tests/short.rs has no short pass of {}",
            target.name
        );
    }
}

#[test]
fn frames() {
    short("frames");
}

#[test]
fn handshake() {
    short("handshake");
}

#[test]
fn worker_output() {
    short("worker-output");
}

#[test]
fn result_stream() {
    short("result-stream");
}

#[test]
fn payload() {
    short("payload");
}

#[test]
fn plain_pickle() {
    short("plain-pickle");
}

#[test]
fn gateway_http() {
    short("gateway-http");
}

#[test]
fn gateway_config() {
    short("gateway-config");
}

#[test]
fn endpoint_config() {
    short("endpoint-config");
}

#[test]
fn slurm() {
    short("slurm");
}

#[test]
fn pbs() {
    short("pbs");
}

#[test]
fn gridengine() {
    short("gridengine");
}

#[test]
fn ec2_xml() {
    short("ec2-xml");
}
