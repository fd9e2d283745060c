//! Seeded mutation of valid inputs for the readers' robustness tests: a small deterministic RNG,
//! byte-level mutators, and a harness that turns a panic into a failure naming the seed and the
//! mutation. Std-only, so every crate's tests can include it (`#[path]`) without a dependency.
//!
//! Every case is reproducible from its printed seed: set `KONTRAST_FUZZ_SEED` to run that one
//! case only. `KONTRAST_FUZZ_CASES` scales the number of cases per test (default 1).
#![allow(dead_code)]

use std::cell::Cell;
use std::fmt::Display;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// splitmix64: tiny, fast, and good enough to spread mutations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }

    /// True with probability `1 / n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// A random byte.
    pub fn byte(&mut self) -> u8 {
        self.next_u64() as u8
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }

    /// One element of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Bytes that often sit on a parser's boundaries.
pub const INTERESTING_BYTES: [u8; 8] = [0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF, b'\n', b'"'];

/// 32-bit values that overflow sizes and counts.
pub const INTERESTING_U32: [u32; 9] = [
    0,
    1,
    0x7F,
    0xFFFF,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFE,
    u32::MAX,
    0x0100_0000,
];

/// The mutation applied to one case, for the failure message.
pub type Description = String;

/// Applies one to three random mutations to `base`.
pub fn mutate(rng: &mut Rng, base: &[u8]) -> (Vec<u8>, Description) {
    let mut data = base.to_vec();
    let mut what = Vec::new();
    for _ in 0..1 + rng.below(3) {
        what.push(mutate_once(rng, &mut data));
    }
    (data, what.join(", then "))
}

/// One mutation of `data` in place; returns what it did.
pub fn mutate_once(rng: &mut Rng, data: &mut Vec<u8>) -> Description {
    let len = data.len();
    match rng.below(10) {
        0 | 1 if len > 0 => {
            let flips = 1 + rng.below(8);
            for _ in 0..flips {
                let at = rng.below(len);
                data[at] ^= 1 << rng.below(8);
            }
            format!("{flips} bit flips")
        }
        2 if len > 0 => {
            let at = rng.below(len);
            let value = *rng.pick(&INTERESTING_BYTES);
            data[at] = value;
            format!("byte {at} = {value:#04x}")
        }
        3 if len >= 4 => {
            let at = rng.below(len - 3);
            let value = *rng.pick(&INTERESTING_U32);
            let bytes = if rng.one_in(2) {
                value.to_be_bytes()
            } else {
                value.to_le_bytes()
            };
            data[at..at + 4].copy_from_slice(&bytes);
            format!("u32 at {at} = {value:#x}")
        }
        4 => {
            let at = rng.below(len + 1);
            data.truncate(at);
            format!("truncated to {at} bytes")
        }
        5 => {
            let n = 1 + rng.below(64);
            let extra = rng.bytes(n);
            data.extend_from_slice(&extra);
            format!("{n} random bytes appended")
        }
        6 if len > 0 => {
            // A copied chunk re-inserted: repeated headers, markers, fields.
            let start = rng.below(len);
            let end = (start + 1 + rng.below(32)).min(len);
            let chunk = data[start..end].to_vec();
            let at = rng.below(len + 1);
            data.splice(at..at, chunk);
            format!("bytes {start}..{end} copied to {at}")
        }
        7 if len > 0 => {
            let start = rng.below(len);
            let end = (start + 1 + rng.below(32)).min(len);
            data.drain(start..end);
            format!("bytes {start}..{end} removed")
        }
        8 if len > 0 => {
            let start = rng.below(len);
            let end = (start + 1 + rng.below(16)).min(len);
            let fill = *rng.pick(&INTERESTING_BYTES);
            data[start..end].fill(fill);
            format!("bytes {start}..{end} = {fill:#04x}")
        }
        _ => {
            let n = rng.below(2 * len + 16);
            *data = rng.bytes(n);
            format!("{n} random bytes")
        }
    }
}

/// Number of cases for a test that runs `default` by default.
pub fn cases(default: u64) -> u64 {
    let scale = std::env::var("KONTRAST_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(1);
    default.saturating_mul(scale.max(1))
}

/// The seeds of a test's cases: derived from the test's name, or the one in
/// `KONTRAST_FUZZ_SEED` (decimal or `0x` hex) to replay a failure.
pub fn seeds(test: &str, default_cases: u64) -> Vec<u64> {
    if let Ok(text) = std::env::var("KONTRAST_FUZZ_SEED") {
        let parsed = match text.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => text.parse(),
        };
        return vec![parsed.expect("KONTRAST_FUZZ_SEED is a decimal or 0x-hex u64")];
    }
    // FNV-1a of the name: stable across runs and platforms.
    let base = test.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut rng = Rng::new(base);
    (0..cases(default_cases)).map(|_| rng.next_u64()).collect()
}

thread_local! {
    /// Largest single allocation request on this thread since the last reset.
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

/// A global allocator that records, per thread, the largest single request, so a test can
/// assert that a reader sized nothing from a hostile header.
pub struct PeakAlloc;

fn note(size: usize) {
    // `try_with`: the slot may be gone while the thread exits.
    let _ = PEAK.try_with(|p| {
        if size > p.get() {
            p.set(size);
        }
    });
}

// SAFETY: every call forwards to the system allocator unchanged; only a size is recorded.
unsafe impl std::alloc::GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: same contract as the caller's.
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

/// The largest single allocation on this thread since the previous call (which resets it).
pub fn take_peak() -> usize {
    PEAK.with(|p| p.replace(0))
}

/// How one case ended.
pub enum Outcome {
    /// The reader accepted the input.
    Accepted,
    /// The reader refused it with this message.
    Refused(String),
}

/// Runs `read` on one case. A panic, an empty error message or a single allocation above
/// `max_alloc` bytes fails the test with the seed and the mutation, so the case can be replayed.
pub fn check<T, E: Display>(
    test: &str,
    seed: u64,
    what: &str,
    max_alloc: usize,
    read: impl FnOnce() -> Result<T, E>,
) -> Outcome {
    take_peak();
    let result = catch_unwind(AssertUnwindSafe(read));
    let peak = take_peak();
    let replay =
        format!("{test}: seed {seed:#018x} ({what}); replay with KONTRAST_FUZZ_SEED={seed:#x}");
    let outcome = match result {
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(non-string panic)");
            panic!("{replay}: the reader panicked: {message}");
        }
        Ok(Ok(_)) => Outcome::Accepted,
        Ok(Err(e)) => {
            let message = e.to_string();
            assert!(
                !message.trim().is_empty(),
                "{replay}: an error without a message"
            );
            Outcome::Refused(message)
        }
    };
    assert!(
        peak <= max_alloc,
        "{replay}: one allocation of {peak} bytes (limit {max_alloc})"
    );
    outcome
}

/// Counts of a test's outcomes, printed so a run shows that both paths were exercised.
#[derive(Debug, Default)]
pub struct Tally {
    /// Cases accepted.
    pub accepted: u64,
    /// Cases refused with an error.
    pub refused: u64,
}

impl Tally {
    /// Adds one outcome.
    pub fn add(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Accepted => self.accepted += 1,
            Outcome::Refused(_) => self.refused += 1,
        }
    }

    /// Prints the counts (visible with `--nocapture`).
    pub fn report(&self, test: &str) {
        println!(
            "{test}: {} cases, {} accepted, {} refused",
            self.accepted + self.refused,
            self.accepted,
            self.refused
        );
    }
}

/// Whether a single case is being replayed (`KONTRAST_FUZZ_SEED`).
pub fn replaying() -> bool {
    std::env::var_os("KONTRAST_FUZZ_SEED").is_some()
}

impl Tally {
    /// Fails unless both accepted and refused inputs were seen: mutations that never get past
    /// the first check, or never fail it, test little. Skipped when replaying one case.
    pub fn assert_both_paths(&self) {
        if !replaying() {
            assert!(self.accepted > 0 && self.refused > 0, "{self:?}");
        }
    }
}
