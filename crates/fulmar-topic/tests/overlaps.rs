//! `TopicFilter::overlaps` against brute force: true exactly when some
//! valid topic name matches both filters (found by a review: `+` and `/#`
//! were said to overlap, on the topic "" that is no topic name).
#![allow(clippy::unwrap_used)]
use fulmar_topic::{TopicFilter, TopicName};

fn filters(max_levels: usize) -> Vec<String> {
    let lv = ["a", "b", "", "$a", "+", "#"];
    let mut out: Vec<String> = Vec::new();
    let mut cur: Vec<Vec<&str>> = vec![vec![]];
    for _ in 0..max_levels {
        let mut next = Vec::new();
        for c in &cur {
            for l in lv {
                let mut n = c.clone();
                n.push(l);
                next.push(n);
            }
        }
        for n in &next {
            out.push(n.join("/"));
        }
        cur = next;
    }
    out.into_iter()
        .filter(|s| s.parse::<TopicFilter>().is_ok())
        .collect()
}

fn names(max_levels: usize) -> Vec<TopicName> {
    // "c" is a fresh level no filter names: the witness for `+`/`#`.
    let lv = ["a", "b", "", "$a", "c"];
    let mut out = Vec::new();
    let mut cur: Vec<Vec<&str>> = vec![vec![]];
    for _ in 0..max_levels {
        let mut next = Vec::new();
        for c in &cur {
            for l in lv {
                let mut n = c.clone();
                n.push(l);
                next.push(n);
            }
        }
        for n in &next {
            if let Ok(t) = n.join("/").parse::<TopicName>() {
                out.push(t);
            }
        }
        cur = next;
    }
    out
}

// v5:MQTT-4.7.3-1 v5:MQTT-4.7.2-1
#[test]
fn overlaps_agrees_with_brute_force() {
    let fs: Vec<TopicFilter> = filters(3).iter().map(|s| s.parse().unwrap()).collect();
    let ns = names(4);
    let mut bad = Vec::new();
    for a in &fs {
        for b in &fs {
            let brute = ns.iter().any(|n| a.matches(n) && b.matches(n));
            if brute != a.overlaps(b) {
                bad.push((a.as_str().to_owned(), b.as_str().to_owned(), brute));
            }
            assert_eq!(a.overlaps(b), b.overlaps(a), "symmetry {a:?} {b:?}");
        }
    }
    assert!(
        bad.is_empty(),
        "{} mismatches, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(10)]
    );
    println!(
        "checked {} x {} filters over {} names",
        fs.len(),
        fs.len(),
        ns.len()
    );
}
