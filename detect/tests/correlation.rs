//! Sigma correlation rules: parsing (located errors for what is refused)
//! and the window semantics of docs/correlation.md, one case each.

use dac_detect::{
    load_documents_within, Budget, CorrelationLimits, CorrelationRule, CorrelationType, Correlator, Event,
    FieldMapping, Hit, Rule, RuleName,
};
use serde_json::json;

const BASE: &str = "title: Recon\nid: r-1\nname: recon\nlogsource: {product: linux, category: process_creation}\n\
                    detection:\n  sel:\n    Image|endswith: /whoami\n  condition: sel\n";

fn load(text: &str) -> Result<Vec<Rule>, String> {
    load_documents_within("c.yml", text, &FieldMapping::default(), &Budget::default()).map_err(|e| e.to_string())
}

fn correlation(body: &str) -> String {
    format!("title: Many\nid: c-1\ncorrelation:\n{body}")
}

/// A correlator over `rules` (base rules first); correlations are the
/// rules that have one.
fn correlator(rules: &[Rule], limits: CorrelationLimits) -> Correlator {
    correlator_keyed(rules, limits, |_, rule| rule.metadata().uuid.clone())
}

/// [`correlator`] with each correlation's key (what its saved windows are
/// restored by) from `key(index, rule)`.
fn correlator_keyed(rules: &[Rule], limits: CorrelationLimits, key: impl Fn(usize, &Rule) -> String) -> Correlator {
    let names: Vec<RuleName<'_>> =
        rules.iter().map(|r| RuleName { uuid: &r.metadata().uuid, name: r.metadata().sigma_name.as_deref() }).collect();
    let correlations = rules
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            r.correlation().map(|c| CorrelationRule { rule: i, key: key(i, r), correlation: c.clone() })
        })
        .collect();
    let (correlator, refused) = Correlator::new(&names, correlations, limits);
    assert!(refused.is_empty(), "{refused:?}");
    correlator
}

fn event(ts: i64, host: &str, user: &str) -> Event {
    Event::from_json(json!({"_id": format!("e{ts}"), "ts": ts, "hostname": host, "user": user, "bytes": ts % 7}))
        .unwrap()
}

/// Feeds (ts, host, user, matched rules) and returns every hit.
fn run(c: &mut Correlator, events: &[(i64, &str, &str, &[usize])]) -> Vec<Hit> {
    let mut hits = Vec::new();
    for (ts, host, user, matched) in events {
        c.observe(&event(*ts, host, user), Some(*ts), matched, &mut hits);
    }
    hits
}

#[test]
fn every_type_parses_with_its_fields_mapped() {
    let rules = load(&format!(
        "{}---\n{BASE}",
        correlation(
            "  type: value_count\n  rules: [recon]\n  group-by: [Computer, User]\n  timespan: 5m\n  condition:\n    \
             field: Image\n    gte: 3\n    lt: 10\n"
        )
    ))
    .unwrap();
    assert_eq!(rules.len(), 2);
    let c = rules[0].correlation().unwrap();
    assert_eq!(c.kind, CorrelationType::ValueCount);
    assert_eq!(c.timespan_ms, 300_000);
    assert_eq!(c.rules, [("recon".to_string(), 5)]);
    // Sigma's field names, mapped onto the exec event; `Computer` is not
    // in the mapping and passes through.
    assert_eq!(c.group_by[1].default.path.as_deref(), Some("user"));
    assert_eq!(c.group_by[0].default.path.as_deref(), Some("Computer"));
    assert_eq!(c.condition.fields[0].path.as_deref(), Some("path"));
    assert_eq!(c.condition.describe(), "gte 3 and lt 10");
    assert!(!c.generate);
    assert_eq!(rules[1].metadata().sigma_name.as_deref(), Some("recon"));
    for kind in ["event_count", "temporal", "temporal_ordered"] {
        let extra = if kind == "event_count" { "  condition: {gte: 2}\n" } else { "" };
        load(&correlation(&format!("  type: {kind}\n  rules: [a, b]\n  timespan: 1h\n{extra}"))).unwrap();
    }
    for kind in ["value_sum", "value_avg", "value_median"] {
        load(&correlation(&format!(
            "  type: {kind}\n  rules: [a]\n  timespan: 1h\n  condition: {{field: bytes, gt: 5}}\n"
        )))
        .unwrap();
    }
    let p = load(&correlation(
        "  type: value_percentile\n  rules: [a]\n  timespan: 1d\n  condition: {field: bytes, percentile: 95, gt: 5}\n",
    ))
    .unwrap();
    assert_eq!(p[0].correlation().unwrap().condition.percentile, Some(95.0));
}

#[test]
fn what_is_refused_is_located() {
    let cases = [
        ("  type: event_count\n  rules: [a]\n  timespan: 5m\n", "c.yml:4: correlation.condition: missing"),
        ("  type: sum\n  rules: [a]\n", "c.yml:4: correlation.type: unknown type 'sum'"),
        ("  type: event_count\n  rules: [a]\n  timespan: 5x\n  condition: {gte: 1}\n", "c.yml:6: correlation.timespan"),
        (
            "  type: value_count\n  rules: [a]\n  timespan: 5m\n  condition: {gte: 1}\n",
            "correlation.condition.field: missing",
        ),
        ("  type: event_count\n  rules: [a, a]\n  timespan: 5m\n  condition: {gte: 1}\n", "'a' is listed twice"),
        ("  type: temporal\n  rules: [a]\n  timespan: 5m\n  condition: a and b\n", "unsupported: a boolean condition"),
        (
            "  type: temporal\n  rules: [a]\n  timespan: 5m\n  aliases: {ip: {b: src}}\n",
            "c.yml:7: correlation.aliases.ip.b: not one of the correlation's `rules`",
        ),
        ("  type: event_count\n  rules: [a]\n  timespan: 5m\n  condition: {gte: x}\n", "expected a number"),
        ("  type: temporal_ordered\n  rules: [a, b]\n  timespan: 5m\n  condition: {gte: 1}\n", "in order"),
        ("  kind: event_count\n", "unknown key `kind`"),
    ];
    for (body, expected) in cases {
        let err = load(&correlation(body)).unwrap_err();
        assert!(err.contains(expected), "{body}: {err}");
    }
    let err = load(&format!(
        "{}logsource: {{product: linux}}\n",
        correlation("  type: temporal\n  rules: [a]\n  timespan: 5m\n")
    ))
    .unwrap_err();
    assert!(err.contains("has no `detection` or `logsource`"), "{err}");
}

#[test]
fn event_count_fires_once_per_breach_in_a_sliding_window() {
    let rules = load(&format!(
        "{}---\n{BASE}",
        correlation(
            "  type: event_count\n  rules: [recon]\n  group-by: [User]\n  timespan: 10s\n  condition: {gte: 3}\n"
        )
    ))
    .unwrap();
    let mut c = correlator(&rules, CorrelationLimits::default());
    assert!(!c.generates(1), "a base rule of a correlation does not alert on its own by default");
    assert!(c.generates(0));
    let hits = run(
        &mut c,
        &[
            (1_000, "h", "ann", &[1]),
            (2_000, "h", "bob", &[1]),
            (11_500, "h", "ann", &[1]), // ann's first is out of [1.5s, 11.5s]
            (12_000, "h", "ann", &[1]), // ann: 3 in [2s, 12s]? no: 11.5, 12 and… 1s is gone
            (12_000, "h", "ann", &[1]),
            (13_000, "h", "ann", &[1]), // after the breach the window starts again
            (14_000, "h", "ann", &[1]),
            (22_000, "h", "ann", &[1]), // [12s, 22s] holds 13, 14, 22 — but 12 was taken
            (22_000, "h", "bob", &[0]), // not a referenced rule
        ],
    );
    let fired: Vec<(i64, i64, f64, String)> =
        hits.iter().map(|h| (h.window_start, h.window_end, h.value, h.group[0].1.clone().unwrap())).collect();
    assert_eq!(fired, [(11_500, 12_000, 3.0, "ann".into()), (13_000, 22_000, 3.0, "ann".into())]);
    assert_eq!(
        hits[0].events.iter().map(|e| e.id.as_deref().unwrap()).collect::<Vec<_>>(),
        ["e11500", "e12000", "e12000"]
    );
    assert_eq!(hits[0].describe(), "event_count 3 (gte 3) for User=ann");
    let stats = c.stats(0).unwrap();
    assert_eq!((stats.matches, stats.fired), (8, 2));
}

#[test]
fn the_window_includes_both_ends() {
    let rules = load(&format!(
        "{}---\n{BASE}",
        correlation("  type: event_count\n  rules: [recon]\n  timespan: 10s\n  condition: {gte: 2}\n")
    ))
    .unwrap();
    let mut c = correlator(&rules, CorrelationLimits::default());
    assert_eq!(run(&mut c, &[(0, "h", "a", &[1]), (10_000, "h", "a", &[1])]).len(), 1);
    let mut c = correlator(&rules, CorrelationLimits::default());
    assert_eq!(run(&mut c, &[(0, "h", "a", &[1]), (10_001, "h", "a", &[1])]).len(), 0);
}

#[test]
fn value_count_counts_distinct_values() {
    let rules = load(&format!(
        "{}---\n{BASE}",
        correlation(
            "  type: value_count\n  rules: [recon]\n  group-by: [hostname]\n  timespan: 1m\n  condition: {field: \
             User, gte: 3}\n"
        )
    ))
    .unwrap();
    let mut c = correlator(&rules, CorrelationLimits::default());
    let hits = run(
        &mut c,
        &[(1, "h", "a", &[1]), (2, "h", "a", &[1]), (3, "h", "b", &[1]), (4, "g", "c", &[1]), (5, "h", "c", &[1])],
    );
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].values, ["a", "b", "c"]);
    assert_eq!((hits[0].window_start, hits[0].window_end, hits[0].events_total), (1, 5, 4));
}

#[test]
fn temporal_needs_every_rule_and_ordered_their_order() {
    let second = "title: Chmod\nid: r-2\nname: chmod\nlogsource: {product: linux, category: process_creation}\n\
                  detection:\n  sel:\n    Image|endswith: /chmod\n  condition: sel\n";
    for (kind, expected) in [("temporal", vec![2_000]), ("temporal_ordered", vec![3_000])] {
        let rules = load(&format!(
            "{}---\n{BASE}---\n{second}",
            correlation(&format!("  type: {kind}\n  rules: [recon, chmod]\n  group-by: [hostname]\n  timespan: 1m\n"))
        ))
        .unwrap();
        let mut c = correlator(&rules, CorrelationLimits::default());
        // chmod then recon (temporal fires), recon again, chmod (ordered fires).
        let hits = run(&mut c, &[(1_000, "h", "u", &[2]), (2_000, "h", "u", &[1]), (3_000, "h", "u", &[2])]);
        assert_eq!(hits.iter().map(|h| h.window_end).collect::<Vec<_>>(), expected, "{kind}");
    }
}

#[test]
fn late_matches_join_by_their_time_or_are_counted() {
    let rules = load(&format!(
        "{}---\n{BASE}",
        correlation("  type: event_count\n  rules: [recon]\n  timespan: 10s\n  condition: {gte: 2}\n")
    ))
    .unwrap();
    let limits = CorrelationLimits { lateness_ms: 5_000, ..CorrelationLimits::default() };
    let mut c = correlator(&rules, limits);
    // 30s, then 24s (6s late: refused), then 26s (4s late: its window
    // [16s, 26s] holds nothing else at or before it), then 27s fires with
    // 26s — the window ending at 27s, not counting 30s.
    let hits = run(
        &mut c,
        &[(30_000, "h", "u", &[1]), (24_000, "h", "u", &[1]), (26_000, "h", "u", &[1]), (27_000, "h", "u", &[1])],
    );
    assert_eq!(hits.iter().map(|h| (h.window_start, h.window_end)).collect::<Vec<_>>(), [(26_000, 27_000)]);
    assert_eq!(c.stats(0).unwrap().late, 1);
}

#[test]
fn chained_correlations_and_generate() {
    let text = format!(
        "title: Burst then chmod\nid: top\ncorrelation:\n  type: temporal_ordered\n  rules: [burst, chmod]\n  \
         group-by: [User]\n  timespan: 1m\n---\ntitle: Burst\nid: mid\nname: burst\ncorrelation:\n  type: \
         event_count\n  rules: [recon]\n  group-by: [User]\n  timespan: 1m\n  condition: {{gte: 2}}\n  generate: \
         true\n---\n{BASE}---\ntitle: Chmod\nid: r-2\nname: chmod\nlogsource: {{product: linux, category: \
         process_creation}}\ndetection:\n  sel:\n    Image|endswith: /chmod\n  condition: sel\n"
    );
    let rules = load(&text).unwrap();
    let mut c = correlator(&rules, CorrelationLimits::default());
    assert!(c.generates(2), "burst says generate: true for recon");
    assert!(!c.generates(1), "top does not for burst");
    assert!(!c.generates(3));
    let hits = run(&mut c, &[(1_000, "h", "u", &[2]), (2_000, "h", "u", &[2]), (3_000, "h", "u", &[3])]);
    assert_eq!(hits.iter().map(|h| (h.rule, h.window_end)).collect::<Vec<_>>(), [(1, 2_000), (0, 3_000)]);
    assert_eq!(hits[1].group, [("User".to_string(), Some("u".to_string()))]);
}

#[test]
fn state_is_bounded_expired_and_counted() {
    let rules = load(&format!(
        "{}---\n{BASE}",
        correlation(
            "  type: event_count\n  rules: [recon]\n  group-by: [User]\n  timespan: 10s\n  condition: {gte: 5}\n"
        )
    ))
    .unwrap();
    let limits = CorrelationLimits { max_groups: 2, lateness_ms: 0, ..CorrelationLimits::default() };
    let mut c = correlator(&rules, limits);
    run(&mut c, &[(1_000, "h", "a", &[1]), (1_000, "h", "b", &[1]), (1_000, "h", "c", &[1])]);
    let stats = c.stats(0).unwrap().clone();
    assert_eq!((stats.refused, stats.groups), (1, 2));
    // 11s later the first two are out of reach and dropped: room again.
    run(&mut c, &[(12_001, "h", "c", &[1])]);
    let stats = c.stats(0).unwrap();
    assert_eq!((stats.refused, stats.groups), (1, 1));
    assert!(stats.bytes > 0);
    // An event without a time is counted, not correlated.
    let mut hits = Vec::new();
    c.observe(&event(1, "h", "a"), None, &[1], &mut hits);
    assert_eq!(c.stats(0).unwrap().untimed, 1);
}

#[test]
fn a_rule_sets_quota_bounds_all_its_correlations_together() {
    let text = format!(
        "title: By user\nid: c-1\ncorrelation:\n  type: event_count\n  rules: [recon]\n  group-by: [User]\n  \
         timespan: 1h\n  condition: {{gte: 9}}\n---\ntitle: By host\nid: c-2\ncorrelation:\n  type: event_count\n  \
         rules: [recon]\n  group-by: [hostname]\n  timespan: 1h\n  condition: {{gte: 9}}\n---\n{BASE}"
    );
    let rules = load(&text).unwrap();
    // Each correlation alone could hold 10; together only 3 keys.
    let limits = CorrelationLimits { max_groups: 10, total_groups: 3, ..CorrelationLimits::default() };
    let mut c = correlator(&rules, limits);
    run(&mut c, &[(1_000, "h1", "a", &[2]), (2_000, "h2", "b", &[2]), (3_000, "h1", "c", &[2])]);
    let (by_user, by_host) = (c.stats(0).unwrap().clone(), c.stats(1).unwrap().clone());
    // By user took a (1), by host h1 (2), by user b (3); by host h2 and by
    // user c are refused and counted; a known group still takes matches.
    assert_eq!((by_user.groups + by_host.groups, by_user.refused + by_host.refused), (3, 2), "{by_user:?} {by_host:?}");
    assert_eq!(by_host.matches, 2, "h1 twice");
    // Bytes too.
    let limits = CorrelationLimits { total_bytes: 1, ..CorrelationLimits::default() };
    let mut c = correlator(&rules, limits);
    run(&mut c, &[(1_000, "h1", "a", &[2])]);
    assert_eq!((c.stats(0).unwrap().refused, c.stats(1).unwrap().refused), (1, 1));
}

#[test]
fn unresolved_references_are_located() {
    let rules =
        load(&correlation("  type: event_count\n  rules:\n    - nothing\n  timespan: 5m\n  condition: {gte: 1}\n"))
            .unwrap();
    let names = [RuleName { uuid: "c-1", name: None }];
    let c = rules[0].correlation().unwrap().clone();
    let (_, refused) =
        Correlator::new(&names, vec![CorrelationRule { rule: 0, key: "k".into(), correlation: c }], Default::default());
    assert_eq!(refused[0].line, 6);
    assert!(refused[0].message.contains("no rule loaded has the id or Sigma name 'nothing'"), "{refused:?}");
}

/// Saved at any point and restored into a new correlator (as after a
/// crash), the windows go on exactly: the hits after the save point are
/// the uninterrupted run's, for every type, chaining and late matches.
#[test]
fn saved_windows_restored_anywhere_fire_exactly_as_an_uninterrupted_run() {
    let second = "title: Chmod\nid: r-2\nname: chmod\nlogsource: {product: linux, category: process_creation}\n\
                  detection:\n  sel:\n    Image|endswith: /chmod\n  condition: sel\n";
    let text = format!(
        "title: Burst\nid: c-1\nname: burst\ncorrelation:\n  type: event_count\n  rules: [recon]\n  group-by: \
         [hostname]\n  timespan: 10s\n  condition: {{gte: 3}}\n  generate: true\n---\ntitle: Users\nid: c-2\n\
         correlation:\n  type: value_count\n  rules: [recon, chmod]\n  group-by: [hostname]\n  timespan: 20s\n  \
         condition: {{field: user, gte: 3}}\n---\ntitle: Then\nid: c-3\ncorrelation:\n  type: temporal_ordered\n  \
         rules: [burst, chmod]\n  group-by: [hostname]\n  timespan: 30s\n---\ntitle: Sum\nid: c-4\ncorrelation:\n  \
         type: value_sum\n  rules: [chmod]\n  group-by: [user]\n  timespan: 15s\n  condition: {{field: bytes, gt: \
         12}}\n---\n{BASE}---\n{second}"
    );
    let rules = load(&text).unwrap();
    let limits = CorrelationLimits { lateness_ms: 3_000, ..CorrelationLimits::default() };
    // A deterministic stream: 3 hosts, 4 users, times mostly rising with
    // some matches up to 5 s late (some within the lateness, some not).
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let hosts = ["a", "b", "c"];
    let users = ["u1", "u2", "u3", "u4"];
    let mut ts = 0i64;
    let stream: Vec<(i64, &str, &str, Vec<usize>)> = (0..3_000)
        .map(|_| {
            ts += next(1_500) as i64;
            let at = ts - if next(10) == 0 { next(5_000) as i64 } else { 0 };
            let matched = match next(3) {
                0 => vec![4],
                1 => vec![5],
                _ => vec![4, 5],
            };
            (at, hosts[next(3) as usize], users[next(4) as usize], matched)
        })
        .collect();
    let feed = |c: &mut Correlator, events: &[(i64, &str, &str, Vec<usize>)]| {
        let mut hits = Vec::new();
        for (ts, host, user, matched) in events {
            c.observe(&event(*ts, host, user), Some(*ts), matched, &mut hits);
        }
        hits
    };
    let mut whole = correlator(&rules, limits.clone());
    let expected = feed(&mut whole, &stream);
    assert!(expected.len() > 100, "{}", expected.len());
    for kind in [CorrelationType::EventCount, CorrelationType::ValueCount, CorrelationType::TemporalOrdered] {
        assert!(expected.iter().any(|h| h.kind == kind), "{kind} never fired");
    }
    for cut in [1, 17, 500, 1_234, 2_999] {
        let mut first = correlator(&rules, limits.clone());
        let mut hits = feed(&mut first, &stream[..cut]);
        // Through a text format, as a store would keep it.
        let saved = serde_json::to_string(&first.saved()).unwrap();
        drop(first);
        let mut second = correlator(&rules, limits.clone());
        let restored = second.restore(serde_json::from_str(&saved).unwrap());
        assert_eq!((restored.restored, restored.dropped.len(), restored.fresh.len()), (4, 0, 0), "{restored:?}");
        hits.extend(feed(&mut second, &stream[cut..]));
        assert_eq!(hits, expected, "restored after {cut} events");
        assert_eq!(second.stats(0).map(|s| (s.groups, s.bytes)), whole.stats(0).map(|s| (s.groups, s.bytes)));
    }
    // Windows of a correlation whose key changed (a new version) are not
    // taken back: it starts empty, and the old key is reported.
    let saved = serde_json::to_string(&whole.saved()).unwrap();
    let mut changed =
        correlator_keyed(&rules, limits, |i, r| if i == 0 { "c-1 v2".to_owned() } else { r.metadata().uuid.clone() });
    let restored = changed.restore(serde_json::from_str(&saved).unwrap());
    assert_eq!((restored.restored, restored.dropped, restored.fresh), (3, vec!["c-1".to_owned()], vec![0]));
    assert_eq!(changed.stats(0).unwrap().groups, 0);
}
