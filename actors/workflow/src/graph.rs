//! The step graph: who needs whom, what is upstream of a step, and an
//! order to run them in.

use std::collections::{BTreeMap, BTreeSet};

/// The `needs` edges of a checked workflow (no cycle, every target there).
#[derive(Debug, Clone, Default)]
pub struct Graph {
    needs: BTreeMap<String, Vec<String>>,
    /// Every step upstream of each step, transitively.
    upstream: BTreeMap<String, BTreeSet<String>>,
}

impl Graph {
    /// The graph of `steps` (id, needs), or the first cycle found, as the
    /// ids along it with the first repeated at the end.
    pub fn new(steps: &[(String, Vec<String>)]) -> Result<Graph, Vec<String>> {
        let needs: BTreeMap<String, Vec<String>> = steps.iter().cloned().collect();
        let mut upstream: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        // Depth-first, in the file's order, so the cycle reported is stable.
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            Visiting,
            Done,
        }
        let mut marks: BTreeMap<&str, Mark> = BTreeMap::new();
        fn visit<'a>(
            id: &'a str,
            needs: &'a BTreeMap<String, Vec<String>>,
            marks: &mut BTreeMap<&'a str, Mark>,
            upstream: &mut BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<&'a str>,
        ) -> Result<(), Vec<String>> {
            match marks.get(id) {
                Some(Mark::Done) => return Ok(()),
                Some(Mark::Visiting) => {
                    let start = path.iter().position(|p| *p == id).unwrap_or(0);
                    let mut cycle: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
                    cycle.push(id.to_string());
                    return Err(cycle);
                }
                None => {}
            }
            marks.insert(id, Mark::Visiting);
            path.push(id);
            let mut all = BTreeSet::new();
            for dep in needs.get(id).map(Vec::as_slice).unwrap_or(&[]) {
                // Targets that are not steps are reported by the parser.
                let Some((dep, _)) = needs.get_key_value(dep.as_str()) else { continue };
                visit(dep, needs, marks, upstream, path)?;
                all.insert(dep.clone());
                all.extend(upstream.get(dep.as_str()).cloned().unwrap_or_default());
            }
            path.pop();
            marks.insert(id, Mark::Done);
            upstream.insert(id.to_string(), all);
            Ok(())
        }
        for (id, _) in steps {
            visit(id, &needs, &mut marks, &mut upstream, &mut Vec::new())?;
        }
        Ok(Graph { needs, upstream })
    }

    pub fn needs(&self, id: &str) -> &[String] {
        self.needs.get(id).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether `other` runs before `id` on every path (it is needed, directly or not).
    pub fn is_upstream(&self, id: &str, other: &str) -> bool {
        self.upstream.get(id).is_some_and(|u| u.contains(other))
    }

    pub fn upstream(&self, id: &str) -> impl Iterator<Item = &String> {
        self.upstream.get(id).into_iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(edges: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        edges.iter().map(|(id, n)| (id.to_string(), n.iter().map(|s| s.to_string()).collect())).collect()
    }

    #[test]
    fn upstream_is_transitive() {
        let g = Graph::new(&steps(&[("a", &[]), ("b", &["a"]), ("c", &["b"]), ("d", &[])])).unwrap();
        assert!(g.is_upstream("c", "a"));
        assert!(g.is_upstream("c", "b"));
        assert!(!g.is_upstream("a", "c"));
        assert!(!g.is_upstream("c", "d"));
        assert!(!g.is_upstream("a", "a"));
    }

    #[test]
    fn a_cycle_is_named_along_its_path() {
        let cycle = Graph::new(&steps(&[("a", &["c"]), ("b", &["a"]), ("c", &["b"])])).unwrap_err();
        assert_eq!(cycle, vec!["a", "c", "b", "a"]);
        let own = Graph::new(&steps(&[("a", &["a"])])).unwrap_err();
        assert_eq!(own, vec!["a", "a"]);
    }
}
