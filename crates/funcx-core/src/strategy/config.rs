//! How an endpoint scales its blocks.

use std::time::Duration;

/// The knobs of a [`super::Strategy`], with Parsl's names where Parsl has one.
///
/// ```
/// use std::time::Duration;
/// use funcx_core::StrategyConfig;
///
/// let config = StrategyConfig::new()
///     .init_blocks(1)
///     .min_blocks(0)
///     .max_blocks(4)
///     .parallelism(0.5)                      // one worker slot per two outstanding tasks
///     .max_idle_time(Duration::from_secs(120))
///     .walltime(Duration::from_secs(3600), Duration::from_secs(120));
/// assert_eq!(config.max_blocks, 4);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct StrategyConfig {
    /// Blocks submitted when the strategy starts.
    pub init_blocks: usize,
    /// Blocks kept even when there is no work.
    pub min_blocks: usize,
    /// Blocks never exceeded.
    pub max_blocks: usize,
    /// Worker slots one block brings (nodes × workers per node); learned from the managers
    /// that register, this is the estimate until then.
    pub slots_per_block: usize,
    /// Worker slots wanted per outstanding task, from 0 (as few blocks as possible: one) to
    /// 1 (a slot for every task).
    pub parallelism: f64,
    /// How long a block must be idle (no task on any of its managers) before it is drained
    /// and released.
    pub max_idle_time: Duration,
    /// How often the strategy looks at the load and the blocks.
    pub period: Duration,
    /// A block still pending after this long is cancelled and reported.
    pub pending_timeout: Duration,
    /// A running block none of whose managers dialled in after this long is cancelled and
    /// reported: the nodes cannot reach the endpoint's address.
    pub connect_timeout: Duration,
    /// The blocks' walltime, if they have one, and how long before it ends they are drained
    /// so that no task is killed by the scheduler.
    pub walltime: Option<(Duration, Duration)>,
    /// The longest pause after failed blocks before trying again; the pause doubles with each
    /// consecutive failure up to this.
    pub max_backoff: Duration,
}

impl Default for StrategyConfig {
    fn default() -> Self {
        StrategyConfig {
            init_blocks: 1,
            min_blocks: 0,
            max_blocks: 10,
            slots_per_block: 1,
            parallelism: 1.0,
            max_idle_time: Duration::from_secs(120),
            period: Duration::from_secs(5),
            pending_timeout: Duration::from_secs(3600),
            connect_timeout: Duration::from_secs(120),
            walltime: None,
            max_backoff: Duration::from_secs(300),
        }
    }
}

impl StrategyConfig {
    /// Defaults: one block at start, none kept idle, at most ten, a slot per task, blocks
    /// released after two idle minutes, a look every five seconds.
    pub fn new() -> StrategyConfig {
        StrategyConfig::default()
    }

    /// Sets how many blocks are submitted when the strategy starts (kept within
    /// `min_blocks..=max_blocks`).
    pub fn init_blocks(mut self, blocks: usize) -> StrategyConfig {
        self.init_blocks = blocks;
        self
    }

    /// Sets how many blocks are kept even when there is no work.
    pub fn min_blocks(mut self, blocks: usize) -> StrategyConfig {
        self.min_blocks = blocks;
        self
    }

    /// Sets the most blocks at once (at least one, and at least `min_blocks`).
    pub fn max_blocks(mut self, blocks: usize) -> StrategyConfig {
        self.max_blocks = blocks;
        self
    }

    /// The configuration a strategy runs with: `max_blocks` at least 1 and at least
    /// `min_blocks`, `init_blocks` within `min_blocks..=max_blocks`. The fields are public,
    /// so any combination can be written; this is what each one means then.
    ///
    /// ```
    /// use funcx_core::StrategyConfig;
    ///
    /// let config = StrategyConfig::new().init_blocks(9).min_blocks(3).max_blocks(1).normalized();
    /// assert_eq!((config.init_blocks, config.min_blocks, config.max_blocks), (3, 3, 3));
    /// ```
    pub fn normalized(mut self) -> StrategyConfig {
        self.max_blocks = self.max_blocks.max(self.min_blocks).max(1);
        self.init_blocks = self.init_blocks.clamp(self.min_blocks, self.max_blocks);
        self
    }

    /// Sets the estimate of worker slots per block.
    pub fn slots_per_block(mut self, slots: usize) -> StrategyConfig {
        self.slots_per_block = slots.max(1);
        self
    }

    /// Sets `parallelism`, clamped to 0..=1.
    pub fn parallelism(mut self, parallelism: f64) -> StrategyConfig {
        self.parallelism = if parallelism.is_nan() {
            1.0
        } else {
            parallelism.clamp(0.0, 1.0)
        };
        self
    }

    /// Sets `max_idle_time`.
    pub fn max_idle_time(mut self, idle: Duration) -> StrategyConfig {
        self.max_idle_time = idle;
        self
    }

    /// Sets `period`.
    pub fn period(mut self, period: Duration) -> StrategyConfig {
        self.period = period.max(Duration::from_millis(10));
        self
    }

    /// Sets `pending_timeout`.
    pub fn pending_timeout(mut self, timeout: Duration) -> StrategyConfig {
        self.pending_timeout = timeout;
        self
    }

    /// Sets `connect_timeout`.
    pub fn connect_timeout(mut self, timeout: Duration) -> StrategyConfig {
        self.connect_timeout = timeout;
        self
    }

    /// The blocks end after `walltime`; drain them `margin` before.
    pub fn walltime(mut self, walltime: Duration, margin: Duration) -> StrategyConfig {
        self.walltime = Some((walltime, margin));
        self
    }

    /// Sets `max_backoff`.
    pub fn max_backoff(mut self, backoff: Duration) -> StrategyConfig {
        self.max_backoff = backoff;
        self
    }
}
