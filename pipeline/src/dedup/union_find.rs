//! Disjoint sets over dense document indices: 4 bytes per document, whatever the text size.

/// Union-find with path halving; the root of a set is its smallest index, so the partition it
/// builds does not depend on the order of the unions.
pub struct UnionFind {
    parent: Vec<u32>,
}

impl UnionFind {
    pub fn new(n: usize) -> UnionFind {
        UnionFind {
            parent: (0..n as u32).collect(),
        }
    }

    pub fn find(&mut self, x: u32) -> u32 {
        root(&mut self.parent, x)
    }

    pub fn union(&mut self, a: u32, b: u32) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            let (small, large) = (ra.min(rb), ra.max(rb));
            self.parent[large as usize] = small;
        }
    }
}

/// datatrove's union-find (`MinhashDedupCluster`): union by size, the larger set's root staying
/// root and the first argument's on a tie. Its roots, and so which copy scheme `datatrove` keeps,
/// depend on the order of the unions.
pub struct SizedUnionFind {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl SizedUnionFind {
    pub fn new(n: usize) -> SizedUnionFind {
        SizedUnionFind {
            parent: (0..n as u32).collect(),
            size: vec![1; n],
        }
    }

    pub fn find(&mut self, x: u32) -> u32 {
        root(&mut self.parent, x)
    }

    pub fn union(&mut self, a: u32, b: u32) {
        let (mut ra, mut rb) = (self.find(a), self.find(b));
        if ra != rb {
            if self.size[ra as usize] < self.size[rb as usize] {
                std::mem::swap(&mut ra, &mut rb);
            }
            self.parent[rb as usize] = ra;
            self.size[ra as usize] += self.size[rb as usize];
        }
    }
}

/// Root of `x`'s set, halving the path on the way.
fn root(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        let grand = parent[parent[x as usize] as usize];
        parent[x as usize] = grand;
        x = grand;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::{SizedUnionFind, UnionFind};

    #[test]
    fn sized_union_keeps_the_larger_sets_root_and_the_first_on_ties() {
        let mut uf = SizedUnionFind::new(6);
        uf.union(4, 5); // tie: 4 stays root
        assert_eq!(uf.find(5), 4);
        uf.union(1, 4); // {1} joins the larger {4, 5}
        assert_eq!(uf.find(1), 4);
        uf.union(2, 3);
        uf.union(3, 0); // {0} joins {2, 3}: root 2
        assert_eq!(uf.find(0), 2);
        uf.union(0, 5); // {2, 3, 0} and {4, 5, 1} tie: the first argument's root stays
        assert_eq!(uf.find(4), 2);
        assert_eq!(uf.find(1), 2);
    }

    #[test]
    fn joins_transitively_with_smallest_root() {
        let mut uf = UnionFind::new(6);
        uf.union(4, 5);
        uf.union(3, 4);
        uf.union(1, 2);
        assert_eq!(uf.find(5), 3);
        assert_eq!(uf.find(2), 1);
        assert_ne!(uf.find(1), uf.find(3));
        uf.union(5, 2);
        assert_eq!(uf.find(3), 1);
        assert_eq!(uf.find(0), 0);
    }
}
