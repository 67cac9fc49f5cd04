//! Rules that can never decide ([`super::CodeOwners::unreachable`]): later
//! rules filed to answer "does one of them match everything this rule
//! matches?", each question answered by hash look-ups over the rule's own
//! segments, so the whole pass is linear in the file's length.

use super::index::{lits, suffix};
use super::pattern::{Canon, Seg, Tail, Tok};
use std::collections::{BTreeSet, HashMap, HashSet};

#[derive(Default)]
pub(super) struct Shadows {
    same: HashSet<Canon>,
    everything: bool,
    /// Root-anchored literal paths: true when they own the path itself too.
    anchored: HashMap<String, bool>,
    names: HashMap<String, bool>,
    suffixes: HashMap<String, bool>,
    /// The lengths of `suffixes`' keys.
    suffix_lens: BTreeSet<usize>,
}

impl Shadows {
    pub(super) fn add(&mut self, c: &Canon) {
        self.same.insert(c.clone());
        self.everything |= c.everything();
        let owns_self = c.tail == Tail::SelfOrBelow;
        let record = |map: &mut HashMap<String, bool>, key: String| {
            let e = map.entry(key).or_insert(false);
            *e |= owns_self;
        };
        if c.segs.iter().all(|s| matches!(s, Seg::Lit(_))) {
            let key = lits(&c.segs).join("/");
            record(&mut self.anchored, key);
        } else if let [Seg::Any, Seg::Lit(n)] = c.segs.as_slice() {
            record(&mut self.names, n.clone());
        } else if let Some(s) = suffix(c) {
            record(&mut self.suffixes, s.to_string());
            self.suffix_lens.insert(s.len());
        }
    }

    /// Whether the later rules recorded so far shadow `c` completely.
    pub(super) fn covers(&self, c: &Canon) -> bool {
        if self.everything || self.same.contains(c) {
            return true;
        }
        let n = c.segs.len();
        // Whether every path c matches has a component below the one
        // matched by segment i, or (when not) the shadow owns the
        // component itself too.
        let ok = |i: usize, owns_self: bool| owns_self || i + 1 < n || c.tail == Tail::Below;
        let mut prefix = String::new();
        for (k, seg) in c.segs.iter().enumerate() {
            let Seg::Lit(l) = seg else { break };
            if k > 0 {
                prefix.push('/');
            }
            prefix.push_str(l);
            if let Some(&owns_self) = self.anchored.get(&prefix) {
                if ok(k, owns_self) {
                    return true;
                }
            }
        }
        if self.names.is_empty() && self.suffixes.is_empty() {
            return false;
        }
        for (i, seg) in c.segs.iter().enumerate() {
            let text = match seg {
                Seg::Lit(l) => {
                    if self.names.get(l).is_some_and(|&o| ok(i, o)) {
                        return true;
                    }
                    l.as_str()
                }
                Seg::Glob(g) => match g.toks.last() {
                    Some(Tok::Lit(l)) => l.as_str(),
                    _ => continue,
                },
                Seg::Any => continue,
            };
            // Every ending of `text` that is a recorded suffix.
            if self.suffixes.is_empty() {
                continue;
            }
            for &len in self.suffix_lens.range(..=text.len()) {
                let at = text.len() - len;
                if !text.is_char_boundary(at) {
                    continue;
                }
                if let Some(&owns_self) = self.suffixes.get(&text[at..]) {
                    if ok(i, owns_self) {
                        return true;
                    }
                }
            }
        }
        false
    }
}
