//! A campaign: the corpus, then mutated inputs, through one target, with a watchdog for hangs
//! and the counting allocator for memory.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::rng::Rng;
use crate::targets::Target;
use crate::{alloc, mutate};

/// How a campaign runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// How many inputs, the corpus included.
    pub inputs: u64,
    /// The seed every mutated input derives from (with its index).
    pub seed: u64,
    /// The most one input may make the target allocate, above what was live before it.
    pub max_alloc: usize,
    /// An input that runs longer is a hang: the watchdog prints it and aborts the process.
    pub hang_after: Duration,
    /// Print a progress line to stderr this often (never, if `None`).
    pub progress: Option<Duration>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            inputs: 10_000,
            seed: 1,
            max_alloc: 64 << 20,
            hang_after: Duration::from_secs(10),
            progress: None,
        }
    }
}

/// What a finished campaign measured.
#[derive(Debug, Clone)]
pub struct Report {
    /// The target's name.
    pub target: &'static str,
    /// Inputs run.
    pub inputs: u64,
    /// The run's seed.
    pub seed: u64,
    /// Corpus entries it started from.
    pub corpus: usize,
    /// Wall time of the campaign.
    pub elapsed: Duration,
    /// The most one input made the target allocate.
    pub peak_alloc: usize,
    /// The longest one input took.
    pub slowest: Duration,
}

/// An input that broke the target.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The target's name.
    pub target: &'static str,
    /// Which input of the campaign (reproduce with the same seed and [`input`]).
    pub index: u64,
    /// The input itself.
    pub input: Vec<u8>,
    /// What went wrong: the panic message, or the allocation that passed the bound.
    pub what: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} input {} ({} bytes): {}; input = {:02x?}",
            self.target,
            self.index,
            self.input.len(),
            self.what,
            &self.input[..self.input.len().min(512)]
        )
    }
}

/// Input `index` of a campaign seeded with `seed` over `corpus`: the corpus entries first,
/// then mutations.
pub fn input(target: &Target, corpus: &[Vec<u8>], seed: u64, index: u64) -> Vec<u8> {
    match usize::try_from(index).ok().and_then(|i| corpus.get(i)) {
        Some(entry) => entry.clone(),
        None => mutate::mutate(&mut Rng::for_input(seed, index), corpus, target.max_len),
    }
}

/// Runs `options.inputs` inputs through `target`; stops at the first finding.
pub fn run(target: &Target, options: &Options) -> Result<Report, Finding> {
    let corpus = target.corpus();
    let mut runner = target.runner();
    let counted = alloc::is_installed();
    let watchdog = Watchdog::start(target.name, options.seed, options.hang_after);
    let started = Instant::now();
    let mut last_progress = started;
    let mut peak_alloc = 0;
    let mut slowest = Duration::ZERO;
    for index in 0..options.inputs {
        let data = input(target, &corpus, options.seed, index);
        watchdog.enter(index);
        let before = alloc::start();
        let began = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| runner(&data)));
        let took = began.elapsed();
        let allocated = alloc::peak_above(before);
        watchdog.leave();
        slowest = slowest.max(took);
        peak_alloc = peak_alloc.max(allocated);
        let finding = |what: String| Finding {
            target: target.name,
            index,
            input: data.clone(),
            what,
        };
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic without a message".into());
            return Err(finding(format!("panicked: {message}")));
        }
        if counted && allocated > options.max_alloc {
            return Err(finding(format!(
                "allocated {allocated} bytes for one input (bound {})",
                options.max_alloc
            )));
        }
        if let Some(every) = options.progress {
            if last_progress.elapsed() >= every {
                last_progress = Instant::now();
                let rate = index as f64 / started.elapsed().as_secs_f64();
                eprintln!(
                    "funcx-fuzz: {}: {index}/{} inputs, {rate:.0}/s, peak alloc {peak_alloc} B, slowest {slowest:?}",
                    target.name, options.inputs
                );
            }
        }
    }
    Ok(Report {
        target: target.name,
        inputs: options.inputs,
        seed: options.seed,
        corpus: corpus.len(),
        elapsed: started.elapsed(),
        peak_alloc: if counted { peak_alloc } else { 0 },
        slowest,
    })
}

/// Aborts the process when one input runs longer than the bound; a hang inside a parser
/// cannot be interrupted any other way.
struct Watchdog {
    current: Arc<AtomicU64>,
    busy: Arc<AtomicBool>,
    since: Arc<std::sync::Mutex<Instant>>,
    stop: Arc<AtomicBool>,
}

impl Watchdog {
    fn start(target: &'static str, seed: u64, bound: Duration) -> Watchdog {
        let dog = Watchdog {
            current: Arc::new(AtomicU64::new(0)),
            busy: Arc::new(AtomicBool::new(false)),
            since: Arc::new(std::sync::Mutex::new(Instant::now())),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (current, busy, since, stop) = (
            dog.current.clone(),
            dog.busy.clone(),
            dog.since.clone(),
            dog.stop.clone(),
        );
        std::thread::spawn(move || {
            let tick = (bound / 10).max(Duration::from_millis(10));
            while !stop.load(Relaxed) {
                std::thread::sleep(tick);
                let started = *since.lock().unwrap_or_else(|e| e.into_inner());
                if busy.load(Relaxed) && started.elapsed() > bound {
                    eprintln!(
                        "funcx-fuzz: HANG: {target} input {} (seed {seed}) ran over {bound:?}; \
                         reproduce with `funcx-fuzz --seed {seed} --replay {} {target}`",
                        current.load(Relaxed),
                        current.load(Relaxed)
                    );
                    std::process::abort();
                }
            }
        });
        dog
    }

    fn enter(&self, index: u64) {
        self.current.store(index, Relaxed);
        *self.since.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.busy.store(true, Relaxed);
    }

    fn leave(&self) {
        self.busy.store(false, Relaxed);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}
