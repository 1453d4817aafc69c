//! CPU-level helpers: cache prefetch hints (CPUID-checked) and a thread's CPU time.

use std::time::Duration;

/// How many items ahead the flush's loops ask for the memory they will read. The flush walks
/// every context, whose state is scattered over the heap: one dependent cache miss after
/// another was most of its time. A counter's item is very little work, so the distance must
/// be long to cover a miss: 12 left the sample boxes still in flight when read, 32 covers them
/// (BENCHMARKS.md has the measurement).
pub const PREFETCH_AHEAD: usize = 32;

/// Asks the CPU to start loading the cache line at `addr` (0: nothing). A hint only: it never
/// faults and does not change what any load returns.
#[inline(always)]
pub fn prefetch(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    if addr != 0 {
        // SAFETY: PREFETCHT0 is an SSE instruction, and SSE is part of the x86_64 baseline, so
        // the instruction exists on every CPU this code can run on. It reads no memory
        // architecturally: an invalid or unmapped address is ignored, never faults.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(addr as *const i8)
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// [`prefetch`] for a line about to be written (an Arc's count, a state taken out of its box):
/// the line arrives owned, so the write does not wait for a second round trip to take it from
/// the cores that read it (the receivers read every context they match). Where the CPU lacks
/// PREFETCHW this is a plain [`prefetch`].
#[inline(always)]
pub fn prefetch_write(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    if addr != 0 {
        if has_prefetchw() {
            // SAFETY: PREFETCHW exists on this CPU (`has_prefetchw` asked CPUID). It is a hint:
            // it never faults, whatever `addr` is, writes nothing, and leaves flags and stack
            // alone, which is what the options promise.
            unsafe {
                std::arch::asm!("prefetchw [{0}]", in(reg) addr, options(nostack, preserves_flags, nomem));
            }
        } else {
            prefetch(addr);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// Whether the CPU has PREFETCHW (CPUID 0x8000_0001, ECX bit 8), asked once.
#[cfg(target_arch = "x86_64")]
fn has_prefetchw() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        use std::arch::x86_64::__cpuid;
        // SAFETY: CPUID is in the x86_64 baseline, so the instruction always exists; an
        // unsupported extended leaf only returns unrelated data, hence `max` is checked before
        // `leaf` is believed.
        #[allow(unused_unsafe)]
        let (max, leaf) = unsafe { (__cpuid(0x8000_0000).eax, __cpuid(0x8000_0001).ecx) };
        max >= 0x8000_0001 && leaf & (1 << 8) != 0
    })
}

/// CPU time of the calling thread (zero if the clock cannot be read).
pub fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec through a valid pointer to a live local.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}
