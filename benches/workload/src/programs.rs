//! Real programs: JSON, maps, trees and strings. Their allocation traces are
//! also what the trace-replay workloads replay.

use crate::rng::Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::hash::{BuildHasherDefault, Hasher};

/// FNV-1a over bytes: the checksum of text outputs.
fn fnv(cs: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(cs ^ 0xCBF2_9CE4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// A deterministic hasher (FNV-1a), so HashMap does the same work in every
/// module.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = fnv(self.0, bytes);
    }
}

type FnvMap<K, V> = HashMap<K, V, BuildHasherDefault<Fnv>>;

#[derive(Serialize, Deserialize)]
struct Item {
    id: u64,
    name: String,
    price: f64,
    tags: Vec<String>,
    attrs: BTreeMap<String, i64>,
    children: Vec<Item>,
}

fn word(rng: &mut Rng) -> String {
    let len = rng.range(2, 12);
    (0..len)
        .map(|_| (b'a' + rng.below(26) as u8) as char)
        .collect()
}

fn item(rng: &mut Rng, depth: u32) -> Item {
    let kids = if depth == 0 { 0 } else { rng.below(4) };
    Item {
        id: rng.next() >> 20,
        name: word(rng) + " " + &word(rng),
        price: (rng.below(1_000_000) as f64) / 100.0,
        tags: (0..rng.below(5)).map(|_| word(rng)).collect(),
        attrs: (0..rng.below(6))
            .map(|_| (word(rng), rng.next() as i64 >> 40))
            .collect(),
        children: (0..kids).map(|_| item(rng, depth - 1)).collect(),
    }
}

/// JSON: generate `scale` items (nested up to 2 levels), serialize them,
/// parse the text into untyped `Value`s and typed items, serialize again.
#[unsafe(no_mangle)]
pub extern "C" fn wl_json(scale: u32) -> u64 {
    let mut rng = Rng::new(0x5EED_0010);
    let doc: Vec<Item> = (0..scale).map(|_| item(&mut rng, 2)).collect();
    let text = serde_json::to_string(&doc).unwrap_or_else(|_| crate::fail());
    drop(doc);
    let value: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|_| crate::fail());
    let pretty = serde_json::to_string_pretty(&value).unwrap_or_else(|_| crate::fail());
    drop(value);
    let typed: Vec<Item> = serde_json::from_str(&pretty).unwrap_or_else(|_| crate::fail());
    let again = serde_json::to_string(&typed).unwrap_or_else(|_| crate::fail());
    if again != text {
        crate::fail();
    }
    fnv(fnv(0, text.as_bytes()), pretty.as_bytes())
}

/// Maps: a BTreeMap and a HashMap of strings, filled, half removed, updated,
/// iterated, dropped; `scale` keys.
#[unsafe(no_mangle)]
pub extern "C" fn wl_maps(scale: u32) -> u64 {
    let mut rng = Rng::new(0x5EED_0011);
    let mut bt: BTreeMap<u64, String> = BTreeMap::new();
    let mut hm: FnvMap<String, Vec<u32>> = FnvMap::default();
    for i in 0..scale {
        let k = rng.next() % (scale as u64 * 4);
        bt.insert(k, format!("value-{k}"));
        hm.entry(word(&mut rng)).or_default().push(i);
    }
    let keys: Vec<u64> = bt.keys().copied().step_by(2).collect();
    for k in keys {
        bt.remove(&k);
    }
    for v in hm.values_mut() {
        v.retain(|x| x % 3 != 0);
        v.shrink_to_fit();
    }
    let mut cs = 0u64;
    for (k, v) in &bt {
        cs = fnv(cs ^ k, v.as_bytes());
    }
    let mut sizes: Vec<usize> = hm.values().map(Vec::len).collect();
    sizes.sort_unstable();
    for s in sizes {
        cs = cs.wrapping_mul(31).wrapping_add(s as u64);
    }
    cs
}

/// A binary tree node.
struct Node {
    left: Option<Box<Node>>,
    right: Option<Box<Node>>,
    value: u32,
}

fn build(depth: u32, value: u32) -> Box<Node> {
    if depth == 0 {
        return Box::new(Node {
            left: None,
            right: None,
            value,
        });
    }
    Box::new(Node {
        left: Some(build(depth - 1, value.wrapping_mul(2))),
        right: Some(build(depth - 1, value.wrapping_mul(2).wrapping_add(1))),
        value,
    })
}

fn check(n: &Node) -> u64 {
    n.value as u64 + n.left.as_deref().map_or(0, check) + n.right.as_deref().map_or(0, check)
}

/// Trees: the binary-trees pattern. A long-lived tree, then `scale` short
/// trees of varying depth built, checked, dropped; plus a growing vector of
/// boxed strings (a tree of owners).
#[unsafe(no_mangle)]
pub extern "C" fn wl_trees(scale: u32) -> u64 {
    let long = build(12, 1);
    let mut cs = 0u64;
    let mut owners: Vec<Box<str>> = Vec::new();
    for i in 0..scale {
        let t = build(4 + i % 6, i);
        cs = cs.wrapping_add(check(&t));
        if i % 8 == 0 {
            owners.push(format!("owner {i}").into_boxed_str());
        }
    }
    cs = cs.wrapping_add(check(&long));
    owners.iter().fold(cs, |c, s| fnv(c, s.as_bytes()))
}

/// Strings: formatting, concatenation, splitting, joining, case mapping,
/// replacing: `scale` lines of text.
#[unsafe(no_mangle)]
pub extern "C" fn wl_strings(scale: u32) -> u64 {
    let mut rng = Rng::new(0x5EED_0012);
    let mut doc = String::new();
    for i in 0..scale {
        let _ = writeln!(
            doc,
            "{i:>6}: {} {} = {:.3}",
            word(&mut rng),
            word(&mut rng),
            rng.next() as f64 / 1e15
        );
    }
    let mut cs = 0u64;
    let mut out: Vec<String> = Vec::new();
    for line in doc.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let joined = parts
            .iter()
            .rev()
            .map(|p| p.to_uppercase())
            .collect::<Vec<_>>()
            .join("_");
        let replaced = joined.replace('_', "--");
        cs = fnv(cs, replaced.as_bytes());
        out.push(replaced);
        if out.len() > 64 {
            out.drain(..32);
        }
    }
    let all = out.concat();
    fnv(cs, all.as_bytes())
}
