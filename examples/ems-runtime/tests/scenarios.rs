//! Asserts every scenario of the ems runtime embedding (see the library
//! docs), plus hostile-guest cases: nothing a guest does may crash the host.

use linmem_ems_runtime::scenarios::{self, MAX_MEMORY, processed};
use linmem_ems_runtime::{GUEST_CEXPORTS, GUEST_IMPORTS, GuestInstance, engine};
use wasmtime::Module;

const TEXT: &str = "Hello,  wasm world!\tems keeps its heap in guest memory.";

#[test]
fn guest_builds_data_structures_through_host_malloc() {
    let r = scenarios::workload(&engine(false).unwrap(), 3_000).unwrap();
    assert_eq!(r.checksum, r.expected);
    assert!(
        r.stats.mallocs > 1_000 && r.stats.frees > 1_000,
        "{:?}",
        r.stats
    );
    assert!(r.stats.aligned > 0 && r.stats.reallocs > 0, "{:?}", r.stats);
    assert_eq!(r.heap.used_blocks, 0, "the guest freed everything");
    assert_eq!(r.stats.out_of_memory, 0);
}

#[test]
fn host_passes_a_buffer_in_and_reads_the_result_out() {
    let r = scenarios::pass_buffer(&engine(false).unwrap(), TEXT).unwrap();
    assert_eq!(r.result, r.expected);
    assert_eq!(
        r.result,
        "10 words: HELLO,  WASM WORLD!\tEMS KEEPS ITS HEAP IN GUEST MEMORY."
    );
    assert_ne!(r.input, r.output);
    assert_eq!(r.heap.used_blocks, 0);
}

#[test]
fn heap_keeps_working_while_memory_grows_and_moves() {
    let r = scenarios::workload(&engine(true).unwrap(), 60_000).unwrap();
    assert_eq!(r.checksum, r.expected);
    assert!(r.stats.grow_events >= 3, "{:?}", r.stats);
    assert!(r.stats.base_moves >= 1, "{:?}", r.stats);
    assert!(
        r.final_pool > r.stats.initial_pool * 20,
        "{} -> {}",
        r.stats.initial_pool,
        r.final_pool
    );
    assert!(r.heap.high_water > 2 << 20, "several MiB live at the peak");
    assert_eq!(r.heap.used_blocks, 0);
}

#[test]
fn growth_stops_cleanly_at_the_memory_limit() {
    let engine = engine(false).unwrap();
    let module = Module::new(&engine, GUEST_IMPORTS).unwrap();
    let mut g = GuestInstance::new(&engine, &module, 4 << 20).unwrap();
    let mut blocks = Vec::new();
    let err = loop {
        match g.malloc(256 * 1024) {
            Ok(a) => blocks.push(a),
            Err(e) => break e,
        }
        assert!(blocks.len() < 100, "the 4 MiB limit was not enforced");
    };
    assert!(format!("{err}").contains("out of guest memory"), "{err}");
    assert!(!g.is_corrupted() && g.fault().is_none());
    assert!(g.stats().out_of_memory == 1 && g.pages() <= 64);
    for a in blocks {
        g.free(a).unwrap();
    }
    // Still fully usable, from the host and from the guest.
    let s: u64 = g.call("workload", 500).unwrap();
    assert_eq!(s, linmem_ems_runtime::workload::run(500));
    assert_eq!(g.heap_stats().unwrap().used_blocks, 0);
}

#[test]
fn guest_out_of_memory_is_a_clean_trap() {
    let engine = engine(false).unwrap();
    let module = Module::new(&engine, GUEST_IMPORTS).unwrap();
    let mut g = GuestInstance::new(&engine, &module, 2 << 20).unwrap();
    let err = g.call::<u32, u64>("workload", 60_000).unwrap_err();
    assert!(format!("{err:#}").contains("trapped"), "{err:#}");
    assert!(!g.is_corrupted(), "running out is not corruption");
    assert!(
        g.call::<u32, u64>("workload", 10).is_err(),
        "a trapped instance stays dead"
    );
}

#[test]
fn scribbled_header_fails_closed_with_a_message() {
    let r = scenarios::scribble(&engine(false).unwrap()).unwrap();
    assert!(r.corrupted);
    assert!(
        r.free_error.contains("guest heap corrupted"),
        "{}",
        r.free_error
    );
    assert!(
        r.later_call_error.contains("instance is dead"),
        "{}",
        r.later_call_error
    );
    assert!(
        r.host_malloc_error.contains("instance is dead"),
        "{}",
        r.host_malloc_error
    );
    assert!(r.fresh_instance_ok);
}

#[test]
fn foreign_pointer_and_double_free_fail_closed() {
    let cases = scenarios::misuse(&engine(false).unwrap()).unwrap();
    assert_eq!(cases.len(), 2);
    for (what, err, corrupted) in cases {
        assert!(corrupted, "{what}");
        assert!(err.contains("guest heap corrupted"), "{what}: {err}");
    }
}

#[test]
fn hostile_guest_values_never_crash_the_host() {
    let engine = engine(false).unwrap();
    let module = Module::new(&engine, GUEST_IMPORTS).unwrap();
    let mut g = GuestInstance::new(&engine, &module, MAX_MEMORY).unwrap();
    // Out-of-range reads and writes are errors, not panics.
    assert!(g.read(u32::MAX - 2, 8).is_err());
    assert!(g.write(u32::MAX, b"xy").is_err());
    // A result block whose length word points past memory.
    let a = g.malloc(16).unwrap();
    g.write(a, &u32::MAX.to_le_bytes()).unwrap();
    assert!(g.read_result(a).is_err());
    // A result that is not UTF-8.
    g.write(a, &[2, 0, 0, 0, 0xFF, 0xFE]).unwrap();
    assert!(g.read_result(a).is_err());
    g.free(a).unwrap();
    // Requests of absurd sizes are out of memory, not damage.
    assert!(g.malloc(u32::MAX).is_err());
    assert!(!g.is_corrupted());
    // A guest-side free of a pointer past the end of memory.
    assert!(g.call::<u32, ()>("release", u32::MAX - 7).is_err());
    assert!(g.is_corrupted());
}

#[test]
fn process_rejects_invalid_utf8() {
    let engine = engine(false).unwrap();
    let module = Module::new(&engine, GUEST_IMPORTS).unwrap();
    let mut g = GuestInstance::new(&engine, &module, MAX_MEMORY).unwrap();
    let a = g.malloc(3).unwrap();
    g.write(a, &[0xC3, 0x28, 0x41]).unwrap();
    assert_eq!(g.call::<(u32, u32), u32>("process", (a, 3)).unwrap(), 0);
    g.free(a).unwrap();
    assert_eq!(g.heap_stats().unwrap().used_blocks, 0);
}

#[test]
fn host_calls_exported_c_malloc_family_of_every_allocator() {
    let engine = engine(false).unwrap();
    assert_eq!(GUEST_CEXPORTS.len(), 4);
    for (allocator, wasm) in GUEST_CEXPORTS {
        let r = scenarios::c_exports(&engine, allocator, wasm, TEXT).unwrap();
        assert_eq!(r.result, processed(TEXT), "{allocator}");
        assert!(
            r.aligned != 0 && r.aligned.is_multiple_of(4096),
            "{allocator}: {:#x}",
            r.aligned
        );
        assert_eq!(r.posix.0, 0, "{allocator}");
        assert!(
            r.posix.1 != 0 && r.posix.1.is_multiple_of(256),
            "{allocator}: {:#x}",
            r.posix.1
        );
        assert!(r.calloc_zeroed, "{allocator}");
        assert!(r.realloc_kept, "{allocator}");
        assert!(r.huge_is_null, "{allocator}");
        assert!(
            r.big_ok && r.pages > 128,
            "{allocator}: grew to {} pages",
            r.pages
        );
        assert_eq!(r.verify, 0, "{allocator}");
    }
}

#[test]
fn memory_the_guest_grew_itself_is_skipped_and_never_touched() {
    let engine = engine(false).unwrap();
    let module = Module::new(&engine, GUEST_IMPORTS).unwrap();
    let mut g = GuestInstance::new(&engine, &module, MAX_MEMORY).unwrap();
    let small = g.malloc(1000).unwrap();
    let old_pages: i32 = g.call("grow_own_memory", 1).unwrap();
    assert!(old_pages > 0);
    let own = u32::try_from(old_pages).unwrap() * 64 * 1024;
    let own_end = own + 64 * 1024;
    g.write(own, &[0xEE; 64 * 1024]).unwrap();
    // Growing the pool skips the guest's page: the big block lies beyond.
    let big = g.malloc(1 << 20).unwrap();
    assert!(
        big >= own_end,
        "{big:#x} overlaps the guest's page at {own:#x}"
    );
    g.write(big, &[0x11; 1 << 20]).unwrap();
    assert_eq!(g.stats().foreign_growth, 1);
    assert_eq!(g.stats().grow_events, 1);
    // Fill what is left; nothing lands in the guest's page.
    let mut live = vec![small, big];
    while let Ok(a) = g.malloc(4000) {
        assert!(
            a + 4000 <= own || a >= own_end,
            "{a:#x} in the guest's page"
        );
        g.write(a, &[0x22; 4000]).unwrap();
        live.push(a);
        if live.len() > 400 {
            break;
        }
    }
    assert!(g.read(own, 64 * 1024).unwrap().iter().all(|&b| b == 0xEE));
    for a in live {
        g.free(a).unwrap();
    }
    assert!(g.read(own, 64 * 1024).unwrap().iter().all(|&b| b == 0xEE));
    assert!(!g.is_corrupted());
    let s = g.heap_stats().unwrap();
    assert_eq!(s.used_blocks, 0);
}
