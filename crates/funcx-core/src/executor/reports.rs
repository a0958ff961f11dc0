//! Outcomes of many tasks through one channel, for callers that handle thousands of tasks a
//! second and do not want a future per task.

use tokio::sync::mpsc;

use crate::TaskReport;

/// Where the outcomes of tasks submitted with [`crate::Executor::submit_streamed`] are sent.
/// Cheap to clone; pass it to as many submissions as you like.
#[derive(Clone, Debug)]
pub struct ReportSink {
    pub(crate) tx: mpsc::UnboundedSender<(u64, TaskReport)>,
}

/// Receives the outcomes of streamed tasks as they finish, in any order, each with the tag it
/// was submitted with.
///
/// ```no_run
/// use funcx_core::{report_stream, Executor, Function, Task};
/// # async fn demo(executor: Executor) {
/// let f = Function::from_source("def double(x):\n    return 2 * x\n", "double");
/// let (sink, mut stream) = report_stream();
/// executor.submit_streamed((0..1000_u64).map(|i| (i, Task::new(&f, (i,)))), &sink);
/// let mut batch = Vec::new();
/// while stream.recv_many(&mut batch, 256).await > 0 {
///     for (tag, report) in batch.drain(..) {
///         let doubled: u64 = report.result.and_then(|p| p.decode()).unwrap();
///         assert_eq!(doubled, 2 * tag);
///     }
/// #   break;
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct ReportStream {
    rx: mpsc::UnboundedReceiver<(u64, TaskReport)>,
}

/// A connected sink and stream.
pub fn report_stream() -> (ReportSink, ReportStream) {
    let (tx, rx) = mpsc::unbounded_channel();
    (ReportSink { tx }, ReportStream { rx })
}

impl ReportStream {
    /// The next outcome; `None` once every sink is dropped and every outcome was received.
    pub async fn recv(&mut self) -> Option<(u64, TaskReport)> {
        self.rx.recv().await
    }

    /// Waits for at least one outcome and moves up to `limit` of them into `buffer`; returns
    /// how many (0 once the stream has ended).
    pub async fn recv_many(&mut self, buffer: &mut Vec<(u64, TaskReport)>, limit: usize) -> usize {
        self.rx.recv_many(buffer, limit.max(1)).await
    }

    /// An outcome that is already there, without waiting.
    pub fn try_recv(&mut self) -> Option<(u64, TaskReport)> {
        self.rx.try_recv().ok()
    }
}
