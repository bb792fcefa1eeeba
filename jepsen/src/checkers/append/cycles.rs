//! Cycles in the dependency graph, classified as Adya does:
//! - G0: only write-write edges;
//! - G1c: write-write and write-read edges, at least one write-read;
//! - G-single: exactly one read-write (anti-dependency) edge;
//! - G2: two or more read-write edges.
//!
//! Each kind is searched in the strongly connected components of the sub-graph of the edges it
//! may use; a cycle is one such edge plus the shortest path back (breadth-first). At most one
//! cycle of each kind is reported per component.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use super::infer::{Edge, Graph};
use super::Dep;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CycleKind {
    G0,
    G1c,
    GSingle,
    G2,
}

/// A cycle as (from node, edge) steps; each edge leads to the next step's node.
pub(crate) type Cycle<'g> = Vec<(usize, &'g Edge)>;

pub(crate) fn find(graph: &Graph) -> Vec<(CycleKind, Cycle<'_>)> {
    let mut found = Vec::new();
    found.extend(closing_cycles(graph, CycleKind::G0, &|d| d == Dep::Ww, Dep::Ww));
    found.extend(closing_cycles(graph, CycleKind::G1c, &|d| d != Dep::Rw, Dep::Wr));
    found.extend(anti_dependency_cycles(graph));
    found
}

/// Cycles over `allow`ed edges that go through an edge of kind `through`.
fn closing_cycles<'g>(
    graph: &'g Graph,
    kind: CycleKind,
    allow: &dyn Fn(Dep) -> bool,
    through: Dep,
) -> Vec<(CycleKind, Cycle<'g>)> {
    let comp = components(graph, allow);
    let mut done = HashSet::new();
    let mut found = Vec::new();
    for (a, edge) in edges(graph).filter(|(a, e)| e.dep == through && comp[*a] == comp[e.to]) {
        if done.insert(comp[a]) {
            let parents = bfs(graph, edge.to, allow, &comp);
            found.push((kind, close(a, edge, &parents)));
        }
    }
    found
}

/// G-single and G2: for each anti-dependency a -rw-> b inside a component, a path back from b
/// to a without anti-dependencies makes a G-single; if there is none, every way back has one
/// more anti-dependency: a G2.
fn anti_dependency_cycles(graph: &Graph) -> Vec<(CycleKind, Cycle<'_>)> {
    let all = |_: Dep| true;
    let no_rw = |d: Dep| d != Dep::Rw;
    let comp = components(graph, &all);
    let mut by_target: BTreeMap<usize, Vec<(usize, &Edge)>> = BTreeMap::new();
    for (a, edge) in edges(graph).filter(|(a, e)| e.dep == Dep::Rw && comp[*a] == comp[e.to]) {
        by_target.entry(edge.to).or_default().push((a, edge));
    }
    let (mut single_done, mut g2_done) = (HashSet::new(), HashSet::new());
    let mut found = Vec::new();
    for (b, into_b) in by_target {
        let c = comp[b];
        if single_done.contains(&c) && g2_done.contains(&c) {
            continue;
        }
        let parents = bfs(graph, b, &no_rw, &comp);
        for (a, edge) in into_b {
            if parents.contains_key(&a) {
                if single_done.insert(c) {
                    found.push((CycleKind::GSingle, close(a, edge, &parents)));
                }
            } else if g2_done.insert(c) {
                found.push((CycleKind::G2, close(a, edge, &bfs(graph, b, &all, &comp))));
            }
        }
    }
    found
}

fn edges(graph: &Graph) -> impl Iterator<Item = (usize, &Edge)> {
    graph
        .edges
        .iter()
        .enumerate()
        .flat_map(|(from, out)| out.iter().map(move |e| (from, e)))
}

/// Parents from a breadth-first search from `start` over allowed edges within its component:
/// node -> (previous node, edge). `start` maps to itself with no edge.
type Parents<'g> = HashMap<usize, (usize, Option<&'g Edge>)>;

fn bfs<'g>(graph: &'g Graph, start: usize, allow: &dyn Fn(Dep) -> bool, comp: &[usize]) -> Parents<'g> {
    let mut parents: Parents<'g> = HashMap::from([(start, (start, None))]);
    let mut queue = VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for edge in graph.edges[v]
            .iter()
            .filter(|e| allow(e.dep) && comp[e.to] == comp[start])
        {
            if let std::collections::hash_map::Entry::Vacant(slot) = parents.entry(edge.to) {
                slot.insert((v, Some(edge)));
                queue.push_back(edge.to);
            }
        }
    }
    parents
}

/// The cycle: `a -edge-> b`, then the BFS path from b back to `a`.
fn close<'g>(a: usize, edge: &'g Edge, parents: &Parents<'g>) -> Cycle<'g> {
    let mut back = Vec::new();
    let mut node = a;
    while let Some(&(prev, Some(e))) = parents.get(&node) {
        back.push((prev, e));
        node = prev;
    }
    back.reverse();
    let mut cycle = vec![(a, edge)];
    cycle.extend(back);
    cycle
}

/// Tarjan's strongly connected components over allowed edges (iterative): a component id per
/// node.
fn components(graph: &Graph, allow: &dyn Fn(Dep) -> bool) -> Vec<usize> {
    const UNSEEN: usize = usize::MAX;
    let n = graph.edges.len();
    let (mut index, mut low, mut comp) = (vec![UNSEEN; n], vec![0; n], vec![UNSEEN; n]);
    let mut on_stack = vec![false; n];
    let (mut stack, mut next_index, mut next_comp) = (Vec::new(), 0, 0);
    for root in 0..n {
        if index[root] != UNSEEN {
            continue;
        }
        let mut work = vec![(root, 0usize)];
        (index[root], low[root], next_index) = (next_index, next_index, next_index + 1);
        stack.push(root);
        on_stack[root] = true;
        while let Some(&(v, pos)) = work.last() {
            if let Some(edge) = graph.edges[v].get(pos) {
                work.last_mut().expect("non-empty").1 += 1;
                let w = edge.to;
                if !allow(edge.dep) {
                    continue;
                }
                if index[w] == UNSEEN {
                    (index[w], low[w], next_index) = (next_index, next_index, next_index + 1);
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                low[parent] = low[parent].min(low[v]);
            }
            if low[v] == index[v] {
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    comp[w] = next_comp;
                    if w == v {
                        break;
                    }
                }
                next_comp += 1;
            }
        }
    }
    comp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 0 -ww-> 1 -wr-> 2 -rw-> 0, 3 <-ww-> 4, 2 -rw-> 5 -rw-> 2, and 4 -wr-> 0 (no cycle).
    fn graph() -> Graph {
        let mut g = Graph::new(6);
        for (from, to, dep) in [
            (0, 1, Dep::Ww),
            (1, 2, Dep::Wr),
            (2, 0, Dep::Rw),
            (3, 4, Dep::Ww),
            (4, 3, Dep::Ww),
            (2, 5, Dep::Rw),
            (5, 2, Dep::Rw),
            (4, 0, Dep::Wr),
        ] {
            g.add(from, to, dep, "k", 0);
        }
        g
    }

    #[test]
    fn components_follow_only_allowed_edges() {
        let g = graph();
        let all = components(&g, &|_| true);
        assert!(all[0] == all[1] && all[1] == all[2] && all[2] == all[5]);
        assert!(all[3] == all[4] && all[3] != all[0]);
        let no_rw = components(&g, &|d| d != Dep::Rw);
        assert!(no_rw[0] != no_rw[1] && no_rw[1] != no_rw[2] && no_rw[3] == no_rw[4]);
    }

    #[test]
    fn finds_one_cycle_of_each_kind_per_component() {
        let g = graph();
        type Steps = Vec<(usize, usize, Dep)>;
        let found: Vec<(CycleKind, Steps)> = find(&g)
            .into_iter()
            .map(|(kind, cycle)| (kind, cycle.iter().map(|(from, e)| (*from, e.to, e.dep)).collect()))
            .collect();
        assert_eq!(
            found,
            vec![
                (CycleKind::G0, vec![(3, 4, Dep::Ww), (4, 3, Dep::Ww)]),
                (
                    CycleKind::GSingle,
                    vec![(2, 0, Dep::Rw), (0, 1, Dep::Ww), (1, 2, Dep::Wr)]
                ),
                (CycleKind::G2, vec![(5, 2, Dep::Rw), (2, 5, Dep::Rw)]),
            ]
        );
    }
}
