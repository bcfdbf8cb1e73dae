//! `GlobalAlloc` adapters over any [`RawHeap`], written once.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr::{self, NonNull};

use lock_api::RawMutex;

use crate::{HeapStats, RawHeap, Violation};

/// The lock [`Locked`] uses unless told otherwise: a spin lock.
pub type DefaultRawMutex = spin::mutex::SpinMutex<()>;

#[inline(always)]
fn out(p: Option<NonNull<u8>>) -> *mut u8 {
    p.map_or(ptr::null_mut(), NonNull::as_ptr)
}

/// Exclusive access to an adapter's heap for the duration of one call.
trait Access {
    type Heap: RawHeap;
    fn with<T>(&self, f: impl FnOnce(&mut Self::Heap) -> T) -> T;
}

/// The four `GlobalAlloc` calls in terms of [`Access`].
///
/// `dealloc` ignores a detected misuse: the heap has already failed closed
/// (or, for allocators that cannot, the call changed nothing), and
/// `GlobalAlloc` must not unwind.
macro_rules! global_ops {
    () => {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            out(self.with(|h| h.alloc(layout)))
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            out(self.with(|h| h.alloc_zeroed(layout)))
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            if let Some(p) = NonNull::new(ptr) {
                // SAFETY: GlobalAlloc's contract: `ptr` came from this
                // allocator with `layout`.
                let _ = self.with(|h| unsafe { h.dealloc(p, layout) });
            }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            match NonNull::new(ptr) {
                // SAFETY: GlobalAlloc's contract: `ptr` came from this
                // allocator with `layout` and `new_size` fits `isize`.
                Some(p) => out(self.with(|h| unsafe { h.realloc(p, layout, new_size) })),
                None => ptr::null_mut(),
            }
        }
    };
}

/// A heap behind a lock: a `GlobalAlloc` for hosts and threaded wasm.
///
/// The lock is any `lock_api::RawMutex`, by default a spin lock.
pub struct Locked<H, R: RawMutex = DefaultRawMutex> {
    heap: lock_api::Mutex<R, H>,
}

impl<H, R: RawMutex> Locked<H, R> {
    /// Wraps `heap`.
    pub const fn new(heap: H) -> Self {
        Self {
            heap: lock_api::Mutex::const_new(R::INIT, heap),
        }
    }

    /// Locks the heap for direct use of its own API.
    pub fn lock(&self) -> lock_api::MutexGuard<'_, R, H> {
        self.heap.lock()
    }
}

// SAFETY: every call goes through the mutex, so the heap is reached by one
// thread at a time; heap methods never unwind (RawHeap's contract).
unsafe impl<H: RawHeap, R: RawMutex> GlobalAlloc for Locked<H, R> {
    global_ops!();
}

impl<H: RawHeap, R: RawMutex> Access for Locked<H, R> {
    type Heap = H;
    #[inline(always)]
    fn with<T>(&self, f: impl FnOnce(&mut H) -> T) -> T {
        f(&mut self.heap.lock())
    }
}

/// A heap with no lock: the smallest `GlobalAlloc` for single-threaded wasm.
///
/// It is `Sync` — so usable as a `static` global allocator — only on wasm32
/// without the `atomics` target feature, where there is one thread. Anywhere
/// else a `static` of it refuses to build; use [`Locked`] there.
pub struct Unsync<H> {
    heap: UnsafeCell<H>,
}

// SAFETY: M3: on wasm32 without atomics there is exactly one thread, and no
// heap method calls back into the adapter, so accesses never overlap.
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
unsafe impl<H> Sync for Unsync<H> {}

impl<H> Unsync<H> {
    /// Wraps `heap`.
    pub const fn new(heap: H) -> Self {
        Self {
            heap: UnsafeCell::new(heap),
        }
    }

    /// The heap, exclusively.
    ///
    /// # Safety
    ///
    /// No other reference to the heap exists while the result lives: do not
    /// allocate through this adapter meanwhile.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn heap_mut(&self) -> &mut H {
        // SAFETY: the caller's contract (M3).
        unsafe { &mut *self.heap.get() }
    }
}

impl<H: RawHeap> Unsync<H> {
    /// The heap's statistics.
    pub fn stats(&self) -> HeapStats {
        // SAFETY: M3: `stats` runs to completion without re-entering.
        unsafe { (*self.heap.get()).stats() }
    }

    /// Runs the heap's full check.
    pub fn verify(&self) -> Result<HeapStats, Violation> {
        // SAFETY: M3: `verify` runs to completion without re-entering.
        unsafe { (*self.heap.get()).verify() }
    }
}

// SAFETY: M3: each call takes the only reference to the heap for its own
// duration; heap methods never unwind (RawHeap's contract).
unsafe impl<H: RawHeap> GlobalAlloc for Unsync<H> {
    global_ops!();
}

impl<H: RawHeap> Access for Unsync<H> {
    type Heap = H;
    #[inline(always)]
    fn with<T>(&self, f: impl FnOnce(&mut H) -> T) -> T {
        // SAFETY: M3: the only reference to the heap for this call.
        f(unsafe { &mut *self.heap.get() })
    }
}

/// Defines an allocator crate's one-line `Global` type.
///
/// `global_allocator_type!(Heap<WasmMemory<true>>, Heap::new(source))` expands to a
/// `pub struct Global` with `const fn new()`, `GlobalAlloc`, `stats()` and
/// `verify()`, over [`Unsync`] on single-threaded wasm and [`Locked`] on
/// wasm with `atomics`. It exists on wasm32 only, since it grows memory 0.
#[macro_export]
macro_rules! global_allocator_type {
    ($heap:ty, $make:expr) => {
        #[cfg(target_arch = "wasm32")]
        /// This allocator as the module's global allocator, over `memory.grow`.
        ///
        /// ```ignore
        /// #[global_allocator]
        /// static A: Global = Global::new();
        /// ```
        ///
        /// It first uses the unused tail of the initial memory (from
        /// `__heap_base`), then grows. Make one per module, as its global
        /// allocator: it assumes nothing else allocates above `__heap_base`.
        pub struct Global {
            #[cfg(not(target_feature = "atomics"))]
            inner: $crate::Unsync<$heap>,
            #[cfg(target_feature = "atomics")]
            inner: $crate::Locked<$heap>,
        }

        #[cfg(target_arch = "wasm32")]
        impl Global {
            /// The allocator, ready to use as `#[global_allocator]`.
            pub const fn new() -> Self {
                #[cfg(not(target_feature = "atomics"))]
                let inner = $crate::Unsync::new($make);
                #[cfg(target_feature = "atomics")]
                let inner = $crate::Locked::new($make);
                Self { inner }
            }

            /// The heap's statistics.
            pub fn stats(&self) -> $crate::HeapStats {
                #[cfg(not(target_feature = "atomics"))]
                return self.inner.stats();
                #[cfg(target_feature = "atomics")]
                return $crate::RawHeap::stats(&*self.inner.lock());
            }

            /// Runs the heap's full check.
            pub fn verify(&self) -> Result<$crate::HeapStats, $crate::Violation> {
                #[cfg(not(target_feature = "atomics"))]
                return self.inner.verify();
                #[cfg(target_feature = "atomics")]
                return $crate::RawHeap::verify(&*self.inner.lock());
            }
        }

        #[cfg(target_arch = "wasm32")]
        impl Default for Global {
            fn default() -> Self {
                Self::new()
            }
        }

        // SAFETY: delegates every call to the adapter, which upholds the
        // GlobalAlloc contract.
        #[cfg(target_arch = "wasm32")]
        unsafe impl ::core::alloc::GlobalAlloc for Global {
            #[inline]
            unsafe fn alloc(&self, layout: ::core::alloc::Layout) -> *mut u8 {
                // SAFETY: forwarded contract.
                unsafe { self.inner.alloc(layout) }
            }
            #[inline]
            unsafe fn alloc_zeroed(&self, layout: ::core::alloc::Layout) -> *mut u8 {
                // SAFETY: forwarded contract.
                unsafe { self.inner.alloc_zeroed(layout) }
            }
            #[inline]
            unsafe fn dealloc(&self, ptr: *mut u8, layout: ::core::alloc::Layout) {
                // SAFETY: forwarded contract.
                unsafe { self.inner.dealloc(ptr, layout) }
            }
            #[inline]
            unsafe fn realloc(
                &self,
                ptr: *mut u8,
                layout: ::core::alloc::Layout,
                new_size: usize,
            ) -> *mut u8 {
                // SAFETY: forwarded contract.
                unsafe { self.inner.realloc(ptr, layout, new_size) }
            }
        }

        // The calling crate declares the `c-exports` feature: this `cfg` is
        // evaluated there.
        #[cfg(all(target_arch = "wasm32", feature = "c-exports"))]
        $crate::c_exports!();
    };
}

/// The `c-exports` feature's items, expanded inside an allocator crate by
/// [`global_allocator_type!`] on wasm32 when that crate's `c-exports`
/// feature is on: the module's global allocator `GLOBAL` and the C
/// allocation functions over it (see the crate docs, "C exports").
#[doc(hidden)]
#[macro_export]
macro_rules! c_exports {
    () => {
        /// The module's global allocator (feature `c-exports`), shared by
        /// Rust allocations and the exported C functions of [`c_exports`].
        #[global_allocator]
        pub static GLOBAL: Global = Global::new();

        /// C's allocation functions, exported from the wasm module under
        /// their C names (feature `c-exports`), over [`GLOBAL`]. See
        /// `linmem_memory::cexports` for their exact semantics.
        pub mod c_exports {
            /// C `malloc`: `size` bytes, 16-byte aligned; null when out of
            /// memory; `malloc(0)` is a unique pointer to free.
            ///
            /// # Safety
            ///
            /// None beyond C's: the result is freed with `free` only.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn malloc(size: usize) -> *mut u8 {
                $crate::cexports::malloc(&super::GLOBAL, size)
            }

            /// C `calloc`: `n * size` zeroed bytes; null on overflow or when
            /// out of memory.
            ///
            /// # Safety
            ///
            /// None beyond C's: the result is freed with `free` only.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn calloc(n: usize, size: usize) -> *mut u8 {
                $crate::cexports::calloc(&super::GLOBAL, n, size)
            }

            /// C `aligned_alloc`: null unless `align` is a power of two up
            /// to 64 KiB.
            ///
            /// # Safety
            ///
            /// None beyond C's: the result is freed with `free` only.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut u8 {
                $crate::cexports::aligned_alloc(&super::GLOBAL, align, size)
            }

            /// C `posix_memalign`: 0, or `EINVAL` (22) / `ENOMEM` (12).
            ///
            /// # Safety
            ///
            /// `memptr` is null or valid for writing a pointer.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn posix_memalign(
                memptr: *mut *mut u8,
                align: usize,
                size: usize,
            ) -> i32 {
                // SAFETY: the caller's contract.
                unsafe { $crate::cexports::posix_memalign(&super::GLOBAL, memptr, align, size) }
            }

            /// C `free`; `free(NULL)` does nothing.
            ///
            /// # Safety
            ///
            /// `p` is null or a live result of these functions.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn free(p: *mut u8) {
                // SAFETY: the caller's contract.
                unsafe { $crate::cexports::free(&super::GLOBAL, p) }
            }

            /// C `realloc`; `realloc(p, 0)` frees `p` and returns null.
            ///
            /// # Safety
            ///
            /// `p` is null or a live result of these functions.
            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn realloc(p: *mut u8, size: usize) -> *mut u8 {
                // SAFETY: the caller's contract.
                unsafe { $crate::cexports::realloc(&super::GLOBAL, p, size) }
            }
        }
    };
}
