//! Handing freed heap back to the system after work that allocates in bursts.
//!
//! A browser leg's DTLS association holds some 40 KiB while it lives (its handshake buffers
//! and flights); it is dropped seconds after the handshake, but glibc keeps what it freed in
//! the `dtls` thread's arena, so the process's RSS stays at its peak. The DTLS thread trims
//! the heap a few seconds after associations went. The library forbids unsafe code, so the
//! trim itself (glibc's `malloc_trim`) is the binary's to give ([`set_trim`]); without one
//! nothing is trimmed.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

static TRIM: OnceLock<fn()> = OnceLock::new();
static RELEASED: AtomicUsize = AtomicUsize::new(0);

/// How the heap is trimmed (set once, by the binary, at start).
pub fn set_trim(trim: fn()) {
    let _ = TRIM.set(trim);
}

/// Something sizeable was freed: the next [`trim_if_released`] trims.
pub fn released() {
    RELEASED.fetch_add(1, Ordering::Relaxed);
}

/// Trims the heap if anything was [`released`] since the last call; whether it did.
/// Called off the call thread (trimming walks every arena under its lock).
pub fn trim_if_released() -> bool {
    if RELEASED.swap(0, Ordering::Relaxed) == 0 {
        return false;
    }
    match TRIM.get() {
        Some(trim) => {
            trim();
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static TRIMS: AtomicUsize = AtomicUsize::new(0);

    #[test]
    fn a_trim_follows_a_release_once() {
        set_trim(|| {
            TRIMS.fetch_add(1, Ordering::Relaxed);
        });
        let _ = trim_if_released();
        let before = TRIMS.load(Ordering::Relaxed);
        assert!(!trim_if_released(), "nothing released since");
        released();
        released();
        assert!(trim_if_released());
        assert!(!trim_if_released());
        assert_eq!(TRIMS.load(Ordering::Relaxed), before + 1);
    }
}
