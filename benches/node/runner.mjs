// The node (V8) engine of the linmem benchmarks: the same plan/result
// protocol as benches/runner (see its src/main.rs). Wall time only: fuel
// and memory caps are wasmtime's, so fuel jobs fail here and the harness
// sends them to wasmtime instead.
//
// usage: node --expose-gc runner.mjs PLAN [TIMEOUT_SECS]   (timeout is not
// enforced; --expose-gc lets it collect garbage between timed runs)
import { readFileSync } from "node:fs";

const plan = readFileSync(process.argv[2], "utf8").split("\n").filter((l) => l.trim() !== "");
const modules = new Map();
const failed = new Set();
const out = (s) => process.stdout.write(s + "\n");

function u32s(mem, ptr, len) {
  return new Uint32Array(mem.buffer.slice(ptr, ptr + len * 4));
}

function run(f) {
  const [, id, mid, exp, scale, fuel, , trace] = f;
  if (fuel === "1") throw new Error("fuel is wasmtime-only");
  // Collect the previous runs' instances now, outside the timed region:
  // otherwise a memory.grow inside a timed run may trigger that GC.
  if (globalThis.gc) globalThis.gc();
  const inst = new WebAssembly.Instance(modules.get(mid), {});
  const e = inst.exports;
  let checksum;
  let nanos;
  if (trace !== "-") {
    const data = readFileSync(trace);
    const buf = e.replay_buf();
    const CHUNK = 4096 * 16;
    const t0 = process.hrtime.bigint();
    e.replay_begin();
    for (let off = 0; off < data.length; off += CHUNK) {
      const c = data.subarray(off, Math.min(off + CHUNK, data.length));
      new Uint8Array(e.memory.buffer, buf, c.length).set(c);
      e.replay_chunk(c.length / 16);
    }
    checksum = e.replay_end();
    nanos = process.hrtime.bigint() - t0;
  } else {
    const fn = e[exp];
    if (typeof fn !== "function") throw new Error(`no export ${exp}`);
    const t0 = process.hrtime.bigint();
    checksum = fn(Number(scale));
    nanos = process.hrtime.bigint() - t0;
  }
  const pages = e.memory.buffer.byteLength / 65536;
  out(`ok ${id} ${BigInt.asUintN(64, BigInt(checksum))} ${nanos} 0 ${pages} 0`);
  if (e.series_len && e.series_len() > 0) {
    out(`series ${id} ${Array.from(u32s(e.memory, e.series_ptr(), e.series_len())).join(",")}`);
  }
}

for (const line of plan) {
  const f = line.split(" ");
  if (f[0] === "module") {
    try {
      const m = new WebAssembly.Module(readFileSync(f[2]));
      modules.set(f[1], m);
      const inst = new WebAssembly.Instance(m, {});
      const hb = inst.exports.__heap_base ? inst.exports.__heap_base.value >>> 0 : 0;
      out(`module ${f[1]} heap_base ${hb} pages ${inst.exports.memory.buffer.byteLength / 65536}`);
    } catch (err) {
      out(`moderr ${f[1]} ${String(err).replace(/\n/g, " | ")}`);
    }
  } else if (f[0] === "run") {
    const key = f[2] + " " + f[3];
    if (failed.has(key)) {
      out(`err ${f[1]} skipped after an earlier failure`);
      continue;
    }
    try {
      run(f);
    } catch (err) {
      failed.add(key);
      out(`err ${f[1]} ${String(err).replace(/\n/g, " | ")}`);
    }
  } else {
    process.stderr.write(`bad plan line: ${line}\n`);
    process.exit(2);
  }
}
