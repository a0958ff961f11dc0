//! The machine of the endpoint's own workers as placement sees it: what it offers tasks and
//! what the workers holding tasks have reserved of it.
//!
//! A worker slot that holds tasks holds one [`Grant`]: one core for plain tasks (however many
//! it has prefetched, it runs one at a time), or what its one task asked for, which may
//! include whole nodes of the block for a multi-node task (its worker runs the launcher;
//! the ranks run on the nodes granted). What is free is
//! the node's capacity minus the grants of all slots, computed when needed: there are few
//! local slots, and nothing has to be released by hand when a worker dies or is replaced.

use crate::{Capacity, Resources, ACCELERATOR_VARIABLES, HOSTS_VARIABLE, NODES_VARIABLE};

/// What the node offers.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    cores: u64,
    memory: u64,
    gpus: Vec<String>,
    /// The block's nodes by host name; this machine alone unless told otherwise.
    hosts: Vec<String>,
}

/// What one worker slot has reserved of the node while it holds tasks.
#[derive(Debug, Clone)]
pub(super) struct Grant {
    cores: u64,
    memory: u64,
    /// Indexes into the node's GPUs.
    gpus: Vec<usize>,
    /// Indexes into the block's hosts, each held whole.
    hosts: Vec<usize>,
    /// Reserved for a task that asked for resources: the worker gets nothing else until
    /// that task ends.
    pub(super) exclusive: bool,
}

impl Node {
    /// The node of `workers` workers with `capacity`, and `accelerators` advertised by the
    /// runtime when the capacity names no GPUs.
    pub(super) fn new(capacity: &Capacity, workers: usize, accelerators: Vec<String>) -> Node {
        Node {
            cores: capacity.cores.map_or(workers as u64, u64::from).max(1),
            memory: capacity.memory.unwrap_or(u64::MAX),
            gpus: capacity.gpus.clone().unwrap_or(accelerators),
            hosts: capacity
                .nodes
                .clone()
                .filter(|hosts| !hosts.is_empty())
                .unwrap_or_else(|| vec![crate::hostname()]),
        }
    }

    /// Why a task asking for `want` could never run here, even on an idle node.
    pub(super) fn never_fits(&self, want: &Resources) -> Option<String> {
        let mut missing = Vec::new();
        if u64::from(want.cores) > self.cores {
            missing.push(format!(
                "{} cores (the node has {})",
                want.cores, self.cores
            ));
        }
        if want.gpus as usize > self.gpus.len() {
            missing.push(format!(
                "{} GPUs (the node has {})",
                want.gpus,
                self.gpus.len()
            ));
        }
        if want.nodes as usize > self.hosts.len() {
            missing.push(format!(
                "{} nodes (the block has {})",
                want.nodes,
                self.hosts.len()
            ));
        }
        if want.memory > self.memory {
            missing.push(format!(
                "{} bytes of memory (the node has {})",
                want.memory, self.memory
            ));
        }
        if missing.is_empty() {
            None
        } else {
            Some(format!(
                "the task asks for {}; no worker of this endpoint can ever run it",
                missing.join(", ")
            ))
        }
    }

    /// Reserves what a task asking for `want` (`None`: a plain task) needs, out of what the
    /// `held` grants leave free; `None` if it does not fit now.
    pub(super) fn grant<'a>(
        &self,
        want: Option<&Resources>,
        held: impl Iterator<Item = &'a Grant>,
    ) -> Option<Grant> {
        let plain = Resources::default();
        let wanted = want.unwrap_or(&plain);
        let (mut cores, mut memory) = (0u64, 0u64);
        let mut busy = vec![false; self.gpus.len()];
        let mut hosts_busy = vec![false; self.hosts.len()];
        for grant in held {
            cores = cores.saturating_add(grant.cores);
            memory = memory.saturating_add(grant.memory);
            for (list, flags) in [(&grant.gpus, &mut busy), (&grant.hosts, &mut hosts_busy)] {
                for &index in list {
                    if let Some(flag) = flags.get_mut(index) {
                        *flag = true;
                    }
                }
            }
        }
        if cores.saturating_add(u64::from(wanted.cores)) > self.cores
            || memory.saturating_add(wanted.memory) > self.memory
        {
            return None;
        }
        let gpus: Vec<usize> = (0..self.gpus.len())
            .filter(|&gpu| !busy[gpu])
            .take(wanted.gpus as usize)
            .collect();
        if gpus.len() < wanted.gpus as usize {
            return None;
        }
        let hosts: Vec<usize> = (0..self.hosts.len())
            .filter(|&host| !hosts_busy[host])
            .take(wanted.nodes as usize)
            .collect();
        if hosts.len() < wanted.nodes as usize {
            return None;
        }
        Some(Grant {
            cores: u64::from(wanted.cores),
            memory: wanted.memory,
            gpus,
            hosts,
            exclusive: want.is_some(),
        })
    }

    /// The environment a task with `grant` runs in: its GPUs, in every vendor's variable,
    /// and its nodes ([`NODES_VARIABLE`], [`HOSTS_VARIABLE`]). Empty for a plain task, which
    /// keeps what its worker was started with.
    pub(super) fn env(&self, grant: &Grant) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if !grant.gpus.is_empty() {
            let devices = names(&self.gpus, &grant.gpus);
            env.extend(
                ACCELERATOR_VARIABLES
                    .iter()
                    .map(|name| ((*name).to_owned(), devices.clone())),
            );
        }
        if !grant.hosts.is_empty() {
            env.push((NODES_VARIABLE.to_owned(), grant.hosts.len().to_string()));
            env.push((HOSTS_VARIABLE.to_owned(), names(&self.hosts, &grant.hosts)));
        }
        env
    }
}

/// The names at `indexes` of `all`, comma-separated.
fn names(all: &[String], indexes: &[usize]) -> String {
    let names: Vec<&str> = indexes
        .iter()
        .filter_map(|&index| all.get(index).map(String::as_str))
        .collect();
    names.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(cores: u32, gpus: &[&str]) -> Node {
        let capacity = Capacity {
            cores: Some(cores),
            memory: Some(1000),
            gpus: Some(gpus.iter().map(|g| (*g).to_owned()).collect()),
            nodes: Some(vec!["n1".into(), "n2".into()]),
        };
        Node::new(&capacity, 2, Vec::new())
    }

    #[test]
    fn grants_never_add_up_past_the_node() {
        let node = node(4, &["a", "b"]);
        let two = Resources {
            cores: 2,
            gpus: 1,
            memory: 600,
            nodes: 0,
        };
        let first = node
            .grant(Some(&two), [].iter())
            .expect("fits an idle node");
        assert!(first.exclusive);
        // Memory: 600 + 600 > 1000.
        assert!(node.grant(Some(&two), [&first].into_iter()).is_none());
        let small = Resources { memory: 100, ..two };
        let second = node
            .grant(Some(&small), [&first].into_iter())
            .expect("cores, a GPU and memory are left");
        assert_ne!(first.gpus, second.gpus, "each GPU to one task");
        // All 4 cores are held now: not even a plain task fits.
        assert!(node.grant(None, [&first, &second].into_iter()).is_none());
        assert_eq!(
            node.env(&second),
            ACCELERATOR_VARIABLES
                .iter()
                .map(|v| ((*v).to_owned(), "b".to_owned()))
                .collect::<Vec<_>>()
        );
        assert!(node
            .env(&node.grant(None, [].iter()).expect("plain"))
            .is_empty());
    }

    #[test]
    fn a_multi_node_task_holds_whole_nodes_and_is_told_their_names() {
        let node = node(8, &[]);
        let two = Resources {
            nodes: 2,
            ..Resources::default()
        };
        let one = Resources {
            nodes: 1,
            ..Resources::default()
        };
        let first = node.grant(Some(&one), [].iter()).expect("an idle block");
        assert!(
            node.grant(Some(&two), [&first].into_iter()).is_none(),
            "one of two nodes is held"
        );
        let second = node
            .grant(Some(&one), [&first].into_iter())
            .expect("the other node");
        assert!(node
            .grant(Some(&one), [&first, &second].into_iter())
            .is_none());
        assert!(
            node.grant(None, [&first, &second].into_iter()).is_some(),
            "plain tasks need no node of their own"
        );
        let both = node.grant(Some(&two), [].iter()).expect("both nodes");
        assert_eq!(
            node.env(&both),
            [
                (NODES_VARIABLE.to_owned(), "2".to_owned()),
                (HOSTS_VARIABLE.to_owned(), "n1,n2".to_owned())
            ]
        );
        let reason = node
            .never_fits(&Resources {
                nodes: 3,
                ..Resources::default()
            })
            .expect("a block of two");
        assert!(reason.contains("3 nodes (the block has 2)"), "{reason}");
    }

    #[test]
    fn what_could_never_fit_is_named() {
        let node = node(2, &[]);
        let reason = node
            .never_fits(&Resources {
                cores: 3,
                gpus: 1,
                memory: 10,
                nodes: 0,
            })
            .expect("too big");
        assert!(
            reason.contains("3 cores") && reason.contains("1 GPUs"),
            "{reason}"
        );
        assert!(node.never_fits(&Resources::default()).is_none());
    }

    #[test]
    fn by_default_every_worker_has_a_core() {
        let node = Node::new(&Capacity::default(), 3, vec!["0".into()]);
        let mut held = Vec::new();
        for _ in 0..3 {
            let grant = node.grant(None, held.iter()).expect("a core per worker");
            held.push(grant);
        }
        assert!(node.grant(None, held.iter()).is_none());
        assert_eq!(node.gpus, ["0"]);
    }
}
