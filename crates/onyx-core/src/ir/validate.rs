//! Structural checks of a graph, reporting every problem found rather than
//! stopping at the first: names read but never produced, names produced
//! twice, and cycles.

use std::collections::{HashMap, HashSet};

use super::Graph;

/// Every structural problem in `g` and its subgraphs, as one line each.
/// `outer` holds the names visible from enclosing graphs.
pub fn validate(g: &Graph) -> Vec<String> {
    let mut problems = Vec::new();
    check(g, &HashSet::new(), "", &mut problems);
    problems
}

fn check(g: &Graph, outer: &HashSet<String>, scope: &str, problems: &mut Vec<String>) {
    let mut defined: HashSet<String> = outer.clone();
    let mut seen_here: HashSet<&str> = HashSet::new();
    for i in &g.inputs {
        if !seen_here.insert(&i.name) {
            problems.push(format!("{scope}graph input '{}' is declared twice", i.name));
        }
        defined.insert(i.name.clone());
    }
    for (name, _) in &g.initializers {
        defined.insert(name.clone());
    }
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (k, n) in g.nodes.iter().enumerate() {
        for o in n.outputs.iter().filter(|o| !o.is_empty()) {
            if producer.insert(o, k).is_some() || seen_here.contains(o.as_str()) {
                problems.push(format!(
                    "{scope}{}: output '{o}' is produced twice",
                    n.describe()
                ));
            }
            defined.insert(o.clone());
        }
    }
    for n in &g.nodes {
        for i in n.inputs.iter().filter(|i| !i.is_empty()) {
            if !defined.contains(i) {
                problems.push(format!(
                    "{scope}{} reads '{i}', which nothing produces",
                    n.describe()
                ));
            }
        }
        for sub in n.subgraphs() {
            check(
                sub,
                &defined,
                &format!("{scope}{} > ", n.describe()),
                problems,
            );
        }
    }
    for o in &g.outputs {
        if !defined.contains(&o.name) {
            problems.push(format!(
                "{scope}graph output '{}' is never produced",
                o.name
            ));
        }
    }
    if let Some(node) = find_cycle(g, &producer) {
        problems.push(format!("{scope}the graph has a cycle through {node}"));
    }
}

/// A node on a cycle, if any (depth-first search over producer edges).
fn find_cycle(g: &Graph, producer: &HashMap<&str, usize>) -> Option<String> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut mark = vec![Mark::New; g.nodes.len()];
    for start in 0..g.nodes.len() {
        if mark[start] != Mark::New {
            continue;
        }
        // iterative DFS: (node, next input index)
        let mut stack = vec![(start, 0usize)];
        mark[start] = Mark::Open;
        while let Some(&mut (k, ref mut next)) = stack.last_mut() {
            let inputs = &g.nodes[k].inputs;
            if *next < inputs.len() {
                let dep = producer.get(inputs[*next].as_str()).copied();
                *next += 1;
                if let Some(d) = dep {
                    match mark[d] {
                        Mark::Open => return Some(g.nodes[d].describe()),
                        Mark::New => {
                            mark[d] = Mark::Open;
                            stack.push((d, 0));
                        }
                        Mark::Done => {}
                    }
                }
            } else {
                mark[k] = Mark::Done;
                stack.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Node, ValueInfo};

    fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> Node {
        Node {
            name: String::new(),
            op_type: op.into(),
            domain: String::new(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            attrs: Default::default(),
        }
    }

    fn info(name: &str) -> ValueInfo {
        ValueInfo {
            name: name.into(),
            ty: None,
        }
    }

    #[test]
    fn finds_dangling_duplicate_and_cycle() {
        let g = Graph {
            inputs: vec![info("x")],
            outputs: vec![info("z"), info("missing")],
            nodes: vec![
                node("Relu", &["x"], &["y"]),
                node("Relu", &["nobody"], &["y"]),
                node("Add", &["z", "x"], &["w"]),
                node("Add", &["w", "x"], &["z"]),
            ],
            ..Default::default()
        };
        let p = validate(&g);
        assert!(p.iter().any(|m| m.contains("reads 'nobody'")), "{p:?}");
        assert!(
            p.iter().any(|m| m.contains("'y' is produced twice")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|m| m.contains("'missing' is never produced")),
            "{p:?}"
        );
        assert!(p.iter().any(|m| m.contains("cycle")), "{p:?}");
        let ok = Graph {
            inputs: vec![info("x")],
            outputs: vec![info("y")],
            nodes: vec![node("Relu", &["x"], &["y"])],
            ..Default::default()
        };
        assert!(validate(&ok).is_empty());
    }
}
