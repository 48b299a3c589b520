//! The parts of a JSON body a webhook's conditions read: every JSON pointer of its `filter`,
//! its `when`s and its mapped targets, as a tree of reference tokens. The strict JSON check
//! reads the body once and keeps only these parts (see `verify::json::read`), so conditions
//! cost no second parse.

/// A tree of the reference tokens the pointers name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pointers {
    /// A pointer ends here: the whole value is read.
    whole: bool,
    /// The members (or array elements, by index token) read below this value.
    below: Vec<(String, Pointers)>,
}

impl Pointers {
    /// Adds the pointer of these unescaped reference tokens.
    pub fn add(&mut self, tokens: &[String]) {
        if self.whole {
            return;
        }
        let Some((first, rest)) = tokens.split_first() else {
            self.whole = true;
            self.below.clear();
            return;
        };
        let at = match self.below.iter().position(|(name, _)| name == first) {
            Some(at) => at,
            None => {
                self.below.push((first.clone(), Pointers::default()));
                self.below.len() - 1
            }
        };
        self.below[at].1.add(rest);
    }

    /// Whether no pointer was added.
    pub fn is_empty(&self) -> bool {
        !self.whole && self.below.is_empty()
    }

    /// Whether the whole value is read.
    pub fn whole(&self) -> bool {
        self.whole
    }

    /// What is read below the member `name`, if anything.
    pub fn member(&self, name: &str) -> Option<&Pointers> {
        self.below.iter().find(|(n, _)| n == name).map(|(_, p)| p)
    }

    /// What is read below the array element at `index`, if anything.
    pub fn element(&self, index: usize) -> Option<&Pointers> {
        self.below
            .iter()
            .find(|(token, _)| super::borrowed::array_index(token) == Some(index))
            .map(|(_, p)| p)
    }

    /// The highest array index read below this value.
    pub fn last_element(&self) -> Option<usize> {
        self.below
            .iter()
            .filter_map(|(token, _)| super::borrowed::array_index(token))
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(pointer: &str) -> Vec<String> {
        pointer.split('/').skip(1).map(str::to_owned).collect()
    }

    #[test]
    fn pointers_merge_into_one_tree() {
        let mut p = Pointers::default();
        assert!(p.is_empty());
        for pointer in ["/a/b", "/a/c", "/list/2", "/list/0/x", "/a/b/deeper"] {
            p.add(&tokens(pointer));
        }
        let a = p.member("a").unwrap();
        assert!(!a.whole() && a.member("b").unwrap().whole());
        assert!(a.member("b").unwrap().member("deeper").is_none());
        let list = p.member("list").unwrap();
        assert_eq!(list.last_element(), Some(2));
        assert!(list.element(2).unwrap().whole());
        assert!(list.element(0).unwrap().member("x").is_some());
        assert!(list.element(1).is_none());
        // The whole body covers every pointer.
        p.add(&tokens(""));
        assert!(p.whole() && p.member("a").is_none());
    }
}
