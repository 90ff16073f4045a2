//! [`Latch`]: a one-shot event inside one worker thread. The drain fires one per worker (its
//! accept loops stop, idle connections close); a reload that removes a listen address fires
//! the one of that address's accept loop.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// A one-shot, single-thread event: once fired, every present and future `wait()` completes.
/// Waiters that are dropped unfired deregister, so idle keep-alive waits do not accumulate.
#[derive(Default)]
pub struct Latch {
    fired: Cell<bool>,
    waiters: RefCell<Waiters>,
}

#[derive(Default)]
struct Waiters {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Latch {
    pub fn fire(&self) {
        if self.fired.replace(true) {
            return;
        }
        let slots = std::mem::take(&mut self.waiters.borrow_mut().slots);
        for w in slots.into_iter().flatten() {
            w.wake();
        }
        self.waiters.borrow_mut().free.clear();
    }

    pub fn is_fired(&self) -> bool {
        self.fired.get()
    }

    pub fn wait(&self) -> LatchWait<'_> {
        LatchWait {
            latch: self,
            slot: None,
        }
    }
}

pub struct LatchWait<'a> {
    latch: &'a Latch,
    slot: Option<usize>,
}

impl Future for LatchWait<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.latch.fired.get() {
            return Poll::Ready(());
        }
        let mut w = self.latch.waiters.borrow_mut();
        match self.slot {
            Some(i) if i < w.slots.len() => w.slots[i] = Some(cx.waker().clone()),
            _ => {
                let i = match w.free.pop() {
                    Some(i) => {
                        w.slots[i] = Some(cx.waker().clone());
                        i
                    }
                    None => {
                        w.slots.push(Some(cx.waker().clone()));
                        w.slots.len() - 1
                    }
                };
                drop(w);
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for LatchWait<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            if self.latch.fired.get() {
                return;
            }
            let mut w = self.latch.waiters.borrow_mut();
            if i < w.slots.len() {
                w.slots[i] = None;
                w.free.push(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn dropped_waiters_free_their_slots_and_fire_wakes_the_rest() {
        let latch = Latch::default();
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        for _ in 0..1000 {
            let mut w = Box::pin(latch.wait());
            assert!(w.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(latch.waiters.borrow().slots.len(), 1, "slots are reused");
        let mut kept = Box::pin(latch.wait());
        assert!(kept.as_mut().poll(&mut cx).is_pending());
        latch.fire();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(kept.as_mut().poll(&mut cx).is_ready());
        assert!(Box::pin(latch.wait()).as_mut().poll(&mut cx).is_ready());
    }
}
