//! A compact set of byte strings with dense ids: one arena, one offset per
//! string, and a hash index of ids. Gemma 3's 262,144 tokens fit in a few
//! MiB this way, without one allocation per token.

use std::hash::BuildHasher;

use hashbrown::{DefaultHashBuilder, HashTable};

#[derive(Default)]
pub struct StrTable {
    arena: Vec<u8>,
    /// `offsets[i]..offsets[i + 1]` is string `i`; `offsets[0] == 0`.
    offsets: Vec<u32>,
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

impl std::fmt::Debug for StrTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StrTable")
            .field("len", &self.len())
            .field("bytes", &self.arena.len())
            .finish()
    }
}

/// The arena outgrew u32 offsets (4 GiB of token text).
#[derive(Debug)]
pub struct ArenaFull;

impl StrTable {
    pub fn with_capacity(n: usize, bytes: usize) -> StrTable {
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0);
        StrTable {
            arena: Vec::with_capacity(bytes),
            offsets,
            index: HashTable::with_capacity(n),
            hasher: DefaultHashBuilder::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn get(&self, id: u32) -> &[u8] {
        let i = id as usize;
        &self.arena[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// Append `s` as a new string (even if present) and return its id. The
    /// index then maps `s` to the newest id, as llama.cpp's `token_to_id`
    /// map keeps the last of duplicate texts; the previous id is returned.
    pub fn push(&mut self, s: &[u8]) -> Result<(u32, Option<u32>), ArenaFull> {
        let id = self.len() as u32;
        let end = u32::try_from(self.arena.len() + s.len()).map_err(|_| ArenaFull)?;
        self.arena.extend_from_slice(s);
        self.offsets.push(end);
        let h = self.hasher.hash_one(s);
        let (arena, offsets) = (&self.arena, &self.offsets);
        let text = |i: u32| &arena[offsets[i as usize] as usize..offsets[i as usize + 1] as usize];
        let hasher = &self.hasher;
        let prev = match self.index.find_mut(h, |&i| text(i) == s) {
            Some(slot) => Some(std::mem::replace(slot, id)),
            None => {
                self.index
                    .insert_unique(h, id, |&i| hasher.hash_one(text(i)));
                None
            }
        };
        Ok((id, prev))
    }

    /// Id of `s`, if present (the newest, for duplicates).
    pub fn find(&self, s: &[u8]) -> Option<u32> {
        let h = self.hasher.hash_one(s);
        self.index.find(h, |&i| self.get(i) == s).copied()
    }

    /// Id of `s`, appending it when absent.
    pub fn intern(&mut self, s: &[u8]) -> Result<u32, ArenaFull> {
        match self.find(s) {
            Some(id) => Ok(id),
            None => self.push(s).map(|(id, _)| id),
        }
    }

    /// Heap bytes held (for reports and tests of leanness).
    pub fn heap_bytes(&self) -> usize {
        self.arena.capacity() + self.offsets.capacity() * 4 + self.index.capacity() * 5
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_find_intern() {
        let mut t = StrTable::with_capacity(4, 16);
        assert_eq!(t.push(b"ab").unwrap(), (0, None));
        assert_eq!(t.push(b"").unwrap(), (1, None));
        assert_eq!(t.push(b"abc").unwrap(), (2, None));
        assert_eq!(t.find(b"ab"), Some(0));
        assert_eq!(t.find(b""), Some(1));
        assert_eq!(t.find(b"a"), None);
        assert_eq!(t.get(2), b"abc");
        assert_eq!(t.intern(b"abc").unwrap(), 2);
        assert_eq!(t.intern(b"x").unwrap(), 3);
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn duplicates_map_to_the_newest() {
        let mut t = StrTable::with_capacity(2, 4);
        t.push(b"a").unwrap();
        assert_eq!(t.push(b"a").unwrap(), (1, Some(0)));
        assert_eq!(t.find(b"a"), Some(1));
        assert_eq!(t.get(0), b"a");
    }
}
