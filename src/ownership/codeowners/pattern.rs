//! One rule's pattern: reduced to a canonical form ([`Canon`]) and matched
//! by two nested automata, never by backtracking.
//!
//! A pattern is a sequence of segments, one per path component, where `**`
//! ([`Seg::Any`]) takes zero or more components. [`Canon::matches`] runs
//! that sequence as a nondeterministic automaton over the path's
//! components: state `i` means "the first `i` segments have matched", all
//! live states advance together on each component, and `**` is a state
//! with a loop. A wildcard segment is matched against one component the
//! same way, one character at a time ([`Glob`]: the positions of its
//! literal characters and `?`s, with a loop where a `*` stands), its live
//! states kept as bits of machine words. Each character of the path is
//! read once per live segment state, so the work of a match is at most
//! (path length + components) × (states of the pattern), whatever the
//! pattern: `*a*a*a*a?b` costs what `*.js` costs per character.

/// One piece of a wildcard segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Tok {
    Lit(String),
    Star,
    Quest,
}

/// One `/`-separated segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Seg {
    /// `**`: zero or more whole components.
    Any,
    /// A literal component.
    Lit(String),
    /// A component with `*` or `?` (boxed: most segments are literal).
    Glob(Box<Glob>),
}

/// What a pattern owns beyond the components its segments match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Tail {
    /// Only paths its segments match entirely (`docs/*`).
    Exact,
    /// Those paths and everything below them (`docs`, `*.js`).
    SelfOrBelow,
    /// Only paths strictly below them (`docs/`, `docs/**`).
    Below,
}

/// A pattern reduced to what it matches: a path matches when `segs` match
/// its first k components (`Any` taking zero or more) and `tail` accepts
/// the remaining n - k (Exact: 0, SelfOrBelow: any, Below: at least 1).
/// An unanchored pattern starts with `Any`; `segs` never ends with `Any`
/// and never has two `Any` in a row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Canon {
    pub(super) segs: Vec<Seg>,
    pub(super) tail: Tail,
}

impl Canon {
    pub(super) fn parse(pattern: &str) -> Result<Canon, String> {
        // (character, escaped); `\/` is a separator like `/`.
        let mut chars: Vec<(char, bool)> = Vec::with_capacity(pattern.len());
        let mut it = pattern.chars();
        while let Some(c) = it.next() {
            if c == '\\' {
                match it.next() {
                    Some('/') => chars.push(('/', false)),
                    Some(n) => chars.push((n, true)),
                    None => return Err("the pattern ends with a lone `\\`".into()),
                }
            } else {
                chars.push((c, false));
            }
        }
        let sep = |&(c, e): &(char, bool)| c == '/' && !e;
        let dir = chars.last().is_some_and(sep);
        while chars.last().is_some_and(sep) {
            chars.pop();
        }
        if chars.is_empty() {
            return Err("empty pattern".into());
        }
        let anchored = chars.iter().any(sep);
        let mut segs: Vec<Seg> = Vec::new();
        for raw in chars.split(sep).filter(|s| !s.is_empty()) {
            let seg = if raw == [('*', false), ('*', false)] {
                Seg::Any
            } else {
                let mut toks: Vec<Tok> = Vec::new();
                for &(c, escaped) in raw {
                    match (c, escaped) {
                        ('*', false) => {
                            if toks.last() != Some(&Tok::Star) {
                                toks.push(Tok::Star);
                            }
                        }
                        ('?', false) => toks.push(Tok::Quest),
                        _ => match toks.last_mut() {
                            Some(Tok::Lit(s)) => s.push(c),
                            _ => toks.push(Tok::Lit(c.to_string())),
                        },
                    }
                }
                match toks.as_slice() {
                    [Tok::Lit(s)] => Seg::Lit(s.clone()),
                    _ => Seg::Glob(Box::new(Glob::new(toks))),
                }
            };
            if !(seg == Seg::Any && segs.last() == Some(&Seg::Any)) {
                segs.push(seg);
            }
        }
        let star = || Seg::Glob(Box::new(Glob::new(vec![Tok::Star])));
        let tail = if segs.last() == Some(&Seg::Any) {
            // A trailing `**` matches everything inside, not the directory:
            // `docs/**` is `docs/`; `docs/**/` needs one directory more.
            segs.pop();
            if segs.is_empty() {
                segs.push(star());
                if dir {
                    Tail::Below
                } else {
                    Tail::SelfOrBelow
                }
            } else {
                if dir {
                    segs.push(star());
                }
                Tail::Below
            }
        } else if dir {
            Tail::Below
        } else if segs.last().is_some_and(Seg::is_star) {
            Tail::Exact
        } else {
            Tail::SelfOrBelow
        };
        if !anchored && segs.first() != Some(&Seg::Any) {
            segs.insert(0, Seg::Any);
        }
        Ok(Canon { segs, tail })
    }

    /// Matches every non-empty path (`*`, `**`, `/**`).
    pub(super) fn everything(&self) -> bool {
        match self.segs.as_slice() {
            [s] => s.is_star() && self.tail == Tail::SelfOrBelow,
            [Seg::Any, s] => s.is_star() && self.tail != Tail::Below,
            _ => false,
        }
    }

    /// States of its automata: one per segment boundary, plus one per
    /// position (and one more) of each wildcard segment. At most the
    /// pattern's length in characters plus 3.
    pub(super) fn states(&self) -> usize {
        self.segs.len()
            + 1
            + self
                .segs
                .iter()
                .map(|s| match s {
                    Seg::Glob(g) => g.len + 1,
                    _ => 0,
                })
                .sum::<usize>()
    }

    /// Whether `path` (without a leading `/`) matches; `steps` counts the
    /// automaton transitions taken (see the module documentation).
    pub(super) fn matches(&self, path: &str, steps: &mut u64) -> bool {
        if self.segs.len() < 64 {
            self.run_small(path, steps)
        } else {
            self.run_big(path, steps)
        }
    }

    /// Whether reaching the last state after a component is a match:
    /// `more` says whether components follow.
    fn accepts(&self, more: bool) -> bool {
        match self.tail {
            Tail::Exact => !more,
            Tail::SelfOrBelow => true,
            Tail::Below => more,
        }
    }

    /// Up to 63 segments: live states in one word.
    fn run_small(&self, path: &str, steps: &mut u64) -> bool {
        let k = self.segs.len();
        let accept = 1u64 << k;
        let any = self
            .segs
            .iter()
            .enumerate()
            .filter(|(_, s)| **s == Seg::Any)
            .fold(0u64, |m, (i, _)| m | 1 << i);
        // `**` may match nothing: its state also stands for the next one
        // (never two `**` in a row, so one shift closes the set).
        let close = |d: u64| d | ((d & any) << 1);
        let mut live = close(1);
        let mut comps = path.split('/').peekable();
        while let Some(comp) = comps.next() {
            let mut next = 0u64;
            let mut todo = live & !accept;
            while todo != 0 {
                let i = todo.trailing_zeros() as usize;
                todo &= todo - 1;
                *steps += 1;
                match &self.segs[i] {
                    Seg::Any => next |= 1 << i,
                    seg => {
                        if seg.matches(comp, steps) {
                            next |= 1 << (i + 1);
                        }
                    }
                }
            }
            live = close(next);
            if live & accept != 0 && self.accepts(comps.peek().is_some()) {
                return true;
            }
            if live == 0 {
                return false;
            }
        }
        false
    }

    /// 64 segments or more: live states in a vector of flags.
    fn run_big(&self, path: &str, steps: &mut u64) -> bool {
        let k = self.segs.len();
        let close = |d: &mut Vec<bool>| {
            for i in 0..k {
                if d[i] && self.segs[i] == Seg::Any {
                    d[i + 1] = true;
                }
            }
        };
        let mut live = vec![false; k + 1];
        live[0] = true;
        close(&mut live);
        let mut next = vec![false; k + 1];
        let mut comps = path.split('/').peekable();
        while let Some(comp) = comps.next() {
            next.iter_mut().for_each(|n| *n = false);
            for i in 0..k {
                if !live[i] {
                    continue;
                }
                *steps += 1;
                match &self.segs[i] {
                    Seg::Any => next[i] = true,
                    seg => {
                        if seg.matches(comp, steps) {
                            next[i + 1] = true;
                        }
                    }
                }
            }
            std::mem::swap(&mut live, &mut next);
            close(&mut live);
            if live[k] && self.accepts(comps.peek().is_some()) {
                return true;
            }
            if !live.contains(&true) {
                return false;
            }
        }
        false
    }
}

impl Seg {
    fn is_star(&self) -> bool {
        matches!(self, Seg::Glob(g) if g.toks == [Tok::Star])
    }

    /// Whether one component matches this segment (`Any` always does).
    fn matches(&self, comp: &str, steps: &mut u64) -> bool {
        match self {
            Seg::Any => true,
            Seg::Lit(l) => l == comp,
            Seg::Glob(g) => g.matches(comp, steps),
        }
    }
}

/// A wildcard segment and its automaton: positions `0..len` are its
/// literal characters and `?`s in order; state `i` means "the first `i`
/// positions have been read", state `len` accepts, and a `*` standing
/// after `i` positions is a loop on state `i` over any character. Bit
/// `i` of word `i / 64` stands for state `i`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Glob {
    pub(super) toks: Vec<Tok>,
    len: usize,
    /// States with a loop.
    loops: Box<[u64]>,
    /// States entered by any character (the state after each `?`).
    any: Box<[u64]>,
    /// The literal characters, sorted, without repeats...
    chars: Box<[char]>,
    /// ...and for each, the states it enters (one row of words per char).
    masks: Box<[u64]>,
}

impl Glob {
    pub(super) fn new(toks: Vec<Tok>) -> Glob {
        let mut len = 0usize;
        let mut stars = Vec::new();
        let mut quests = Vec::new();
        let mut lits: Vec<(char, usize)> = Vec::new();
        for t in &toks {
            match t {
                Tok::Star => stars.push(len),
                Tok::Quest => {
                    len += 1;
                    quests.push(len);
                }
                Tok::Lit(s) => {
                    for c in s.chars() {
                        len += 1;
                        lits.push((c, len));
                    }
                }
            }
        }
        let words = len / 64 + 1;
        let bits = |states: &mut dyn Iterator<Item = usize>| {
            let mut w = vec![0u64; words];
            for s in states {
                w[s / 64] |= 1 << (s % 64);
            }
            w.into_boxed_slice()
        };
        let mut chars: Vec<char> = lits.iter().map(|(c, _)| *c).collect();
        chars.sort_unstable();
        chars.dedup();
        let mut masks = vec![0u64; chars.len() * words];
        for (c, s) in &lits {
            if let Ok(row) = chars.binary_search(c) {
                masks[row * words + s / 64] |= 1 << (s % 64);
            }
        }
        Glob {
            loops: bits(&mut stars.into_iter()),
            any: bits(&mut quests.into_iter()),
            toks,
            len,
            chars: chars.into_boxed_slice(),
            masks: masks.into_boxed_slice(),
        }
    }

    /// Whether `comp` matches; one step per character (per word of states).
    pub(super) fn matches(&self, comp: &str, steps: &mut u64) -> bool {
        // The shapes most files are made of, read directly.
        match self.toks.as_slice() {
            [Tok::Star] => return true,
            [Tok::Star, Tok::Lit(s)] => {
                *steps += 1;
                return comp.ends_with(s.as_str());
            }
            [Tok::Lit(s), Tok::Star] => {
                *steps += 1;
                return comp.starts_with(s.as_str());
            }
            [Tok::Lit(a), Tok::Star, Tok::Lit(b)] => {
                *steps += 1;
                return comp.len() >= a.len() + b.len()
                    && comp.starts_with(a.as_str())
                    && comp.ends_with(b.as_str());
            }
            _ => {}
        }
        if self.loops.len() == 1 {
            self.run_small(comp, steps)
        } else {
            self.run_big(comp, steps)
        }
    }

    fn row(&self, c: char) -> Option<usize> {
        self.chars.binary_search(&c).ok()
    }

    fn run_small(&self, comp: &str, steps: &mut u64) -> bool {
        let (loops, any) = (self.loops[0], self.any[0]);
        let mut live = 1u64;
        for c in comp.chars() {
            *steps += 1;
            let enter = any | self.row(c).map_or(0, |r| self.masks[r]);
            live = ((live << 1) & enter) | (live & loops);
            if live == 0 {
                return false;
            }
        }
        live >> self.len & 1 == 1
    }

    fn run_big(&self, comp: &str, steps: &mut u64) -> bool {
        let words = self.loops.len();
        let mut live = vec![0u64; words];
        live[0] = 1;
        let mut next = vec![0u64; words];
        for c in comp.chars() {
            *steps += words as u64;
            let row = self.row(c).map(|r| &self.masks[r * words..(r + 1) * words]);
            let mut carry = 0u64;
            let mut alive = 0u64;
            for (j, n) in next.iter_mut().enumerate() {
                let shifted = (live[j] << 1) | carry;
                carry = live[j] >> 63;
                let enter = self.any[j] | row.map_or(0, |r| r[j]);
                *n = (shifted & enter) | (live[j] & self.loops[j]);
                alive |= *n;
            }
            std::mem::swap(&mut live, &mut next);
            if alive == 0 {
                return false;
            }
        }
        live[self.len / 64] >> (self.len % 64) & 1 == 1
    }
}
