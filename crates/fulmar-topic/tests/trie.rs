//! Behaviour of the subscription trie.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on bad fixtures

use fulmar_topic::{
    Match, Random, RoundRobin, ShareStrategy, Sticky, SubscriptionFilter, SubscriptionTrie,
    TopicName, group_by_key,
};

fn sub(s: &str) -> SubscriptionFilter {
    s.parse().unwrap()
}

fn topic(s: &str) -> TopicName {
    s.parse().unwrap()
}

/// The (key, options) pairs matching `t`, sorted.
fn hits<S: ShareStrategy>(trie: &SubscriptionTrie<u32, u32, S>, t: &str) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    trie.matches(&topic(t), |m| out.push((*m.key, *m.options)));
    out.sort_unstable();
    out
}

// MQTT-3.3.2-3 MQTT-4.7.2-1
#[test]
fn matches_exact_plus_hash_and_respects_dollar() {
    let mut t = SubscriptionTrie::<u32, u32>::new();
    t.subscribe(&sub("sport/tennis/player1"), 1, 10);
    t.subscribe(&sub("sport/tennis/+"), 2, 20);
    t.subscribe(&sub("sport/#"), 3, 30);
    t.subscribe(&sub("#"), 4, 40);
    t.subscribe(&sub("+/tennis/#"), 5, 50);
    t.subscribe(&sub("$SYS/#"), 6, 60);
    t.subscribe(&sub("+/monitor/Clients"), 7, 70);
    t.subscribe(&sub("sport/+"), 8, 80);
    assert_eq!(t.len(), 8);

    assert_eq!(
        hits(&t, "sport/tennis/player1"),
        [(1, 10), (2, 20), (3, 30), (4, 40), (5, 50)]
    );
    assert_eq!(hits(&t, "sport"), [(3, 30), (4, 40)]);
    assert_eq!(hits(&t, "sport/"), [(3, 30), (4, 40), (8, 80)]);
    assert_eq!(
        hits(&t, "sport/tennis"),
        [(3, 30), (4, 40), (5, 50), (8, 80)]
    );
    assert_eq!(hits(&t, "$SYS/monitor/Clients"), [(6, 60)]);
    assert_eq!(hits(&t, "$SYS"), [(6, 60)]);
    assert_eq!(hits(&t, "other"), [(4, 40)]);
}

// MQTT-3.8.4-3
#[test]
fn mqtt_3_8_4_3_same_key_and_filter_replaces_the_subscription() {
    let mut t = SubscriptionTrie::<u32, u32>::new();
    assert_eq!(t.subscribe(&sub("a/+"), 1, 1), None);
    assert_eq!(t.subscribe(&sub("a/+"), 1, 2), Some(1));
    assert_eq!(t.len(), 1);
    assert_eq!(hits(&t, "a/b"), [(1, 2)]);
    assert_eq!(t.get(&sub("a/+"), &1), Some(&2));
    // Another key on the same filter is a second subscription.
    assert_eq!(t.subscribe(&sub("a/+"), 2, 3), None);
    assert_eq!(t.len(), 2);
}

// MQTT-3.10.4-1
#[test]
fn mqtt_3_10_4_1_unsubscribe_compares_filters_character_by_character() {
    let mut t = SubscriptionTrie::<u32, u32>::new();
    t.subscribe(&sub("a/b"), 1, 1);
    t.subscribe(&sub("a/+"), 1, 2);
    // "a/+" matches "a/b" but is not the same filter: removing "a/#" or "a/b/" removes nothing.
    assert_eq!(t.unsubscribe(&sub("a/#"), &1), None);
    assert_eq!(t.unsubscribe(&sub("a/b/"), &1), None);
    assert_eq!(t.unsubscribe(&sub("a/+"), &2), None);
    assert_eq!(t.unsubscribe(&sub("a/+"), &1), Some(2));
    assert_eq!(hits(&t, "a/b"), [(1, 1)]);
    assert_eq!(t.len(), 1);
    assert_eq!(t.unsubscribe(&sub("a/b"), &1), Some(1));
    assert!(t.is_empty());
    assert_eq!(hits(&t, "a/b"), []);
}

#[test]
fn remove_key_drops_every_subscription_of_the_key() {
    let mut t = SubscriptionTrie::<u32, u32>::new();
    for (i, f) in ["a", "a/+", "a/#", "#", "$share/g/a", "$share/h/a"]
        .iter()
        .enumerate()
    {
        t.subscribe(&sub(f), 1, i as u32);
    }
    t.subscribe(&sub("a"), 2, 100);
    t.subscribe(&sub("$share/g/a"), 2, 101);
    assert_eq!(t.len(), 8);
    assert_eq!(t.remove_key(&1), 6);
    assert_eq!(t.remove_key(&1), 0);
    assert_eq!(t.len(), 2);
    assert_eq!(hits(&t, "a"), [(2, 100), (2, 101)]);
    assert_eq!(t.remove_key(&2), 2);
    assert!(t.is_empty());
    assert_eq!(hits(&t, "a"), []);
}

// v5:MQTT-4.8.2-2: a message goes to one member of the group; one that is
// not available (its client is offline) is passed over for the next that is,
// and gets it only when nobody else can.
#[test]
fn shared_group_passes_over_members_that_are_not_available() {
    let mut t = SubscriptionTrie::<u32, u32>::new();
    for k in 1..=3 {
        t.subscribe(&sub("$share/g/jobs"), k, 0);
    }
    let pick = |down: &[u32]| {
        let mut got = Vec::new();
        t.matches_available(
            &topic("jobs"),
            None,
            |k| !down.contains(k),
            |m| got.push(*m.key),
        );
        assert_eq!(got.len(), 1);
        got[0]
    };
    let picked: Vec<u32> = (0..6).map(|_| pick(&[2])).collect();
    assert!(!picked.contains(&2), "{picked:?}");
    assert_eq!(picked.len(), 6);
    // Nobody available: the strategy's choice anyway (its session keeps it).
    let picked: Vec<u32> = (0..3).map(|_| pick(&[1, 2, 3])).collect();
    let mut sorted = picked.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [1, 2, 3]);
    // The same for a group picked by name.
    let SubscriptionFilter::Shared(shared) = sub("$share/g/jobs") else {
        panic!("not shared")
    };
    for _ in 0..3 {
        let (k, _) = t.pick_shared_available(&shared, None, |k| *k == 3).unwrap();
        assert_eq!(*k, 3);
    }
}

// v5:MQTT-4.8.2-2: a router that delivers to shared groups elsewhere (a
// cluster, once across nodes) collects the plain matches only, and does not
// move the groups' rotation on: every member gets its turn.
#[test]
fn plain_matches_leave_the_shared_rotation_alone() {
    let mut t = SubscriptionTrie::<u32, u32>::new();
    t.subscribe(&sub("$share/g/jobs"), 1, 0);
    t.subscribe(&sub("$share/g/jobs"), 2, 0);
    t.subscribe(&sub("jobs"), 9, 0);
    let SubscriptionFilter::Shared(shared) = sub("$share/g/jobs") else {
        panic!("not shared")
    };
    let mut picked = Vec::new();
    for _ in 0..4 {
        let mut plain = Vec::new();
        t.collect_plain_matches(&topic("jobs"), &mut plain);
        assert_eq!(plain.len(), 1);
        assert_eq!((*plain[0].key, plain[0].share_group), (9, None));
        picked.push(*t.pick_shared(&shared, None).unwrap().0);
    }
    picked.sort_unstable();
    assert_eq!(picked, [1, 1, 2, 2]);
}

/// A key that counts how often it is compared.
#[derive(Clone, Debug)]
struct Counted(u32);

impl std::hash::Hash for Counted {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

static COMPARED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl PartialEq for Counted {
    fn eq(&self, other: &Self) -> bool {
        COMPARED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.0 == other.0
    }
}

impl Eq for Counted {}

// v5:MQTT-4.8.2-2: members leave a large shared group (a mass disconnection)
// at a cost per member, not per member times the group's size; the others
// keep getting messages.
#[test]
fn leaving_a_large_shared_group_does_not_scan_it() {
    const N: u32 = 10_000;
    let mut t = SubscriptionTrie::<Counted, u32>::new();
    let SubscriptionFilter::Shared(shared) = sub("$share/g/jobs") else {
        panic!("not shared")
    };
    for k in 0..N {
        t.insert_shared(&shared, Counted(k), k);
    }
    COMPARED.store(0, std::sync::atomic::Ordering::Relaxed);
    for k in (0..N).filter(|k| k % 2 == 1) {
        assert_eq!(t.remove_key(&Counted(k)), 1);
    }
    for k in (0..N).filter(|k| k % 4 == 0) {
        assert_eq!(t.remove_shared(&shared, &Counted(k)), Some(k));
    }
    let compared = COMPARED.load(std::sync::atomic::Ordering::Relaxed);
    assert!(compared < u64::from(N) * 10, "{compared} comparisons");
    // The rest, k % 4 == 2, each get their turn.
    assert_eq!(t.len(), (N / 4) as usize);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..N / 4 {
        let (k, o) = t.pick_shared(&shared, None).unwrap();
        assert_eq!((k.0 % 4, k.0), (2, *o));
        seen.insert(k.0);
    }
    assert_eq!(seen.len(), (N / 4) as usize);
    // And leave it too.
    for k in (0..N).filter(|k| k % 4 == 2) {
        assert_eq!(t.remove_shared(&shared, &Counted(k)), Some(k));
    }
    assert_eq!(t.len(), 0);
}

// MQTT-3.3.2-3 v5:MQTT-4.8.2-2
#[test]
fn shared_group_delivers_to_one_member_round_robin() {
    let mut t = SubscriptionTrie::<u32, u32>::new();
    for k in 1..=3 {
        t.subscribe(&sub("$share/g/sport/+"), k, k * 10);
    }
    t.subscribe(&sub("$share/h/sport/+"), 9, 90);
    t.subscribe(&sub("sport/+"), 1, 11);
    let mut picked = Vec::new();
    for _ in 0..6 {
        let mut shared_g = Vec::new();
        let mut shared_h = 0;
        let mut direct = 0;
        t.matches(&topic("sport/tennis"), |m| match m.share_group {
            Some("g") => shared_g.push(*m.key),
            Some("h") => shared_h += 1,
            Some(other) => panic!("unexpected group {other}"),
            None => direct += 1,
        });
        assert_eq!(shared_g.len(), 1, "one member of g per message");
        assert_eq!((shared_h, direct), (1, 1));
        picked.push(shared_g[0]);
    }
    // Round robin: each member twice, in a rotating order.
    let mut sorted = picked.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, [1, 1, 2, 2, 3, 3]);
    assert_eq!(picked[0..3], picked[3..6]);
    // Shared filters do not match on their `$share/g` prefix.
    assert_eq!(hits(&t, "$share/g/sport/tennis"), []);
}

#[test]
fn shared_members_come_and_go_while_matching() {
    let mut t = SubscriptionTrie::<u32, u32>::new();
    let f = sub("$share/g/x/#");
    t.subscribe(&f, 1, 1);
    t.subscribe(&f, 2, 2);
    // A second SUBSCRIBE of a member replaces its options, it does not add a member.
    assert_eq!(t.subscribe(&f, 2, 22), Some(2));
    assert_eq!(t.len(), 2);
    assert_eq!(t.get(&f, &2), Some(&22));
    for _ in 0..4 {
        let h = hits(&t, "x/y");
        assert_eq!(h.len(), 1);
    }
    assert_eq!(t.unsubscribe(&f, &1), Some(1));
    for _ in 0..3 {
        assert_eq!(hits(&t, "x"), [(2, 22)]);
    }
    t.subscribe(&f, 3, 3);
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.extend(hits(&t, "x/z").into_iter().map(|(k, _)| k));
    }
    seen.sort_unstable();
    assert_eq!(seen, [2, 2, 3, 3]);
    assert_eq!(t.unsubscribe(&f, &2), Some(22));
    assert_eq!(t.unsubscribe(&f, &3), Some(3));
    assert!(t.is_empty());
    assert_eq!(hits(&t, "x"), []);
}

#[test]
fn sticky_and_random_strategies_pick_members() {
    let mut sticky = SubscriptionTrie::<u32, u32, Sticky>::default();
    let mut random = SubscriptionTrie::<u32, u32, Random>::with_strategy(Random);
    for k in 0..8 {
        sticky.subscribe(&sub("$share/g/t"), k, k);
        random.subscribe(&sub("$share/g/t"), k, k);
    }
    let pick = |t: &SubscriptionTrie<u32, u32, Sticky>, p: &[u8]| {
        let mut k = None;
        t.matches_from(&topic("t"), Some(p), |m| k = Some(*m.key));
        k.unwrap()
    };
    let first = pick(&sticky, b"publisher-a");
    for _ in 0..5 {
        assert_eq!(pick(&sticky, b"publisher-a"), first);
    }
    let mut seen = [false; 8];
    for _ in 0..400 {
        random.matches(&topic("t"), |m| seen[*m.key as usize] = true);
    }
    assert!(seen.iter().all(|s| *s), "{seen:?}");
    assert_eq!(random.strategy().choose(&Default::default(), 1, None), 0);
    let _ = RoundRobin;
}

// v5:MQTT-3.3.4-2 v5:MQTT-3.3.4-3 v5:MQTT-3.3.4-4 v3:MQTT-3.3.5-1
#[test]
fn overlapping_subscriptions_group_into_one_delivery_per_key() {
    // Options: (maximum QoS, subscription identifier).
    let mut t = SubscriptionTrie::<&str, (u8, Option<u32>)>::new();
    t.subscribe(&sub("a/+"), "c1", (0, Some(1)));
    t.subscribe(&sub("a/#"), "c1", (2, Some(2)));
    t.subscribe(&sub("#"), "c1", (1, None));
    t.subscribe(&sub("a/b"), "c2", (1, Some(5)));
    t.subscribe(&sub("$share/g/a/b"), "c2", (0, Some(6)));
    let mut found: Vec<Match<'_, &str, (u8, Option<u32>)>> = Vec::new();
    t.collect_matches(&topic("a/b"), &mut found);
    assert_eq!(found.len(), 5);
    let groups: Vec<_> = group_by_key(&mut found).collect();
    assert_eq!(groups.len(), 3);
    let c1 = groups.iter().find(|g| *g[0].key == "c1").unwrap();
    let max_qos = c1.iter().map(|m| m.options.0).max();
    let mut ids: Vec<u32> = c1.iter().filter_map(|m| m.options.1).collect();
    ids.sort_unstable();
    assert_eq!((max_qos, ids), (Some(2), vec![1, 2]));
    // c2's shared copy stays apart from its non-shared one.
    let c2: Vec<_> = groups.iter().filter(|g| *g[0].key == "c2").collect();
    assert_eq!(c2.len(), 2);
    assert!(c2.iter().all(|g| g.len() == 1));
}

#[test]
fn empty_levels_and_deep_topics() {
    let mut t = SubscriptionTrie::<u32, u32>::new();
    t.subscribe(&sub("/"), 1, 1);
    t.subscribe(&sub("+/+"), 2, 2);
    t.subscribe(&sub("/#"), 3, 3);
    assert_eq!(hits(&t, "/"), [(1, 1), (2, 2), (3, 3)]);
    assert_eq!(hits(&t, "/finance"), [(2, 2), (3, 3)]);
    // A 65 535-byte topic of empty levels matches without recursion.
    let deep = "/".repeat(65_535);
    let deep_filter = format!("{}#", "/".repeat(65_534));
    t.subscribe(&sub(&deep_filter), 4, 4);
    assert_eq!(hits(&t, &deep), [(3, 3), (4, 4)]);
    assert_eq!(t.unsubscribe(&sub(&deep_filter), &4), Some(4));
    assert_eq!(hits(&t, &deep), [(3, 3)]);
}

#[test]
fn many_subscribers_on_one_filter() {
    let mut t = SubscriptionTrie::<u32, u32>::new();
    for k in 0..1000 {
        t.subscribe(&sub("broadcast/#"), k, k);
    }
    assert_eq!(hits(&t, "broadcast/all").len(), 1000);
    for k in (0..1000).step_by(2) {
        assert_eq!(t.unsubscribe(&sub("broadcast/#"), &k), Some(k));
    }
    let h = hits(&t, "broadcast");
    assert_eq!(h.len(), 500);
    assert!(h.iter().all(|(k, _)| k % 2 == 1));
    for k in (1..1000).step_by(2) {
        assert_eq!(t.remove_key(&k), 1);
    }
    assert!(t.is_empty());
}

#[test]
fn pick_shared_chooses_one_member_of_that_group_only() {
    // MQTT-4.8.2-3 (one member of a group per message), v5 shared subscriptions.
    let mut t: SubscriptionTrie<u32, u32> = SubscriptionTrie::new();
    for k in 1..=3 {
        t.subscribe(&sub("$share/g/a/+"), k, k * 10);
    }
    // Same group name on another filter, and another group on the same filter: not picked.
    t.subscribe(&sub("$share/g/a/#"), 7, 70);
    t.subscribe(&sub("$share/h/a/+"), 8, 80);
    t.subscribe(&sub("a/+"), 9, 90);
    let group = sub("$share/g/a/+");
    let SubscriptionFilter::Shared(shared) = &group else {
        panic!("a shared filter")
    };
    let mut seen: Vec<u32> = (0..6)
        .map(|_| *t.pick_shared(shared, None).unwrap().0)
        .collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        [1, 1, 2, 2, 3, 3],
        "round robin over the members of g on a/+"
    );
    let missing: fulmar_topic::SharedFilter = "$share/zz/a/+"
        .parse::<SubscriptionFilter>()
        .map(|f| match f {
            SubscriptionFilter::Shared(s) => s,
            SubscriptionFilter::Plain(_) => panic!("a shared filter"),
        })
        .unwrap();
    assert!(t.pick_shared(&missing, None).is_none());
    t.unsubscribe(&group, &1);
    t.unsubscribe(&group, &2);
    t.unsubscribe(&group, &3);
    assert!(t.pick_shared(shared, None).is_none(), "the group ended");
}
