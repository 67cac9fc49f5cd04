//! The set of rules, filed for lookup: which rules can match a path, tried
//! in an order that lets a GitHub lookup stop at the first match.
//!
//! Each rule is filed once, in the cheapest structure that can answer it:
//! root-anchored literal paths and directories are looked up by the path's
//! prefixes, unanchored names (`foo`, `foo/`, `**/logs`) by its
//! components, suffix patterns (`*.js`, `*_test.go`) by each component's
//! endings, and the remaining wildcard rules go to short lists filed by a
//! literal every match must contain: a component (`auth` for
//! `/src/**/auth/*.go`), the start of a component (`node_` for
//! `/src/node_*`, `test_` for `test_*.py`) or a literal prefix (`src` for
//! `/src/*/x`), so a path only tries the few rules that can match it, each
//! by its own automaton ([`Canon::matches`]). An entry is a rule number
//! (4 bytes) in one list or map, so the index grows by a small constant per
//! rule, and building it is one pass over the rules plus a sort of each
//! list. A lookup takes the highest matching rule and skips every
//! structure that cannot beat the best match found so far.

use super::pattern::{Canon, Seg, Tail, Tok};
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// FNV-1a: the index hashes short path pieces, millions of times a second;
/// SipHash's flood resistance buys nothing here (a hostile file can only
/// slow its own repository's lookups, and keys are whole components).
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
}

type Map<V> = HashMap<Box<str>, V, BuildHasherDefault<Fnv>>;

/// Receives the rules that match a path, and counts the work.
pub(super) trait Collect {
    fn hit(&mut self, rule: u32);
    /// Whether a structure whose highest rule is `max` can still matter.
    fn wants(&self, max: u32) -> bool;
    /// The work counter: rules tried and automaton transitions.
    fn steps(&mut self) -> &mut u64;
}

/// GitHub: only the highest matching rule counts.
#[derive(Default)]
pub(super) struct Last {
    pub(super) best: Option<u32>,
    pub(super) steps: u64,
}

impl Collect for Last {
    fn hit(&mut self, rule: u32) {
        if self.best.is_none_or(|b| rule > b) {
            self.best = Some(rule);
        }
    }
    fn wants(&self, max: u32) -> bool {
        self.best.is_none_or(|b| max > b)
    }
    fn steps(&mut self) -> &mut u64 {
        &mut self.steps
    }
}

/// GitLab: every matching rule (the best per section is picked after).
#[derive(Default)]
pub(super) struct All {
    pub(super) hits: Vec<u32>,
    pub(super) steps: u64,
}

impl Collect for All {
    fn hit(&mut self, rule: u32) {
        self.hits.push(rule);
    }
    fn wants(&self, _max: u32) -> bool {
        true
    }
    fn steps(&mut self) -> &mut u64 {
        &mut self.steps
    }
}

/// Keeps, per section, only the highest rule of `list` (a later rule with
/// the same key and tail always wins), highest first.
fn last_per_section(list: &mut Vec<u32>, section_of: &[u32]) {
    list.sort_unstable_by(|a, b| b.cmp(a));
    list.dedup();
    let mut seen = HashSet::new();
    list.retain(|&r| seen.insert(section_of.get(r as usize).copied().unwrap_or(0)));
    list.shrink_to_fit();
}

/// Rules filed under one key.
#[derive(Debug, Clone, Default)]
struct Node {
    /// Rules owning the key itself and everything below it.
    own: Vec<u32>,
    /// Rules owning only what is below the key.
    below: Vec<u32>,
    /// Wildcard rules tried whenever the key is found (anchored: only
    /// below it).
    tries: Option<Tries>,
    /// Anchored: wildcard rules whose next segment starts with a literal
    /// (`/src/node_crypto*`), by that literal.
    stems: Option<Box<Stems>>,
    max: u32,
}

/// Wildcard rules tried one by one, highest first.
#[derive(Debug, Clone)]
struct Tries(Box<[u32]>);

impl Tries {
    fn build(mut rules: Vec<u32>) -> Option<Tries> {
        rules.sort_unstable_by(|a, b| b.cmp(a));
        rules.dedup();
        (!rules.is_empty()).then(|| Tries(rules.into_boxed_slice()))
    }

    fn max(&self) -> u32 {
        self.0.first().copied().unwrap_or(0)
    }

    fn visit(&self, canon: &[Canon], path: &str, c: &mut impl Collect) {
        for &r in self.0.iter() {
            // Highest first: once one cannot matter, none after it can.
            if !c.wants(r) {
                return;
            }
            *c.steps() += 1;
            if canon
                .get(r as usize)
                .is_some_and(|k| k.matches(path, c.steps()))
            {
                c.hit(r);
            }
        }
    }
}

/// Wildcard rules by the literal start of one segment (`node_crypto` for
/// `/src/node_crypto*`, `test_` for `test_*.py`): tried on a component
/// only when it starts with that literal.
#[derive(Debug, Clone, Default)]
struct Stems {
    lens: Vec<usize>,
    by: Map<Tries>,
    max: u32,
}

type Groups = HashMap<String, Vec<u32>>;

impl Stems {
    fn build(groups: Groups) -> Option<Stems> {
        let mut lens: Vec<usize> = groups.keys().map(String::len).collect();
        lens.sort_unstable();
        lens.dedup();
        let mut by = Map::default();
        let mut max = None;
        for (stem, rules) in groups {
            if let Some(t) = Tries::build(rules) {
                max = max.max(Some(t.max()));
                by.insert(stem.into(), t);
            }
        }
        Some(Stems {
            lens,
            by,
            max: max?,
        })
    }

    fn visit(&self, canon: &[Canon], comp: &str, path: &str, c: &mut impl Collect) {
        if !c.wants(self.max) {
            return;
        }
        for &len in &self.lens {
            if len > comp.len() {
                break;
            }
            *c.steps() += 1;
            if comp.is_char_boundary(len) {
                if let Some(t) = self.by.get(&comp[..len]) {
                    t.visit(canon, path, c);
                }
            }
        }
    }
}

/// All rules, filed for lookup.
#[derive(Debug, Clone, Default)]
pub(super) struct Index {
    /// Rules matching every path.
    everything: Vec<u32>,
    /// Root-anchored, by literal path (`src/main.rs`, `docs`) or literal
    /// prefix of a wildcard pattern (`src` for `/src/*/x`).
    anchored: Map<Node>,
    anchored_max: Option<u32>,
    /// Root-anchored wildcard rules starting with a stem (`/foo*/`).
    root_stems: Option<Stems>,
    /// By a literal component: unanchored names (`logs` for `**/logs`) and
    /// wildcard rules with a literal segment past their first wildcard
    /// (`auth` for `/src/**/auth/*.go`).
    names: Map<Node>,
    names_max: Option<u32>,
    /// Unanchored single-segment suffix patterns (`.js` for `*.js`).
    suffixes: Map<Node>,
    suffix_lens: Vec<usize>,
    suffixes_max: Option<u32>,
    /// Unanchored wildcard rules with a stem (`test_*.py`).
    floating_stems: Option<Stems>,
    /// Everything else.
    rest: Option<Tries>,
}

impl Index {
    pub(super) fn build(canon: &[Canon], section_of: &[u32]) -> Index {
        let mut ix = Index::default();
        let mut anchored_tries: Groups = HashMap::new();
        let mut anchored_stems: HashMap<String, Groups> = HashMap::new();
        let mut name_tries: Groups = HashMap::new();
        let mut root_stems: Groups = HashMap::new();
        let mut floating_stems: Groups = HashMap::new();
        let mut rest: Vec<u32> = Vec::new();
        let mut lens: HashSet<usize> = HashSet::new();
        let put = |map: &mut Map<Node>, key: &str, tail: Tail, rule: u32| {
            let node = map.entry(key.into()).or_default();
            match tail {
                Tail::Below => node.below.push(rule),
                _ => node.own.push(rule),
            }
            node.max = node.max.max(rule);
        };
        let touch = |map: &mut Map<Node>, key: &str, rule: u32| {
            let node = map.entry(key.into()).or_default();
            node.max = node.max.max(rule);
        };
        for (i, c) in canon.iter().enumerate() {
            let rule = u32::try_from(i).unwrap_or(u32::MAX);
            let literals = c
                .segs
                .iter()
                .take_while(|s| matches!(s, Seg::Lit(_)))
                .count();
            if c.everything() {
                ix.everything.push(rule);
            } else if literals == c.segs.len() {
                put(&mut ix.anchored, &lits(&c.segs).join("/"), c.tail, rule);
                ix.anchored_max = Some(rule);
            } else if let [Seg::Any, Seg::Lit(name)] = c.segs.as_slice() {
                put(&mut ix.names, name, c.tail, rule);
                ix.names_max = Some(rule);
            } else if let Some(suffix) = suffix(c) {
                put(&mut ix.suffixes, suffix, c.tail, rule);
                lens.insert(suffix.len());
                ix.suffixes_max = Some(rule);
            } else if let Some(name) = inner_literal(c, literals) {
                // Usually more selective than a shared prefix like `src`.
                touch(&mut ix.names, name, rule);
                ix.names_max = Some(rule);
                name_tries.entry(name.to_string()).or_default().push(rule);
            } else if let Some(stem) = stem(c.segs.get(literals)) {
                let key = lits(&c.segs[..literals]).join("/");
                let group = if literals > 0 {
                    touch(&mut ix.anchored, &key, rule);
                    ix.anchored_max = Some(rule);
                    anchored_stems.entry(key).or_default()
                } else {
                    &mut root_stems
                };
                group.entry(stem.to_string()).or_default().push(rule);
            } else if let Some(stem) = stem(c.segs.get(1)).filter(|_| c.segs[0] == Seg::Any) {
                floating_stems
                    .entry(stem.to_string())
                    .or_default()
                    .push(rule);
            } else if literals > 0 {
                let key = lits(&c.segs[..literals]).join("/");
                touch(&mut ix.anchored, &key, rule);
                ix.anchored_max = Some(rule);
                anchored_tries.entry(key).or_default().push(rule);
            } else {
                rest.push(rule);
            }
        }
        for (key, rules) in anchored_tries {
            if let Some(node) = ix.anchored.get_mut(key.as_str()) {
                node.tries = Tries::build(rules);
            }
        }
        for (key, groups) in anchored_stems {
            if let Some(node) = ix.anchored.get_mut(key.as_str()) {
                node.stems = Stems::build(groups).map(Box::new);
            }
        }
        for (key, rules) in name_tries {
            if let Some(node) = ix.names.get_mut(key.as_str()) {
                node.tries = Tries::build(rules);
            }
        }
        for map in [&mut ix.anchored, &mut ix.names, &mut ix.suffixes] {
            for node in map.values_mut() {
                last_per_section(&mut node.own, section_of);
                last_per_section(&mut node.below, section_of);
            }
            map.shrink_to_fit();
        }
        last_per_section(&mut ix.everything, section_of);
        ix.root_stems = Stems::build(root_stems);
        ix.floating_stems = Stems::build(floating_stems);
        ix.suffix_lens = lens.into_iter().collect();
        ix.suffix_lens.sort_unstable();
        ix.rest = Tries::build(rest);
        ix
    }

    pub(super) fn visit(&self, canon: &[Canon], path: &str, c: &mut impl Collect) {
        for &r in &self.everything {
            c.hit(r);
        }
        if let Some(s) = &self.root_stems {
            s.visit(canon, path.split('/').next().unwrap_or(path), path, c);
        }
        let anchored = self.anchored_max.is_some_and(|m| c.wants(m));
        let names = self.names_max.is_some_and(|m| c.wants(m));
        let suffixes = self.suffixes_max.is_some_and(|m| c.wants(m));
        let stems = self.floating_stems.as_ref().filter(|s| c.wants(s.max));
        if anchored || names || suffixes || stems.is_some() {
            let mut start = 0;
            loop {
                let end = path[start..].find('/').map_or(path.len(), |i| start + i);
                let last = end == path.len();
                *c.steps() += 1;
                if anchored {
                    if let Some(node) = self.anchored.get(&path[..end]) {
                        visit_node(node, canon, last, true, path, c);
                        if let (Some(s), false) = (&node.stems, last) {
                            let rest = &path[end + 1..];
                            s.visit(canon, rest.split('/').next().unwrap_or(rest), path, c);
                        }
                    }
                }
                let comp = &path[start..end];
                if names {
                    if let Some(node) = self.names.get(comp) {
                        visit_node(node, canon, last, false, path, c);
                    }
                }
                if suffixes {
                    for &len in &self.suffix_lens {
                        if len > comp.len() {
                            break;
                        }
                        *c.steps() += 1;
                        let at = comp.len() - len;
                        if comp.is_char_boundary(at) {
                            if let Some(node) = self.suffixes.get(&comp[at..]) {
                                visit_node(node, canon, last, false, path, c);
                            }
                        }
                    }
                }
                if let Some(s) = stems {
                    s.visit(canon, comp, path, c);
                }
                if last {
                    break;
                }
                start = end + 1;
            }
        }
        if let Some(t) = &self.rest {
            t.visit(canon, path, c);
        }
    }
}

/// `node` is keyed by the path's first components (anchored) or by one of
/// its components; `last` says whether that reaches the path's end.
/// Anchored wildcard rules only match strictly below their literal prefix;
/// a name's wildcard rules may end at it.
fn visit_node(
    node: &Node,
    canon: &[Canon],
    last: bool,
    anchored: bool,
    path: &str,
    c: &mut impl Collect,
) {
    if !c.wants(node.max) {
        return;
    }
    for &r in &node.own {
        c.hit(r);
    }
    if !last {
        for &r in &node.below {
            c.hit(r);
        }
    }
    if let Some(t) = &node.tries {
        if !(last && anchored) {
            t.visit(canon, path, c);
        }
    }
}

/// A literal segment of a wildcard pattern past its leading literals (the
/// last one, usually the most specific), when there is one.
fn inner_literal(c: &Canon, leading: usize) -> Option<&str> {
    c.segs[leading..].iter().rev().find_map(|s| match s {
        Seg::Lit(l) => Some(l.as_str()),
        _ => None,
    })
}

/// The literal a wildcard segment starts with (`node_` of `node_*.cc`).
fn stem(seg: Option<&Seg>) -> Option<&str> {
    match seg {
        Some(Seg::Glob(g)) => match g.toks.first() {
            Some(Tok::Lit(l)) => Some(l.as_str()),
            _ => None,
        },
        _ => None,
    }
}

/// `S` of an unanchored single-segment `*S` with a literal `S`.
pub(super) fn suffix(c: &Canon) -> Option<&str> {
    match c.segs.as_slice() {
        [Seg::Any, Seg::Glob(g)] => match g.toks.as_slice() {
            [Tok::Star, Tok::Lit(s)] if c.tail != Tail::Exact => Some(s),
            _ => None,
        },
        _ => None,
    }
}

/// The literal segments, in order.
pub(super) fn lits(segs: &[Seg]) -> Vec<&str> {
    segs.iter()
        .filter_map(|s| match s {
            Seg::Lit(l) => Some(l.as_str()),
            _ => None,
        })
        .collect()
}
