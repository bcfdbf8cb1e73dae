// Drives a module's exported C allocation functions from the host, the way
// a runtime does: node run.mjs module.wasm [OPS]
//
// Checks every C rule the exports promise (alignment, malloc(0), free(NULL),
// calloc zeroing and overflow, realloc keeping contents, realloc(NULL)/(p, 0),
// aligned_alloc and posix_memalign errors, running out of memory), then runs
// OPS random mixed operations with byte patterns, interleaved with Rust-side
// allocations inside the module and full heap checks.
import { readFileSync } from "node:fs";

const [file, opsArg] = process.argv.slice(2);
const OPS = Number(opsArg ?? 20000);
const { instance } = await WebAssembly.instantiate(readFileSync(file), {});
const x = instance.exports;
const EINVAL = 22, ENOMEM = 12, MAX_ALIGN = 65536;

let failures = 0, checks = 0;
function check(ok, what) {
  checks++;
  if (!ok) {
    failures++;
    console.error(`FAILED: ${what}`);
  }
}
const u8 = () => new Uint8Array(x.memory.buffer); // fresh after every grow
const p32 = (v) => v >>> 0; // pointers come back as i32
const malloc = (n) => p32(x.malloc(n));
const calloc = (n, s) => p32(x.calloc(n, s));
const realloc = (p, n) => p32(x.realloc(p, n));
const aligned_alloc = (a, n) => p32(x.aligned_alloc(a, n));
const free = (p) => x.free(p);

function fill(p, len, tag) {
  const m = u8();
  for (let i = 0; i < len; i++) m[p + i] = (tag + i * 31) & 255;
}
function intact(p, len, tag) {
  const m = u8();
  for (let i = 0; i < len; i++) if (m[p + i] !== ((tag + i * 31) & 255)) return false;
  return true;
}
function zero(p, len) {
  const m = u8();
  for (let i = 0; i < len; i++) if (m[p + i] !== 0) return false;
  return true;
}
function verify(where) {
  const v = x.heap_verify();
  check(v === 0, `heap check after ${where}: ${v}`);
}

// malloc: 16-byte alignment, unique malloc(0), free(NULL).
{
  const a = malloc(0), b = malloc(0);
  check(a !== 0 && b !== 0 && a !== b, `malloc(0) gives unique pointers (${a}, ${b})`);
  check(a % 16 === 0 && b % 16 === 0, "malloc(0) is 16-aligned");
  free(a); free(b); free(0);
  const ps = [];
  for (let n = 0; n < 300; n += 7) {
    const p = malloc(n);
    check(p !== 0 && p % 16 === 0, `malloc(${n}) = ${p} is 16-aligned`);
    fill(p, n, n);
    ps.push([p, n]);
  }
  for (const [p, n] of ps) check(intact(p, n, n), `malloc(${n}) block intact`);
  for (const [p] of ps) free(p);
  verify("malloc");
}

// calloc: zeroed even over reused memory; overflow and zero sizes.
{
  const dirty = malloc(4096);
  fill(dirty, 4096, 7);
  free(dirty);
  for (const [n, s] of [[1, 4096], [64, 64], [3, 5], [1000, 1]]) {
    const p = calloc(n, s);
    check(p !== 0 && p % 16 === 0 && zero(p, n * s), `calloc(${n}, ${s}) is zeroed and aligned`);
    free(p);
  }
  check(calloc(0x10000, 0x10000) === 0, "calloc(65536, 65536) overflows to NULL");
  check(calloc(0xffffffff, 2) === 0, "calloc(SIZE_MAX, 2) overflows to NULL");
  const z = calloc(0, 16);
  check(z !== 0 && z % 16 === 0, "calloc(0, 16) gives a freeable pointer");
  free(z);
  verify("calloc");
}

// realloc: contents survive growth and shrinking; NULL and zero sizes; failure.
{
  let p = realloc(0, 10);
  check(p !== 0 && p % 16 === 0, "realloc(NULL, 10) acts as malloc");
  fill(p, 10, 3);
  for (const n of [100, 5000, 70000, 33, 200000, 10]) {
    const q = realloc(p, n);
    check(q !== 0 && q % 16 === 0, `realloc to ${n} succeeds, aligned`);
    check(intact(q, 10, 3), `realloc to ${n} keeps the contents`);
    p = q;
  }
  fill(p, 10, 9);
  check(realloc(p, 0x7ffffff0) === 0, "realloc to 2 GiB fails (128 MiB cap)");
  check(realloc(p, 0xfffffff8) === 0, "realloc to SIZE_MAX - 7 fails");
  check(intact(p, 10, 9), "a failed realloc leaves the block intact");
  check(realloc(p, 0) === 0, "realloc(p, 0) frees and returns NULL");
  verify("realloc");
}

// aligned_alloc: every power of two up to 64 KiB; bad alignments.
{
  const ps = [];
  for (let a = 1; a <= MAX_ALIGN; a *= 2) {
    for (const n of [1, 24, 1000]) {
      const p = aligned_alloc(a, n);
      check(p !== 0 && p % Math.max(a, 16) === 0, `aligned_alloc(${a}, ${n}) = ${p}`);
      fill(p, n, a + n);
      ps.push([p, n, a]);
    }
  }
  for (const [p, n, a] of ps) check(intact(p, n, a + n), `aligned_alloc(${a}, ${n}) intact`);
  // A grown aligned block keeps its alignment.
  const [p0, n0, a0] = ps[ps.length - 1];
  const q = realloc(p0, 3 * MAX_ALIGN);
  check(q !== 0 && q % a0 === 0 && intact(q, n0, a0 + n0), "realloc keeps 64 KiB alignment and contents");
  ps[ps.length - 1][0] = q;
  for (const [p] of ps) free(p);
  for (const a of [0, 3, 24, 100, 2 * MAX_ALIGN, 0x80000000]) {
    check(aligned_alloc(a, 16) === 0, `aligned_alloc(${a}, 16) is NULL`);
  }
  verify("aligned_alloc");
}

// posix_memalign: EINVAL, ENOMEM (memptr untouched), success.
{
  const slot = malloc(4);
  const view = () => new DataView(x.memory.buffer);
  view().setUint32(slot, 0xdeadbeef, true);
  for (const a of [0, 1, 2, 3, 12, 24, 100]) {
    check(x.posix_memalign(slot, a, 16) === EINVAL, `posix_memalign align ${a} is EINVAL`);
  }
  check(x.posix_memalign(0, 16, 16) === EINVAL, "posix_memalign(NULL, ..) is EINVAL");
  check(x.posix_memalign(slot, 16, 0x7ffffff0) === ENOMEM, "posix_memalign 2 GiB is ENOMEM");
  check(x.posix_memalign(slot, 2 * MAX_ALIGN, 16) === ENOMEM, "posix_memalign align 128 KiB is ENOMEM");
  check(view().getUint32(slot, true) === 0xdeadbeef, "failed posix_memalign leaves *memptr");
  for (const a of [4, 8, 16, 64, 4096, MAX_ALIGN]) {
    check(x.posix_memalign(slot, a, 40) === 0, `posix_memalign align ${a} succeeds`);
    const p = view().getUint32(slot, true);
    check(p !== 0 && p % Math.max(a, 16) === 0, `posix_memalign align ${a} gives ${p}`);
    fill(p, 40, a);
    check(intact(p, 40, a), "posix_memalign block usable");
    free(p);
  }
  free(slot);
  verify("posix_memalign");
}

// Out of memory: the module is capped at 128 MiB (build.rs).
{
  const big = malloc(200 << 20);
  check(big === 0, "malloc(200 MiB) fails under a 128 MiB cap");
  const p = malloc(64);
  check(p !== 0, "the heap still works after running out");
  free(p);
  verify("out of memory");
}

// Many mixed operations with byte patterns, and Rust allocations alongside.
{
  let seed = 0x2545f491;
  const rnd = (n) => {
    seed ^= seed << 13; seed >>>= 0;
    seed ^= seed >>> 17;
    seed ^= seed << 5; seed >>>= 0;
    return seed % n;
  };
  const size = () => [rnd(64), rnd(1024), rnd(16384)][rnd(10) < 7 ? 0 : rnd(10) < 9 ? 1 : 2];
  const live = [];
  let tag = 0, kept = 0;
  const take = () => live.splice(rnd(live.length), 1)[0];
  for (let i = 0; i < OPS; i++) {
    const op = live.length === 0 ? 0 : live.length > 400 ? 9 : rnd(10);
    if (op <= 2) {
      const n = size(), p = malloc(n);
      check(p !== 0 && p % 16 === 0, `op ${i}: malloc(${n})`);
      fill(p, n, ++tag);
      live.push({ p, n, tag, a: 16 });
    } else if (op === 3) {
      const n = size(), p = calloc(1, n);
      check(p !== 0 && zero(p, n), `op ${i}: calloc(1, ${n}) zeroed`);
      fill(p, n, ++tag);
      live.push({ p, n, tag, a: 16 });
    } else if (op === 4) {
      const a = 1 << rnd(17), n = size();
      let p;
      if (rnd(2)) {
        p = aligned_alloc(a, n);
      } else {
        const slot = malloc(4);
        const r = x.posix_memalign(slot, Math.max(a, 4), n);
        check(r === 0, `op ${i}: posix_memalign(${a}, ${n}) = ${r}`);
        p = new DataView(x.memory.buffer).getUint32(slot, true);
        free(slot);
      }
      check(p !== 0 && p % Math.max(a, 16) === 0, `op ${i}: aligned ${a} gives ${p}`);
      fill(p, n, ++tag);
      live.push({ p, n, tag, a: Math.max(a, 16) });
    } else if (op <= 6) {
      const b = live[rnd(live.length)];
      const n = size(), q = realloc(b.p, n);
      if (n === 0) {
        check(q === 0, `op ${i}: realloc(p, 0) is NULL`);
        live.splice(live.indexOf(b), 1);
        continue;
      }
      check(q !== 0 && q % b.a === 0, `op ${i}: realloc(${b.n} -> ${n}) aligned to ${b.a}`);
      check(intact(q, Math.min(b.n, n), b.tag), `op ${i}: realloc kept the contents`);
      b.p = q; b.n = n; b.tag = ++tag;
      fill(q, n, b.tag);
    } else if (op === 7) {
      kept = x.rust_grow(1 + rnd(20));
      check(kept !== 0, `op ${i}: Rust allocations`);
    } else {
      const b = take();
      check(intact(b.p, b.n, b.tag), `op ${i}: block ${b.p} (${b.n} bytes) intact before free`);
      free(b.p);
    }
    if (i % 1000 === 999) {
      verify(`op ${i}`);
      check(x.rust_check() === kept, `op ${i}: Rust strings intact`);
      for (const b of live) check(intact(b.p, b.n, b.tag), `op ${i}: block intact`);
    }
    if (failures > 20) break;
  }
  for (const b of live) {
    check(intact(b.p, b.n, b.tag), "block intact at the end");
    free(b.p);
  }
  check(x.rust_check() === kept, "Rust strings intact at the end");
  verify("mixed operations");
}

const pages = x.memory.buffer.byteLength / 65536;
console.log(`${checks - failures} of ${checks} checks passed, ${OPS} mixed operations, memory ${pages} pages, ${x.heap_in_use()} bytes in use (Rust strings)`);
if (failures) process.exit(1);
