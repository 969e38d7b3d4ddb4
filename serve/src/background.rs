//! Where a tenant's heavy requests run: uploads (compiling), rule changes,
//! dry runs, reloads of the tenants file.
//!
//! On threads of their own at a lower CPU priority (nice 10), so that on a
//! busy machine the event streams and the API's light requests, at normal
//! priority, get the CPU first: one tenant compiling or dry-running back
//! to back takes what the streams leave, not a share of what they need.
//! (Linux's scheduler gives a nice-10 thread about a tenth of the CPU a
//! nice-0 thread gets when both want it, and all of it when alone.)

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};

type Job = Box<dyn FnOnce() + Send>;

/// The niceness of the background threads.
pub const NICE: i32 = 10;

fn queue() -> &'static SyncSender<Job> {
    static QUEUE: OnceLock<SyncSender<Job>> = OnceLock::new();
    QUEUE.get_or_init(|| {
        // Bounded by the per-tenant request limits in practice; the
        // channel's own bound only keeps a burst from growing without end.
        let (sender, receiver) = sync_channel::<Job>(1024);
        let receiver = Arc::new(Mutex::new(receiver));
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).max(2);
        for index in 0..workers {
            let receiver = receiver.clone();
            let spawned = std::thread::Builder::new().name(format!("dac-background-{index}")).spawn(move || {
                lower_priority();
                work(&receiver);
            });
            if let Err(err) = spawned {
                tracing::error!("could not start a background thread: {err}");
            }
        }
        sender
    })
}

fn work(receiver: &Mutex<Receiver<Job>>) {
    loop {
        let job = match receiver.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        // A panicking job is reported by its caller (its answer never
        // comes); the thread carries on.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    }
}

/// This thread only: Linux's `setpriority` on a thread id.
fn lower_priority() {
    // SAFETY: gettid and setpriority take and return plain integers.
    let result = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, NICE)
    };
    if result != 0 {
        tracing::warn!("could not lower the background threads' priority: {}", std::io::Error::last_os_error());
    }
}

/// Runs `work` on a background thread; `None` if it panicked.
pub async fn run<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (answer, answered) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = answer.send(work());
    });
    match queue().try_send(job) {
        Ok(()) => {}
        // Full only under a burst larger than every tenant's request
        // limits together: wait for room off the async workers.
        Err(std::sync::mpsc::TrySendError::Full(job)) => {
            let sender = queue().clone();
            tokio::task::spawn_blocking(move || sender.send(job)).await.ok()?.ok()?;
        }
        Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return None,
    }
    answered.await.ok()
}
