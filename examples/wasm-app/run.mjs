// Instantiates the app and runs it: node run.mjs app.wasm BLOCKS LIVE
import { readFileSync } from "node:fs";
const [file, blocks, live] = process.argv.slice(2);
const { instance } = await WebAssembly.instantiate(readFileSync(file), {});
const n = Number(blocks), l = Number(live);
const checked = instance.exports.run(n, l);
const pages = instance.exports.pages();
console.log(`checked ${checked} of ${n} blocks, memory ${pages} pages`);
if (checked !== n) { console.error("FAILED: a block was damaged or an allocation failed"); process.exit(1); }
