//! Timeouts whose timer lives on the heap: [`timeout`], [`timeout_at`], [`sleep`].
//!
//! monoio's own `Timeout` holds its `Sleep` inline, and a `Sleep` is a timer-wheel entry padded
//! to a cache line pair: 640 bytes aligned to 128. Every future that awaits a timed read or
//! write (and every future that awaits that one, up to the request's) would carry those bytes
//! and that alignment, and an async call moves its callee's future whole into its own state:
//! an aggregate's call, four levels deep, was 3,840 bytes, copied at each level and again into
//! the `FuturesUnordered` that runs it. Here the wrapper holds the deadline (16 bytes) and the
//! timer is boxed on the first poll that finds the future pending, so a future that is ready at
//! once never registers a timer at all.
//!
//! The one thing to know: semantics are monoio's. The deadline is fixed when the timeout is
//! made, the wrapped future is polled before the timer (a result that is ready at the deadline
//! wins), and the timer fires at the wheel's millisecond granularity.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use monoio::time::Sleep;

/// The deadline passed first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

/// `future`, bounded by `duration` from now.
pub fn timeout<F: Future>(duration: Duration, future: F) -> Timeout<F> {
    // A duration past what an Instant can hold is no deadline (monoio's far future).
    let deadline = Instant::now().checked_add(duration);
    Timeout {
        future,
        deadline,
        timer: None,
    }
}

/// `future`, bounded by `deadline`.
pub fn timeout_at<F: Future>(deadline: Instant, future: F) -> Timeout<F> {
    Timeout {
        future,
        deadline: Some(deadline),
        timer: None,
    }
}

/// Waits for `duration` from its first poll (an async fn: nothing runs before), its timer
/// boxed as [`timeout`]'s is.
pub async fn sleep(duration: Duration) {
    let _ = timeout(duration, std::future::pending::<()>()).await;
}

pin_project_lite::pin_project! {
    /// What [`timeout`] and [`timeout_at`] return: `Ok` with the future's output, or
    /// [`Elapsed`] (the future is dropped with this one).
    #[must_use = "futures do nothing unless polled"]
    pub struct Timeout<F> {
        #[pin]
        future: F,
        deadline: Option<Instant>,
        timer: Option<Pin<Box<Sleep>>>,
    }
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let me = self.project();
        if let Poll::Ready(v) = me.future.poll(cx) {
            return Poll::Ready(Ok(v));
        }
        let Some(deadline) = *me.deadline else {
            return Poll::Pending;
        };
        let timer = me.timer.get_or_insert_with(|| {
            Box::pin(monoio::time::sleep_until(monoio::time::Instant::from_std(
                deadline,
            )))
        });
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>> {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap()
    }

    /// The reason for this module: the wrapper adds a deadline and a pointer, not a timer.
    #[test]
    fn the_wrapper_is_small() {
        let size = std::mem::size_of::<Timeout<std::future::Ready<()>>>();
        assert!(size <= 40, "Timeout<Ready<()>> is {size} bytes");
        assert_eq!(std::mem::align_of::<Timeout<std::future::Ready<()>>>(), 8);
    }

    #[test]
    fn a_ready_future_wins_without_a_timer() {
        rt().block_on(async {
            let mut t = Box::pin(timeout(Duration::ZERO, std::future::ready(7)));
            assert_eq!(t.as_mut().await, Ok(7));
            assert!(
                t.timer.is_none(),
                "no timer for a future that was ready at once"
            );
        });
    }

    #[test]
    fn a_pending_future_times_out_at_its_deadline() {
        rt().block_on(async {
            let begun = Instant::now();
            let r = timeout(Duration::from_millis(30), std::future::pending::<()>()).await;
            assert_eq!(r, Err(Elapsed));
            let took = begun.elapsed();
            assert!(took >= Duration::from_millis(29), "fired after {took:?}");
            assert!(took < Duration::from_secs(2), "fired after {took:?}");
        });
    }

    #[test]
    fn a_future_that_ends_first_is_its_answer() {
        rt().block_on(async {
            let slow = async {
                monoio::time::sleep(Duration::from_millis(5)).await;
                1
            };
            let deadline = Instant::now() + Duration::from_secs(5);
            assert_eq!(timeout_at(deadline, slow).await, Ok(1));
        });
    }

    #[test]
    fn a_deadline_already_past_ends_a_pending_future() {
        rt().block_on(async {
            let past = Instant::now() - Duration::from_millis(1);
            let r = timeout_at(past, std::future::pending::<()>()).await;
            assert_eq!(r, Err(Elapsed));
        });
    }

    #[test]
    fn an_unrepresentable_duration_is_no_deadline() {
        let t = timeout(Duration::MAX, std::future::ready(()));
        assert!(t.deadline.is_none());
    }
}
