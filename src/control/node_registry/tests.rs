use super::*;
use crate::control::node_placement::{Mode, Reason};

const TIMEOUT: u64 = 1000;

fn pool(id: &str, model: &str, busy: u64) -> PoolRecord {
    PoolRecord {
        pool_id: id.into(),
        model_id: model.into(),
        model_digest: format!("{model}-digest"),
        state: "ready".into(),
        ctx: 2048,
        slots_total: 4,
        slots_busy: busy,
        queue_depth: 0,
        device: "cpu".into(),
        vram_total_bytes: 0,
        vram_free_bytes: 0,
        decode_step_ms: 0.0,
        prefill_tps: 0.0,
    }
}

fn report(pools: Vec<PoolRecord>) -> NodeReport {
    NodeReport {
        gpus: vec![GpuRecord {
            device: "cpu".into(),
            name: "cpu".into(),
            vram_total_bytes: 0,
            vram_free_bytes: 0,
        }],
        models: pools
            .iter()
            .map(|p| StagedModelRecord {
                model_id: p.model_id.clone(),
                sha256: p.model_digest.clone(),
                bytes: 1,
                state: "Active".into(),
            })
            .collect(),
        pools,
        draining: false,
    }
}

fn reg(node: &str, instance: &str, model: &str) -> Registration {
    Registration {
        node_id: node.into(),
        instance_id: instance.into(),
        address: format!("http://{node}:1"),
        version: "0.1.0".into(),
        report: report(vec![pool("default", model, 0)]),
    }
}

fn hb(instance: &str, seq: u64, model: &str) -> Heartbeat {
    Heartbeat {
        instance_id: instance.into(),
        seq,
        report: report(vec![pool("default", model, 0)]),
    }
}

struct Fixture {
    clock: ManualClock,
    reg: NodeRegistry,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            clock: ManualClock::default(),
            reg: NodeRegistry::new(TIMEOUT),
        }
    }
    fn now(&self) -> Now {
        self.clock.now()
    }
    fn state(&self, id: &str) -> NodeState {
        self.reg.get(id).unwrap().state
    }
    fn sweep(&mut self) -> Vec<Transition> {
        let now = self.now();
        self.reg.sweep(now)
    }
    fn hb(&mut self, id: &str, h: Heartbeat) -> Result<HeartbeatOutcome, RegistryError> {
        let now = self.now();
        self.reg.heartbeat(id, h, now)
    }
    fn register(&mut self, r: Registration) -> RegisterOutcome {
        let now = self.now();
        self.reg.register(r, now)
    }
    fn place(&self, model: &str) -> Result<NodeDecision, NodePlacementError> {
        self.reg.place(
            &NodePlacementRequest {
                model_id: model,
                ctx_needed: 10,
                ..Default::default()
            },
            self.now(),
        )
    }
}

#[test]
fn registration_makes_a_node_online_and_placeable() {
    let mut f = Fixture::new();
    assert_eq!(f.register(reg("a", "i1", "m")), RegisterOutcome::New);
    assert_eq!(f.state("a"), NodeState::Online);
    assert_eq!(f.reg.counts().get(NodeState::Online), 1);
    assert_eq!(f.place("m").unwrap().node_id, "a");
    assert_eq!(
        f.place("other"),
        Err(NodePlacementError::NoHolder("other".into()))
    );
}

#[test]
fn silence_past_the_timeout_is_offline_and_a_heartbeat_brings_it_back() {
    let mut f = Fixture::new();
    f.register(reg("a", "i1", "m"));
    f.clock.advance(TIMEOUT);
    assert!(
        f.sweep().is_empty(),
        "exactly the timeout is not yet offline"
    );
    assert!(f.place("m").is_ok());
    f.clock.advance(1);
    // Placement refuses the node at once, before any sweep.
    assert_eq!(
        f.place("m"),
        Err(NodePlacementError::NoneAvailable("m".into()))
    );
    let t = f.sweep();
    assert_eq!(
        t,
        vec![Transition {
            node_id: "a".into(),
            from: NodeState::Online,
            to: NodeState::Offline
        }]
    );
    assert_eq!(f.state("a"), NodeState::Offline);
    assert!(f.sweep().is_empty(), "no repeated transition");
    assert_eq!(
        f.hb("a", hb("i1", 1, "m")),
        Ok(HeartbeatOutcome::Accepted {
            from: NodeState::Offline,
            to: NodeState::Online
        })
    );
    assert!(f.sweep().is_empty(), "no flap right after coming back");
    assert_eq!(f.state("a"), NodeState::Online);
    assert_eq!(f.reg.counts().get(NodeState::Offline), 0);
    assert!(f.place("m").is_ok());
}

#[test]
fn regular_heartbeats_keep_a_node_online() {
    let mut f = Fixture::new();
    f.register(reg("a", "i1", "m"));
    for seq in 1..50 {
        f.clock.advance(TIMEOUT / 3);
        f.hb("a", hb("i1", seq, "m")).unwrap();
        assert!(f.sweep().is_empty());
        assert_eq!(f.state("a"), NodeState::Online);
    }
}

#[test]
fn reregistration_after_offline_is_clean() {
    let mut f = Fixture::new();
    f.register(reg("a", "i1", "m"));
    f.clock.advance(TIMEOUT + 1);
    f.sweep();
    assert_eq!(
        f.register(reg("a", "i1", "m")),
        RegisterOutcome::Returned {
            from: NodeState::Offline
        }
    );
    assert_eq!(f.state("a"), NodeState::Online);
    // Its sequence restarts with the registration.
    assert!(matches!(
        f.hb("a", hb("i1", 1, "m")),
        Ok(HeartbeatOutcome::Accepted { .. })
    ));
    assert_eq!(f.reg.len(), 1);
    assert_eq!(f.reg.counts().get(NodeState::Online), 1);
}

#[test]
fn a_restarted_worker_replaces_its_old_instance() {
    let mut f = Fixture::new();
    f.register(reg("a", "i1", "m"));
    assert_eq!(
        f.register(reg("a", "i2", "m")),
        RegisterOutcome::Restarted {
            from: NodeState::Online
        }
    );
    assert_eq!(
        f.hb("a", hb("i1", 9, "m")),
        Err(RegistryError::InstanceMismatch {
            node_id: "a".into()
        })
    );
    assert!(f.hb("a", hb("i2", 1, "m")).is_ok());
    // A goodbye from the old instance does not remove the new one.
    assert!(f.reg.deregister("a", Some("i1")).is_err());
    assert!(f.reg.get("a").is_some());
}

#[test]
fn delayed_or_repeated_heartbeats_are_ignored() {
    let mut f = Fixture::new();
    f.register(reg("a", "i1", "m"));
    let mut draining = hb("i1", 5, "m");
    draining.report.draining = true;
    f.hb("a", draining).unwrap();
    assert_eq!(f.state("a"), NodeState::Draining);
    // An older heartbeat that says "not draining" arrives late.
    assert_eq!(f.hb("a", hb("i1", 4, "m")), Ok(HeartbeatOutcome::Duplicate));
    assert_eq!(f.hb("a", hb("i1", 5, "m")), Ok(HeartbeatOutcome::Duplicate));
    assert_eq!(f.state("a"), NodeState::Draining);
}

#[test]
fn draining_nodes_take_no_work_and_come_back() {
    let mut f = Fixture::new();
    f.register(reg("a", "i1", "m"));
    let mut d = hb("i1", 1, "m");
    d.report.draining = true;
    assert_eq!(
        f.hb("a", d),
        Ok(HeartbeatOutcome::Accepted {
            from: NodeState::Online,
            to: NodeState::Draining
        })
    );
    assert_eq!(
        f.place("m"),
        Err(NodePlacementError::NoneAvailable("m".into()))
    );
    // A draining node still times out.
    f.clock.advance(TIMEOUT + 1);
    assert_eq!(f.sweep()[0].from, NodeState::Draining);
    f.hb("a", hb("i1", 2, "m")).unwrap();
    assert_eq!(f.state("a"), NodeState::Online);
    // Registering as draining starts draining.
    let mut r = reg("b", "j", "m");
    r.report.draining = true;
    f.register(r);
    assert_eq!(f.state("b"), NodeState::Draining);
}

#[test]
fn unknown_nodes_must_register() {
    let mut f = Fixture::new();
    assert_eq!(
        f.hb("ghost", hb("i", 1, "m")),
        Err(RegistryError::UnknownNode("ghost".into()))
    );
    assert!(f.reg.deregister("ghost", None).is_err());
}

#[test]
fn restore_marks_nodes_stale_until_they_speak() {
    let mut f = Fixture::new();
    f.register(reg("a", "i1", "m"));
    f.register(reg("b", "i1", "m"));
    f.register(reg("c", "i1", "m"));
    f.clock.advance(TIMEOUT + 1);
    f.hb("a", hb("i1", 1, "m")).unwrap();
    f.hb("b", hb("i1", 1, "m")).unwrap();
    f.sweep(); // c is offline
    let records: Vec<NodeRecord> = f.reg.nodes().iter().map(|e| e.record.clone()).collect();

    // A new control plane process.
    let mut g = Fixture::new();
    g.reg.restore(records, g.now());
    assert_eq!(g.reg.len(), 3);
    assert_eq!(g.state("a"), NodeState::Stale);
    assert_eq!(g.state("b"), NodeState::Stale);
    assert_eq!(g.state("c"), NodeState::Offline);
    assert!(g.reg.take_changes().is_empty(), "restoring writes nothing");
    // Stale nodes are known but not placed on.
    assert_eq!(
        g.place("m"),
        Err(NodePlacementError::NoneAvailable("m".into()))
    );
    // The worker keeps its instance and sequence: its next heartbeat counts.
    assert_eq!(
        g.hb("a", hb("i1", 2, "m")),
        Ok(HeartbeatOutcome::Accepted {
            from: NodeState::Stale,
            to: NodeState::Online
        })
    );
    assert_eq!(g.place("m").unwrap().node_id, "a");
    // One that never speaks again goes offline after the timeout.
    g.clock.advance(TIMEOUT + 1);
    let t = g.sweep();
    assert!(t
        .iter()
        .any(|t| t.node_id == "b" && t.from == NodeState::Stale));
}

#[test]
fn deregistration_forgets_the_node() {
    let mut f = Fixture::new();
    f.register(reg("a", "i1", "m"));
    f.reg.take_changes();
    let rec = f.reg.deregister("a", Some("i1")).unwrap();
    assert_eq!(rec.node_id, "a");
    assert!(f.reg.get("a").is_none());
    assert_eq!(f.reg.counts(), StateCounts::default());
    let c = f.reg.take_changes();
    assert_eq!(c.remove, vec!["a".to_string()]);
    assert_eq!(f.place("m"), Err(NodePlacementError::NoHolder("m".into())));
    // It may register again.
    assert_eq!(f.register(reg("a", "i1", "m")), RegisterOutcome::New);
    let c = f.reg.take_changes();
    assert!(c.remove.is_empty());
    assert_eq!(c.put.len(), 1);
}

#[test]
fn only_significant_changes_are_persisted() {
    let mut f = Fixture::new();
    f.register(reg("a", "i1", "m"));
    let c = f.reg.take_changes();
    assert_eq!(c.put.len(), 1);
    assert_eq!(c.put[0].state, PersistedNodeState::Online);
    // Load only: nothing to write.
    let mut h = hb("i1", 1, "m");
    h.report.pools[0].slots_busy = 3;
    h.report.pools[0].queue_depth = 2;
    f.hb("a", h).unwrap();
    assert!(f.reg.take_changes().is_empty());
    assert_eq!(f.reg.get("a").unwrap().record.pools[0].slots_busy, 3);
    // A pool state change is.
    let mut h = hb("i1", 2, "m");
    h.report.pools[0].state = "draining".into();
    f.hb("a", h).unwrap();
    assert_eq!(f.reg.take_changes().put.len(), 1);
    // Going offline is.
    f.clock.advance(TIMEOUT + 1);
    f.sweep();
    let c = f.reg.take_changes();
    assert_eq!(c.put[0].state, PersistedNodeState::Offline);
}

#[test]
fn the_model_index_follows_pool_changes() {
    let mut f = Fixture::new();
    f.register(reg("a", "i1", "m1"));
    assert!(f.place("m1").is_ok());
    // The pool was reloaded with another model.
    f.hb("a", hb("i1", 1, "m2")).unwrap();
    assert_eq!(
        f.place("m1"),
        Err(NodePlacementError::NoHolder("m1".into()))
    );
    assert!(f.place("m2").is_ok());
    // Two pools, two models.
    let mut h = hb("i1", 2, "m2");
    h.report.pools.push(pool("second", "m1", 0));
    f.hb("a", h).unwrap();
    assert_eq!(f.place("m1").unwrap().pool_id, "second");
    assert_eq!(f.place("m2").unwrap().pool_id, "default");
}

#[test]
fn pool_state_and_load_drive_placement() {
    let mut f = Fixture::new();
    f.register(reg("a", "i", "m"));
    f.register(reg("b", "i", "m"));
    // Both idle: the smaller id.
    assert_eq!(f.place("m").unwrap().node_id, "a");
    // a reports load: b.
    let mut h = hb("i", 1, "m");
    h.report.pools[0].slots_busy = 2;
    f.hb("a", h).unwrap();
    assert_eq!(f.place("m").unwrap().node_id, "b");
    // Work this control plane started on b counts before b reports it.
    for _ in 0..3 {
        f.reg.reserve("b", "default");
    }
    assert_eq!(f.place("m").unwrap().node_id, "a");
    for _ in 0..3 {
        f.reg.release("b", "default");
    }
    assert_eq!(f.place("m").unwrap().node_id, "b");
    // A pool that is not Ready is not placed on.
    let mut h = hb("i", 1, "m");
    h.report.pools[0].state = "loading".into();
    f.hb("b", h).unwrap();
    assert_eq!(f.place("m").unwrap().node_id, "a");
    // Pins through the registry.
    let d = f
        .reg
        .place(
            &NodePlacementRequest {
                model_id: "m",
                mode: Mode::Pin,
                pin_node_id: Some("a"),
                ..Default::default()
            },
            f.now(),
        )
        .unwrap();
    assert_eq!((d.node_id.as_str(), d.reason), ("a", Reason::Pinned));
}

#[test]
fn unreachable_nodes_go_offline_until_they_heartbeat() {
    let mut f = Fixture::new();
    f.register(reg("a", "i", "m"));
    let t = f.reg.mark_unreachable("a").unwrap();
    assert_eq!((t.from, t.to), (NodeState::Online, NodeState::Offline));
    assert!(f.reg.mark_unreachable("a").is_none());
    assert!(f.place("m").is_err());
    f.hb("a", hb("i", 1, "m")).unwrap();
    assert!(f.place("m").is_ok());
}

#[test]
fn availability_lists_holders_per_model() {
    let mut f = Fixture::new();
    f.register(reg("a", "i", "m"));
    f.register(reg("b", "i", "m"));
    let mut r = reg("c", "i", "solo");
    r.report.models.push(StagedModelRecord {
        model_id: "staged-only".into(),
        sha256: "x".into(),
        bytes: 1,
        state: "Active".into(),
    });
    f.register(r);
    let av = f.reg.availability();
    let ids = |m: &str| -> Vec<String> { av[m].iter().map(|h| h.node_id.clone()).collect() };
    assert_eq!(ids("m"), ["a", "b"]);
    assert_eq!(ids("solo"), ["c"]);
    assert!(av["m"].iter().all(|h| h.served && h.ready));
    let only = &av["staged-only"][0];
    assert!(!only.served && !only.ready);
    assert_eq!(only.state, NodeState::Online);
}

#[test]
fn long_offline_nodes_are_forgotten() {
    let mut f = Fixture::new();
    f.register(reg("a", "i", "m"));
    f.clock.advance(TIMEOUT + 1);
    f.sweep();
    f.reg.take_changes();
    f.clock.advance(OFFLINE_RETENTION_MS);
    f.sweep();
    assert!(f.reg.get("a").is_none());
    assert_eq!(f.reg.take_changes().remove, vec!["a".to_string()]);
}

/// Random operations keep the counts and the model index consistent with
/// the nodes themselves.
#[test]
fn random_operations_keep_the_books_straight() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut f = Fixture::new();
    let mut seq: HashMap<String, u64> = HashMap::new();
    let models = ["m1", "m2", "m3"];
    for step in 0..5000 {
        let node = format!("n{}", rng.random_range(0..20));
        let model = models[rng.random_range(0..3)];
        let inst = format!("i{}", rng.random_range(0..2));
        match rng.random_range(0..10) {
            0..=1 => {
                f.register(reg(&node, &inst, model));
                seq.insert(node.clone(), 0);
            }
            2..=6 => {
                let s = seq.entry(node.clone()).or_default();
                *s += rng.random_range(0..3);
                let mut h = hb(&inst, *s, model);
                h.report.draining = rng.random_bool(0.1);
                let _ = f.hb(&node, h);
            }
            7 => {
                let _ = f.reg.deregister(&node, None);
            }
            8 => {
                f.clock.advance(rng.random_range(0..TIMEOUT));
            }
            _ => {
                f.sweep();
            }
        }
        // Books: counts per state equal what the nodes say.
        let mut counts = [0usize; 4];
        for e in f.reg.nodes() {
            counts[e.state.index()] += 1;
        }
        for s in NodeState::ALL {
            assert_eq!(f.reg.counts().get(s), counts[s.index()], "step {step}");
        }
        // Index: each model lists exactly the live slots serving it, once.
        for m in models {
            let mut indexed: Vec<String> = f
                .reg
                .by_model
                .get(m)
                .map(|idx| {
                    assert_eq!(idx.live, idx.rows.iter().flatten().count());
                    idx.rows
                        .iter()
                        .flatten()
                        .map(|r| {
                            let e = f.reg.slots[r.slot as usize].as_ref().unwrap();
                            assert_eq!(&*r.node, e.record.node_id);
                            assert_eq!(e.record.pools[r.pool_index as usize].model_id, m);
                            assert!(e
                                .record
                                .pools
                                .iter()
                                .any(|p| p.model_id == m && *p.pool_id == *r.pool));
                            e.record.node_id.clone()
                        })
                        .collect()
                })
                .unwrap_or_default();
            let pools_serving: usize = f
                .reg
                .nodes()
                .iter()
                .map(|e| e.record.pools.iter().filter(|p| p.model_id == m).count())
                .sum();
            assert_eq!(indexed.len(), pools_serving, "step {step} model {m}");
            indexed.sort();
            indexed.dedup();
            let mut actual: Vec<String> = f
                .reg
                .nodes()
                .iter()
                .filter(|e| e.record.pools.iter().any(|p| p.model_id == m))
                .map(|e| e.record.node_id.clone())
                .collect();
            actual.sort();
            assert_eq!(indexed, actual, "step {step} model {m}");
        }
        // Nothing online past its timeout after a sweep.
        let now = f.now();
        f.reg.sweep(now);
        for e in f.reg.nodes() {
            if e.state != NodeState::Offline {
                assert!(e.silent_for_ms(now) <= TIMEOUT);
            }
        }
    }
}

/// `cargo test --lib placement_among_many_nodes -- --ignored --nocapture`
/// prints the time to place one task among 100, 1,000 and 10,000 nodes that
/// all serve the model (the worst case: every node is a candidate).
#[test]
#[ignore = "benchmark; run with --ignored --nocapture"]
fn placement_among_many_nodes() {
    use std::time::Instant;
    for n in [100usize, 1_000, 10_000] {
        let clock = ManualClock::default();
        let mut reg = NodeRegistry::new(30_000);
        for i in 0..n {
            let mut r = Registration {
                node_id: format!("node-{i:05}"),
                instance_id: "i".into(),
                address: format!("http://10.0.{}.{}:8080", i / 256, i % 256),
                version: "0.1.0".into(),
                report: report(vec![pool("default", "m", (i % 4) as u64)]),
            };
            r.report.pools[0].vram_free_bytes = (i as u64 * 7919) % 80_000_000_000;
            reg.register(r, clock.now());
            // Other models too, which placement must not visit.
            let mut r2 = reg_other(i);
            r2.report.pools[0].slots_busy = 1;
            reg.register(r2, clock.now());
        }
        let avoid = vec!["node-00001".to_string()];
        let plain = NodePlacementRequest {
            model_id: "m",
            ctx_needed: 512,
            ..Default::default()
        };
        let constrained = NodePlacementRequest {
            avoid: &avoid,
            session: Some(("node-00042", "default")),
            ..plain
        };
        let now = clock.now();
        let iters = (200_000 / n).max(20);
        {
            let t = Instant::now();
            let mut sum = 0i64;
            for _ in 0..20 {
                sum += reg
                    .candidates("m", now)
                    .map(|c| c.free_slots + c.available as i64)
                    .sum::<i64>();
            }
            std::hint::black_box(sum);
            println!(
                "candidate scan alone among {n:>6} nodes: {:>7.1} us",
                t.elapsed().as_secs_f64() * 1e6 / 20.0
            );
        }
        for (label, req) in [("auto", plain), ("avoid+session", constrained)] {
            // Warm up, then time.
            for _ in 0..5 {
                std::hint::black_box(reg.place(&req, now).unwrap());
            }
            let mut samples = Vec::with_capacity(iters);
            for _ in 0..iters {
                let t = Instant::now();
                std::hint::black_box(reg.place(&req, now).unwrap());
                samples.push(t.elapsed());
            }
            samples.sort();
            let median = samples[samples.len() / 2];
            let p99 = samples[samples.len() * 99 / 100];
            println!(
                "placement among {n:>6} nodes ({} registered), {label:<13}: median {:>7.1} us, p99 {:>7.1} us",
                reg.len(),
                median.as_secs_f64() * 1e6,
                p99.as_secs_f64() * 1e6
            );
            if n == 10_000 {
                assert!(median.as_micros() < 1000, "placement took {median:?}");
            }
        }
    }
}

fn reg_other(i: usize) -> Registration {
    Registration {
        node_id: format!("other-{i:05}"),
        instance_id: "i".into(),
        address: format!("http://10.1.{}.{}:8080", i / 256, i % 256),
        version: "0.1.0".into(),
        report: report(vec![pool("default", "other-model", 0)]),
    }
}
